package opscli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/visible"
	"github.com/herald-push/herald/notification"
)

// deliveriesUsage is the usage of `herald deliveries`.
const deliveriesUsage = `usage: herald deliveries <command>
  list [-status S] [-code C] [-recipient U] [-notification ID] [-since 1h] [-limit 50] [-cursor C]
                                 deliveries, newest first (failed ones unless a filter is given)
  retry (-all | ID... | [-code C] [-recipient U] [-notification ID] [-since 1h])
                                 make failed deliveries pending again
  timeline NOTIFICATION-ID       every delivery of a notification and every attempt
  cancel NOTIFICATION-ID         cancel a notification's pushes not yet made`

// Deliveries is herald deliveries list | retry | timeline | cancel.
func Deliveries(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, deliveriesUsage)
		return cli.UsageError{Msg: "no deliveries command"}
	}
	switch args[0] {
	case "list":
		return listDeliveries(ctx, args[1:], stdout, stderr)
	case "retry":
		return retryDeliveries(ctx, args[1:], stdout, stderr)
	case "timeline":
		id, err := notificationArg("deliveries timeline", args[1:], stderr)
		if err != nil {
			return err
		}
		h, pool, err := operator(ctx, stderr)
		if err != nil {
			return err
		}
		defer pool.Close()
		tl, err := h.Timeline(ctx, id)
		if err != nil {
			return err
		}
		return writeTimeline(stdout, tl)
	case "cancel":
		id, err := notificationArg("deliveries cancel", args[1:], stderr)
		if err != nil {
			return err
		}
		h, pool, err := operator(ctx, stderr)
		if err != nil {
			return err
		}
		defer pool.Close()
		n, err := h.CancelNotification(ctx, id)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%d deliveries cancelled; notification %s gets no more pushes\n", n, id)
		return nil
	}
	fmt.Fprintln(stderr, deliveriesUsage)
	return cli.UsageError{Msg: "unknown deliveries command " + args[0]}
}

// queryFlags declares the filters of a DeliveryQuery on fs; call the
// returned function after parsing to build it.
func queryFlags(fs *flag.FlagSet) func() (herald.DeliveryQuery, error) {
	code := fs.String("code", "", "FCM error code (UNREGISTERED, UNAVAILABLE, INVALID_ARGUMENT, CANCELLED...)")
	recipient := fs.String("recipient", "", "the notification's recipient (user id)")
	notificationID := fs.String("notification", "", "notification id")
	since := fs.String("since", "", "changed since: a duration ago (1h) or a time (RFC 3339)")
	return func() (herald.DeliveryQuery, error) {
		q := herald.DeliveryQuery{Code: *code, Recipient: *recipient}
		if *notificationID != "" {
			id, err := uuid.Parse(*notificationID)
			if err != nil {
				return q, cli.UsageError{Msg: fmt.Sprintf("-notification %q is not a notification id", *notificationID)}
			}
			q.NotificationID = id
		}
		if *since != "" {
			t, err := parseSince(*since, time.Now())
			if err != nil {
				return q, cli.UsageError{Msg: err.Error()}
			}
			q.Since = t
		}
		return q, nil
	}
}

// parseSince reads -since: a duration before now, or a time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("-since %q is neither a duration (1h30m) nor a time (2006-01-02T15:04:05Z)", s)
}

func filtered(q herald.DeliveryQuery) bool {
	return q.Code != "" || q.Recipient != "" || q.NotificationID != uuid.Nil || !q.Since.IsZero()
}

