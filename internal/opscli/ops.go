package opscli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/notification"
)

// Deliveries is herald deliveries list [-status S] [-limit N] | retry [-all | ID...]
func Deliveries(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return cli.UsageError{Msg: "usage: herald deliveries list [-status failed] [-limit 50] | retry (-all | ID...)"}
	}
	h, pool, err := operator(ctx, stderr)
	if err != nil {
		return err
	}
	defer pool.Close()
	switch args[0] {
	case "list":
		fs := flag.NewFlagSet("deliveries list", flag.ContinueOnError)
		fs.SetOutput(stderr)
		status := fs.String("status", string(notification.StatusFailed), "status to list")
		limit := fs.Int("limit", 50, "most rows to print")
		if err := fs.Parse(args[1:]); err != nil {
			return cli.UsageError{Msg: err.Error()}
		}
		ds, err := h.ListDeliveriesByStatus(ctx, notification.DeliveryStatus(*status), *limit)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tNOTIFICATION\tTOKEN\tSTATUS\tATTEMPTS\tCODE\tUPDATED\tLAST ERROR")
		for _, d := range ds {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.ID(), d.NotificationID(), herald.TokenHash(d.Token()),
				d.Status(), d.Attempts(), d.ErrorCode(), d.UpdatedAt().Format(time.RFC3339), d.LastError())
		}
		return w.Flush()
	case "retry":
		// Everything is retried in bounded batches, each its own short
		// statement, logging progress to stderr; an interrupted run can
		// simply be started again.
		n, err := onIDsOrAll(ctx, "deliveries retry", args[1:], stderr, h.RetryFailed, h.RetryAllFailed)
		if usage := (cli.UsageError{}); errors.As(err, &usage) {
			return err
		}
		if err != nil {
			return fmt.Errorf("after %d failed deliveries made pending again: %w", n, err)
		}
		fmt.Fprintf(stdout, "%d failed deliveries made pending again\n", n)
		return nil
	}
	return cli.UsageError{Msg: "unknown deliveries command " + args[0]}
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
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%s\n", dl.ID, dl.MessageUUID, dl.CreatedAt.Format(time.RFC3339),
				replayed, len(dl.Payload), dl.Reason)
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

// idsOrAll parses "-all" or a list of numeric ids; it refuses neither, so
// that an operator never acts on everything by accident.
// onIDsOrAll runs byIDs on the ids args name, or all when args say -all.
func onIDsOrAll(ctx context.Context, name string, args []string, stderr io.Writer,
	byIDs func(context.Context, []int64) (int, error), all func(context.Context) (int, error)) (int, error) {
	ids, err := idsOrAll(name, args, stderr)
	if err != nil {
		return 0, err
	}
	if len(ids) > 0 {
		return byIDs(ctx, ids)
	}
	return all(ctx)
}

func idsOrAll(name string, args []string, stderr io.Writer) ([]int64, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	all := fs.Bool("all", false, "act on every one")
	if err := fs.Parse(args); err != nil {
		return nil, cli.UsageError{Msg: err.Error()}
	}
	if *all == (fs.NArg() > 0) {
		return nil, cli.UsageError{Msg: name + ": give either -all or IDs"}
	}
	ids := make([]int64, 0, fs.NArg())
	for _, a := range fs.Args() {
		id, err := strconv.ParseInt(a, 10, 64)
		if err != nil {
			return nil, cli.UsageError{Msg: fmt.Sprintf("%s: %q is not an id", name, a)}
		}
		ids = append(ids, id)
	}
	return ids, nil
}
