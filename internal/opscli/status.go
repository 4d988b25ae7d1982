package opscli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/visible"
)

// clearScreen moves the cursor home and clears the terminal: -watch
// redraws in place.
const clearScreen = "\033[H\033[2J"

// Status is `herald status [-json] [-watch] [-interval 2s]`: the
// deployment's state from DATABASE_URL, once, or redrawn in place every
// interval until interrupted.
func Status(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON (one object per refresh with -watch)")
	watch := fs.Bool("watch", false, "refresh in place until interrupted")
	interval := fs.Duration("interval", 2*time.Second, "refresh interval with -watch")
	if err := fs.Parse(args); err != nil {
		return cli.UsageError{Msg: err.Error()}
	}
	if fs.NArg() > 0 || *interval <= 0 {
		fmt.Fprintln(stderr, "usage: herald status [-json] [-watch] [-interval 2s]")
		return cli.UsageError{Msg: "herald status takes only flags, and a positive -interval"}
	}
	h, pool, err := operator(ctx, stderr)
	if err != nil {
		return err
	}
	defer pool.Close()
	for {
		s, err := h.Status(ctx)
		switch {
		case err != nil && *watch && ctx.Err() != nil:
			return nil // interrupted: the normal end of -watch
		case err != nil && *watch && !*asJSON:
			// A database restart or a failover should not end the watch:
			// say so in place and try again at the next refresh.
			fmt.Fprint(stdout, clearScreen)
			fmt.Fprintf(stdout, "status unavailable at %s: %v\n\nretrying every %s; Ctrl-C to stop\n",
				time.Now().UTC().Format("15:04:05"), err, *interval)
		case err != nil:
			return err
		case *asJSON:
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			if !*watch {
				enc.SetIndent("", "  ")
			}
			if err := enc.Encode(s); err != nil {
				return err
			}
			if _, err := stdout.Write(visible.JSON(buf.Bytes())); err != nil {
				return err
			}
		case *watch:
			fmt.Fprint(stdout, clearScreen)
			writeStatus(stdout, s)
			fmt.Fprintf(stdout, "\nrefreshing every %s; Ctrl-C to stop\n", *interval)
		default:
			writeStatus(stdout, s)
		}
		if !*watch || !cli.Sleep(ctx, *interval) {
			return nil
		}
	}
}

// writeStatus prints s as a person reads it at a glance: one aligned line
// per question (how much is waiting, for how long, what is failing, is
// the relay behind, is anything stuck).
func writeStatus(w io.Writer, s herald.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Herald status\t%s (database clock)\n", s.At.UTC().Format("2006-01-02 15:04:05 MST"))
	var counts []string
	for _, c := range s.Deliveries {
		counts = append(counts, fmt.Sprintf("%s %s", c.Status, countText(c.Count, c.AtLeast, c.Estimated)))
	}
	fmt.Fprintf(tw, "Deliveries\t%s\n", orNone(strings.Join(counts, "  ")))
	var open int64
	openAtLeast := false
	for _, c := range s.Deliveries {
		if !c.Status.IsFinal() {
			open += c.Count
			openAtLeast = openAtLeast || c.AtLeast
		}
	}
	due := countText(open, openAtLeast, false) + " open, " + countText(s.DueNow, s.DueNowAtLeast, false) + " due now"
	if s.DueNow > 0 {
		due += ", oldest due for " + ago(s.OldestDueAge)
	}
	fmt.Fprintf(tw, "Senders\t%s\n", due)
	relay := countText(s.Relay.Messages, s.Relay.AtLeast, false) + " outbox messages waiting"
	if s.Relay.Messages > 0 {
		relay += ", the oldest for " + ago(s.Relay.OldestAge)
	}
	fmt.Fprintf(tw, "Relay\t%s\n", relay)
	var failed []string
	for _, c := range s.FailedLastHour {
		code := visible.Text(c.Code)
		if code == "" {
			code = "(no code)"
		}
		failed = append(failed, fmt.Sprintf("%s %s", code, group(c.Count)))
	}
	fmt.Fprintf(tw, "Failed, last hour\t%s\n", orNone(strings.Join(failed, "  ")))
	letters := "none"
	if s.DeadLetters > 0 {
		letters = group(s.DeadLetters) + " waiting for replay (herald deadletters list)"
	}
	fmt.Fprintf(tw, "Dead letters\t%s\n", letters)
	if len(s.Broadcasts) == 0 {
		fmt.Fprintf(tw, "Broadcasts\tnone expanding\n")
	}
	for i, b := range s.Broadcasts {
		label := ""
		if i == 0 {
			label = "Broadcasts"
		}
		what := visible.Text(b.Type)
		if b.Recipient != "" {
			what += " to " + visible.Text(b.Recipient) + "'s devices"
		} else if len(b.Platforms) > 0 {
			what += " to " + visible.Text(strings.Join(b.Platforms, ", "))
		}
		progress := group(b.Expanded) + " deliveries"
		if b.Tokens > 0 {
			progress += fmt.Sprintf(" of ~%s (%d%%)", group(b.Tokens), min(100, b.Expanded*100/b.Tokens))
		}
		if b.Refused > 0 {
			progress += fmt.Sprintf(", %s refused by the database (last: %s)", group(b.Refused), visible.Text(b.Refusal))
		}
		if !b.HeldUntil.IsZero() {
			progress += fmt.Sprintf(", held: the database refused its next chunk whole %s, tried again %s (%s)",
				times(b.Holds), b.HeldUntil.UTC().Format(time.RFC3339), visible.Text(b.HeldReason))
		}
		fmt.Fprintf(tw, "%s\t%s %s: %s, started %s ago\n", label, b.NotificationID, what, progress,
			ago(s.At.Sub(b.StartedAt)))
	}
	breaker := s.Breaker
	if breaker == "" {
		breaker = "(each sending process has its own; this one does not send)"
	}
	fmt.Fprintf(tw, "Breaker\t%s\n", breaker)
	pause := "none"
	if s.QuotaPause > 0 {
		pause = "every instance holds its pushes for another " + ago(s.QuotaPause) + " (a project-wide QUOTA_EXCEEDED)"
	}
	fmt.Fprintf(tw, "Quota pause\t%s\n", pause)
	if len(s.Instances) == 0 {
		fmt.Fprintf(tw, "Instances\tnone running\n")
	}
	for i, in := range s.Instances {
		label := ""
		if i == 0 {
			label = fmt.Sprintf("Instances (%d)", len(s.Instances))
		}
		leader := ""
		if in.Leader {
			leader = ", leader"
		}
		fmt.Fprintf(tw, "%s\t%s pid %d %s%s, up %s, heartbeat %s ago\n", label, visible.Text(in.Host), in.PID, visible.Text(in.Version), leader,
			ago(s.At.Sub(in.StartedAt)), ago(max(0, s.At.Sub(in.HeartbeatAt))))
	}
	_ = tw.Flush()
}

// countText writes a count with a thousands separator, "~" when it is an
// estimate and "+" when counting stopped there.
func countText(n int64, atLeast, estimated bool) string {
	t := group(n)
	if estimated {
		t = "~" + t
	}
	if atLeast {
		t += "+"
	}
	return t
}

// group writes n with commas between thousands: 1,234,567.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// ago writes a duration to the precision a person reads: 850ms, 12.3s, 4m10s, 2h5m.
func ago(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// times says how many times: "once", "twice", "3 times".
func times(n int) string {
	switch n {
	case 1:
		return "once"
	case 2:
		return "twice"
	}
	return fmt.Sprintf("%d times", n)
}