func listDeliveries(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("deliveries list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	status := fs.String("status", "", `status to list, or "any" (default: failed, or any when another filter is given)`)
	limit := fs.Int("limit", 50, fmt.Sprintf("most rows to print (at most %d)", herald.MaxDeliveryPageSize))
	cursor := fs.String("cursor", "", "continue after the page that printed this cursor")
	query := queryFlags(fs)
	if err := fs.Parse(args); err != nil {
		return cli.UsageError{Msg: err.Error()}
	}
	q, err := query()
	if err != nil {
		return err
	}
	switch {
	case *status == "any":
	case *status != "":
		q.Status = notification.DeliveryStatus(*status)
	case !filtered(q):
		q.Status = notification.StatusFailed
	}
	if *limit < 1 {
		return cli.UsageError{Msg: fmt.Sprintf("-limit %d must be positive", *limit)}
	}
	q.Limit, q.Cursor = *limit, *cursor
	h, pool, err := operator(ctx, stderr)
	if err != nil {
		return err
	}
	defer pool.Close()
	page, err := h.QueryDeliveries(ctx, q)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tNOTIFICATION\tRECIPIENT\tTOKEN\tSTATUS\tATTEMPTS\tCODE\tUPDATED\tLAST ERROR")
	for _, d := range page.Deliveries {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.ID, d.NotificationID, visible.Text(d.Recipient), d.TokenHash,
			d.Status, d.Attempts, orDash(d.Code), d.UpdatedAt.UTC().Format(time.RFC3339), orDash(d.LastError))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if page.Next != "" {
		fmt.Fprintf(stderr, "more: add -cursor %s\n", page.Next)
	}
	return nil
}

func retryDeliveries(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("deliveries retry", flag.ContinueOnError)
	fs.SetOutput(stderr)
	all := fs.Bool("all", false, "retry every failed delivery")
	query := queryFlags(fs)
	if err := fs.Parse(args); err != nil {
		return cli.UsageError{Msg: err.Error()}
	}
	q, err := query()
	if err != nil {
		return err
	}
	ways := 0
	for _, given := range []bool{*all, fs.NArg() > 0, filtered(q)} {
		if given {
			ways++
		}
	}
	if ways != 1 {
		fmt.Fprintln(stderr, deliveriesUsage)
		return cli.UsageError{Msg: "deliveries retry: give exactly one of -all, IDs, or filters"}
	}
	ids, err := parseIDs("deliveries retry", fs.Args())
	if err != nil {
		return err
	}
	h, pool, err := operator(ctx, stderr)
	if err != nil {
		return err
	}
	defer pool.Close()
	// Everything is retried in bounded batches, each its own short
	// statement, logging progress to stderr; an interrupted run can
	// simply be started again.
	var n int
	switch {
	case *all:
		n, err = h.RetryAllFailed(ctx)
	case len(ids) > 0:
		n, err = h.RetryFailed(ctx, ids)
	default:
		n, err = h.RetryFailedWhere(ctx, q)
	}
	if err != nil {
		return fmt.Errorf("after %d failed deliveries made pending again: %w", n, err)
	}
	fmt.Fprintf(stdout, "%d failed deliveries made pending again\n", n)
	return nil
}

// notificationArg reads the one notification id a command takes.
func notificationArg(name string, args []string, stderr io.Writer) (uuid.UUID, error) {
	if len(args) != 1 {
		fmt.Fprintln(stderr, deliveriesUsage)
		return uuid.Nil, cli.UsageError{Msg: name + ": give one notification id"}
	}
	id, err := uuid.Parse(args[0])
	if err != nil {
		return uuid.Nil, cli.UsageError{Msg: fmt.Sprintf("%s: %q is not a notification id", name, args[0])}
	}
	return id, nil
}

// writeTimeline prints a notification, its counts and each delivery with
// its attempts beneath it.
func writeTimeline(w io.Writer, tl herald.Timeline) error {
	n := tl.Notification
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	to := "to " + visible.Text(n.Recipient)
	if n.Broadcast {
		to = "broadcast"
	}
	fmt.Fprintf(tw, "Notification\t%s %s %s, created %s\n", n.ID, visible.Text(n.Type), to, n.CreatedAt.UTC().Format(time.RFC3339))
	if !n.CancelledAt.IsZero() {
		fmt.Fprintf(tw, "Cancelled\t%s\n", n.CancelledAt.UTC().Format(time.RFC3339))
	}
	var counts []string
	for _, s := range notification.Statuses {
		if c := tl.Counts[s]; c > 0 {
			counts = append(counts, fmt.Sprintf("%s %s", s, group(int64(c))))
		}
	}
	fmt.Fprintf(tw, "Deliveries\t%s\n", orNone(strings.Join(counts, "  ")))
	if b := tl.Broadcast; b != nil {
		state := "expanding"
		if !b.FinishedAt.IsZero() {
			state = "expanded " + b.FinishedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "Broadcast\t%s deliveries created, %s\n", group(b.Expanded), state)
		if b.Refused > 0 {
			fmt.Fprintf(tw, "Refused\t%s deliveries refused by the database, the last: %s\n", group(b.Refused), visible.Text(b.Refusal))
		}
		if !b.HeldUntil.IsZero() {
			fmt.Fprintf(tw, "Held\tthe database refused every delivery of its next chunk (%s in a row), so none is skipped; tried again %s: %s\n",
				times(b.Holds), b.HeldUntil.UTC().Format(time.RFC3339), visible.Text(b.HeldReason))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DELIVERY\tTOKEN\tSTATUS\tATTEMPTS\tCODE\tUPDATED\tLAST ERROR")
	for _, d := range tl.Deliveries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", d.ID, d.TokenHash, d.Status, d.DeliveryInfo.Attempts,
			orDash(d.Code), d.UpdatedAt.UTC().Format(time.RFC3339), orDash(d.LastError))
		for _, a := range d.Attempts {
			// The outcome column has no constraint: a row written by hand
			// may hold anything.
			fmt.Fprintf(tw, "\t  attempt %d\t%s\t\t%s\t%s\t%s\n", a.Number, visible.Text(string(a.Outcome)), orDash(a.Code),
				a.At.UTC().Format(time.RFC3339Nano), orDash(a.Error))
		}
	}
	if tl.Truncated {
		fmt.Fprintf(tw, "...\tthe first %d deliveries; list the rest with herald deliveries list -notification %s\n",
			herald.MaxTimelineDeliveries, n.ID)
	}
	return tw.Flush()
}

// orDash shows s (see visible.Text), or "-" for nothing.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return visible.Text(s)
}

