package opscli_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/opscli"
)

// Operator actions can't leak or be hijacked through what they display:
// user ids, types, error messages and dead letters' reasons come from
// users, hosts and FCM, and may hold terminal control sequences (a user
// id with ESC ] 52 writes the operator's clipboard; ESC [ 2K and a carriage
// return rewrite the line above). The commands print them escaped: no
// control character but the table's newlines reaches the terminal.
func TestOperatorCommandsNeverPassTerminalControlSequencesThrough(t *testing.T) {
	ctx := context.Background()
	pool := commandsDatabase(t)

	const hostile = "mallory\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07\r\x1b[2K\u009b31m"
	id := uuid.New()
	_, err := pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, created_at)
		VALUES ($1, $2, $2, 'x', now())`, id, hostile)
	require.NoError(t, err)
	var delivery int64
	require.NoError(t, pool.QueryRow(ctx, `INSERT INTO herald_deliveries (notification_id, token, status, attempts,
			error_code, last_error, due_at, created_at, updated_at)
		VALUES ($1, 'tok', 'failed', 1, $2, $2, now(), now(), now()) RETURNING id`, id, hostile).Scan(&delivery))
	_, err = pool.Exec(ctx, `INSERT INTO herald_delivery_attempts (delivery_id, attempt, outcome, error_code, last_error, attempted_at)
		VALUES ($1, 1, 'failed', $2, $2, now())`, delivery, hostile)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO herald_dead_letters (topic, message_uuid, payload, reason)
		VALUES ('herald_outbox', $1, '{}', $1)`, hostile)
	require.NoError(t, err)

	for _, args := range [][]string{{"list"}, {"list", "-recipient", hostile}, {"timeline", id.String()}} {
		out, err := runCommand(ctx, opscli.Deliveries, args...)
		require.NoError(t, err, args)
		assert.Contains(t, out, "mallory", args)
		assert.False(t, strings.ContainsFunc(out, func(r rune) bool { return r != '\n' && unicode.IsControl(r) }),
			"%v printed control characters: %q", args, out)
	}
	out, err := runCommand(ctx, opscli.DeadLetters, "list")
	require.NoError(t, err)
	assert.Contains(t, out, "mallory")
	assert.False(t, strings.ContainsFunc(out, func(r rune) bool { return r != '\n' && unicode.IsControl(r) }),
		"deadletters list printed control characters: %q", out)
}

// What an operator reads is what the database holds: a right-to-left
// override in a user id (U+202E shows "mallory\u202egnp.exe" as
// "malloryexe.png"), an isolate, a zero-width space, a byte order mark, a
// soft hyphen, a tag character or a Hangul filler reorders or hides text
// without a control character among them. Every such character is printed
// escaped, by the tables and by status -json alike (there as JSON's own
// \u escapes: the same JSON to a program).
func TestOperatorCommandsShowInvisibleAndReorderingCharactersEscaped(t *testing.T) {
	ctx := context.Background()
	pool := commandsDatabase(t)

	const hostile = "mallory\u202egnp.exe\u2066x\u2069\u200b\u200d\ufeff\u00ad\U000e0041\u3164\u00a0\u2028\ufe0f"
	id := uuid.New()
	_, err := pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, created_at)
		VALUES ($1, $2, $2, $2, now())`, id, hostile)
	require.NoError(t, err)
	var delivery int64
	require.NoError(t, pool.QueryRow(ctx, `INSERT INTO herald_deliveries (notification_id, token, status, attempts,
			error_code, last_error, due_at, created_at, updated_at)
		VALUES ($1, 'tok', 'failed', 1, $2, $2, now(), now(), now()) RETURNING id`, id, hostile).Scan(&delivery))
	_, err = pool.Exec(ctx, `INSERT INTO herald_delivery_attempts (delivery_id, attempt, outcome, error_code, last_error, attempted_at)
		VALUES ($1, 1, $2, $2, $2, now())`, delivery, hostile)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO herald_dead_letters (topic, message_uuid, payload, reason)
		VALUES ('herald_outbox', $1, '{}', $1)`, hostile)
	require.NoError(t, err)

	invisible := func(r rune) bool {
		return r != '\n' && r != ' ' && (unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zs, unicode.Zl, unicode.Zp,
			unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector))
	}
	for _, cmd := range []struct {
		name string
		run  cli.Command
		args []string
	}{
		{"deliveries list", opscli.Deliveries, []string{"list"}},
		{"deliveries list -recipient", opscli.Deliveries, []string{"list", "-recipient", hostile}},
		{"deliveries timeline", opscli.Deliveries, []string{"timeline", id.String()}},
		{"deadletters list", opscli.DeadLetters, []string{"list"}},
		{"status", opscli.Status, nil},
		{"status -json", opscli.Status, []string{"-json"}},
	} {
		out, err := runCommand(ctx, cmd.run, cmd.args...)
		require.NoError(t, err, cmd.name)
		assert.Contains(t, out, `mallory\u202egnp.exe\u2066x\u2069\u200b\u200d\ufeff`, cmd.name)
		if i := strings.IndexFunc(out, invisible); i >= 0 {
			r, _ := utf8.DecodeRuneInString(out[i:])
			t.Errorf("%s printed %U unescaped: %q", cmd.name, r, out)
		}
	}
	out, err := runCommand(ctx, opscli.Status, "-json")
	require.NoError(t, err)
	var status struct {
		FailedLastHour []struct {
			Code string `json:"code"`
		} `json:"failed_last_hour"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &status), out)
	require.Len(t, status.FailedLastHour, 1, out)
	assert.Equal(t, hostile, status.FailedLastHour[0].Code, "status -json is the same JSON")
}
