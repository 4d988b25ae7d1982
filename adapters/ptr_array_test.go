package adapters_test

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/testutil"
)

// Through a real Postgres, in every exec mode Herald accepts (New refuses
// QueryExecModeExec and QueryExecModeSimpleProtocol, which guess a
// parameter's type from its Go type and know no ptrArray), a ptrArray
// parameter is read back as the plain slice's was: NULL, {}, each element,
// and the same error for what Postgres refuses (NUL, invalid UTF-8).
func TestPtrArrayReachesPostgresAsThePlainSliceDid(t *testing.T) {
	t.Parallel()
	url := testutil.NewDatabase(t)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg, err := pgxpool.ParseConfig(url)
			if err != nil {
				t.Fatal(err)
			}
			cfg.ConnConfig.DefaultQueryExecMode = mode
			pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			for _, c := range adapters.PtrArrayCases() {
				q := `SELECT $1::` + c.SQLType + ` IS NULL, coalesce(cardinality($1::` + c.SQLType + `), -1), ($1::` + c.SQLType + `)::text,
					(SELECT count(*) FROM unnest($1::` + c.SQLType + `)), (SELECT count(*) FROM unnest($1::` + c.SQLType + `) x WHERE x IS NULL)`
				read := func(arg any) (string, error) {
					var isNull bool
					var card, n, nulls int
					var text *string
					err := pool.QueryRow(t.Context(), q, arg).Scan(&isNull, &card, &text, &n, &nulls)
					s := "<nil>"
					if text != nil {
						s = *text
					}
					return fmt.Sprint(isNull, card, n, nulls, s), err
				}
				old, oldErr := read(c.Old)
				fresh, freshErr := read(c.Fresh)
				if old != fresh || fmt.Sprint(oldErr) != fmt.Sprint(freshErr) {
					t.Errorf("%s: plain %.200s (%.200v), ptrArray %.200s (%.200v)", c.Name, old, oldErr, fresh, freshErr)
				}
			}
		})
	}
}