// DeadLetters is herald deadletters list [-all] [-limit N] | replay [-all | ID...]
func DeadLetters(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return cli.UsageError{Msg: "usage: herald deadletters list [-all] [-limit 50] | replay (-all | ID...)"}
	}
	h, pool, err := operator(ctx, stderr)
	if err != nil {
		return err
	}
	defer pool.Close()
	switch args[0] {
	case "list":
		fs := flag.NewFlagSet("deadletters list", flag.ContinueOnError)
		fs.SetOutput(stderr)
		all := fs.Bool("all", false, "include dead letters already replayed")
		limit := fs.Int("limit", 50, "most rows to print")
		if err := fs.Parse(args[1:]); err != nil {
			return cli.UsageError{Msg: err.Error()}
		}
		dls, err := h.DeadLetters(ctx, !*all, *limit)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tMESSAGE\tCREATED\tREPLAYED\tBYTES\tREASON")
		for _, dl := range dls {
			replayed := "-"
			if !dl.ReplayedAt.IsZero() {
				replayed = dl.ReplayedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%s\n", dl.ID, visible.Text(dl.MessageUUID), dl.CreatedAt.Format(time.RFC3339),
				replayed, dl.PayloadBytes, visible.Text(dl.Reason))
		}
		return w.Flush()
	case "replay":
		n, err := onIDsOrAll(ctx, "deadletters replay", args[1:], stderr, h.ReplayDeadLetters, h.ReplayAllDeadLetters)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%d dead letters replayed onto the outbox\n", n)
		return nil
	}
	return cli.UsageError{Msg: "unknown deadletters command " + args[0]}
}

// onIDsOrAll runs byIDs on the ids args name, or all when args say -all;
// it refuses neither, so that an operator never acts on everything by
// accident.
func onIDsOrAll(ctx context.Context, name string, args []string, stderr io.Writer,
	byIDs func(context.Context, []int64) (int, error), all func(context.Context) (int, error)) (int, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	everything := fs.Bool("all", false, "act on every one")
	if err := fs.Parse(args); err != nil {
		return 0, cli.UsageError{Msg: err.Error()}
	}
	if *everything == (fs.NArg() > 0) {
		return 0, cli.UsageError{Msg: name + ": give either -all or IDs"}
	}
	ids, err := parseIDs(name, fs.Args())
	if err != nil {
		return 0, err
	}
	if len(ids) > 0 {
		return byIDs(ctx, ids)
	}
	return all(ctx)
}

func parseIDs(name string, args []string) ([]int64, error) {
	ids := make([]int64, 0, len(args))
	for _, a := range args {
		id, err := strconv.ParseInt(a, 10, 64)
		if err != nil {
			return nil, cli.UsageError{Msg: fmt.Sprintf("%s: %q is not an id", name, a)}
		}
		ids = append(ids, id)
	}
	return ids, nil
}
