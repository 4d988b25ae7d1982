package opscli

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/migrations"
)

// Migrate is `herald migrate`: it applies Herald's migrations to DATABASE_URL.
func Migrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	down := fs.Int("down", 0, "revert this many migrations instead of applying")
	if err := fs.Parse(args); err != nil {
		return cli.UsageError{Msg: err.Error()}
	}
	pool, err := connectDatabase(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if *down > 0 {
		reverted, err := migrations.Down(ctx, pool, *down)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "reverted migrations %v\n", reverted)
		return nil
	}
	applied, err := migrations.Up(ctx, pool)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "schema is up to date")
		return nil
	}
	fmt.Fprintf(stdout, "applied migrations %v\n", applied)
	return nil
}
