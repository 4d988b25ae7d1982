package app

import (
	"context"
	"fmt"
	"time"

	"github.com/herald-push/herald/notification"
)

// DeviceTokenRepository is the registry's view of stored tokens.
type DeviceTokenRepository interface {
	// Upsert inserts a token or, if known, marks it seen and moves it to the
	// token's user. In the same transaction it closes (token_moved) every
	// open delivery to the token addressed to another user.
	Upsert(ctx context.Context, t *notification.DeviceToken) error
	// UpsertMany does what Upsert does for many tokens, in bounded
	// chunks, each chunk one statement; the last occurrence of a repeated
	// token wins.
	UpsertMany(ctx context.Context, ts []*notification.DeviceToken) error
	// Delete removes a token and, in the same transaction, closes its open
	// deliveries (token_pruned, TOKEN_REMOVED). It reports whether the
	// token existed.
	Delete(ctx context.Context, token string) (bool, error)
	// ListForUser returns a user's tokens, most recently seen first: at
	// most limit of them, every one when limit is 0.
	ListForUser(ctx context.Context, userID string, limit int) ([]*notification.DeviceToken, error)
}

// Tokens is the device token registry. It is safe for concurrent use.
type Tokens struct {
	repo DeviceTokenRepository
	now  func() time.Time
}

// NewTokens returns the registry on repo. now may be nil (time.Now).
func NewTokens(repo DeviceTokenRepository, now func() time.Time) *Tokens {
	if repo == nil {
		panic("app: NewTokens: nil repository")
	}
	return &Tokens{repo: repo, now: clockOrDefault(now)}
}

// Register records that user's app reported token. It is an idempotent
// upsert: registering again marks the token seen; registering a token
// another user had moves it to user, and the previous owner's pushes still
// waiting for that token are closed token_moved, never sent to the new
// owner's device (only a push a sender already had in hand may still leave;
// see the README). A malformed token fails with a *notification.FieldError
// wrapping notification.ErrInvalidToken.
func (ts *Tokens) Register(ctx context.Context, user, token string, platform notification.Platform) error {
	t, err := notification.NewDeviceToken(user, token, platform, ts.now())
	if err != nil {
		return fmt.Errorf("register device token: %w", err)
	}
	return ts.repo.Upsert(ctx, t)
}

// TokenRegistration is one entry of a bulk import: user's app reported
// Token on Platform.
type TokenRegistration struct {
	UserID   string
	Token    string
	Platform notification.Platform
}

// RegistrationError names the entry of a bulk import that failed
// validation. Err holds the entry's *notification.FieldError values
// (joined), so errors.Is(err, notification.ErrInvalidToken) and errors.As
// with a *notification.FieldError both work.
type RegistrationError struct {
	// Index is the entry's position in the slice given to RegisterMany.
	Index int
	Err   error
}

func (e *RegistrationError) Error() string {
	return fmt.Sprintf("registration %d: %v", e.Index, e.Err)
}

// Unwrap returns the entry's validation errors.
func (e *RegistrationError) Unwrap() error { return e.Err }

// RegisterMany imports many registrations at once (moving a million tokens
// from an older system), with Register's validation and ownership rules.
//
// Every entry is validated before anything is written: one bad entry fails
// the whole import with a *RegistrationError naming the first bad entry's
// index, and nothing is written. Then the tokens are upserted in bounded
// chunks, each chunk its own statement: a chunk is atomic, the import as a
// whole is not. If it fails part way (a lost connection, a cancelled ctx),
// the chunks already committed stay; the import is idempotent, so running
// it again with the same input completes it and changes nothing already
// done (only the tokens' last-seen time moves on).
//
// A token another user had moves to the entry's user, and the previous
// owner's pushes still waiting for it are closed token_moved, as Register
// does. A token listed more than once ends with its last entry.
func (ts *Tokens) RegisterMany(ctx context.Context, regs []TokenRegistration) error {
	now := ts.now()
	tokens := make([]*notification.DeviceToken, len(regs))
	for i, r := range regs {
		t, err := notification.NewDeviceToken(r.UserID, r.Token, r.Platform, now)
		if err != nil {
			return fmt.Errorf("register device tokens: %w", &RegistrationError{Index: i, Err: err})
		}
		tokens[i] = t
	}
	return ts.repo.UpsertMany(ctx, tokens)
}

// Unregister removes a token (the user signed out, or the app reported it
// gone) and closes the pushes still waiting for it (token_pruned with the
// code TOKEN_REMOVED). Removing an unknown token is not an error, nor is
// removing one no registry could hold (a NUL, bytes that are not UTF-8).
func (ts *Tokens) Unregister(ctx context.Context, token string) error {
	_, err := ts.repo.Delete(ctx, token)
	return err
}

// List returns user's tokens, most recently seen first. A user id Herald
// never stores (empty, not UTF-8, holding NUL, too long) fails with
// *notification.FieldError values, as the inbox's calls do.
func (ts *Tokens) List(ctx context.Context, user string) ([]*notification.DeviceToken, error) {
	if err := checkUser("list device tokens", user); err != nil {
		return nil, err
	}
	return ts.repo.ListForUser(ctx, user, 0)
}
