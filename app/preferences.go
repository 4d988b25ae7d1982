package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/herald-push/herald/notification"
)

// PreferenceRepository stores users' push preferences.
type PreferenceRepository interface {
	// Set replaces userID's preferences; it may refuse a time zone the
	// database does not know, with a *notification.FieldError.
	Set(ctx context.Context, userID string, p notification.Preferences, at time.Time) error
	// Get returns userID's preferences and whether they have any.
	Get(ctx context.Context, userID string) (notification.Preferences, bool, error)
	// Delete removes them and reports whether there were any.
	Delete(ctx context.Context, userID string) (bool, error)
}

// UserPreferences manages users' push preferences: types muted for push
// and quiet hours in the user's time zone. They are read when the relay
// expands a notification and again just before each push, so a change
// takes effect for every push not yet sent (a muted delivery stays muted,
// though, if the type is unmuted later). It is safe for concurrent use.
type UserPreferences struct {
	repo PreferenceRepository
	now  func() time.Time
}

// NewUserPreferences returns the preferences on repo. now may be nil
// (time.Now).
func NewUserPreferences(repo PreferenceRepository, now func() time.Time) *UserPreferences {
	if repo == nil {
		panic("app: NewUserPreferences: nil repository")
	}
	return &UserPreferences{repo: repo, now: clockOrDefault(now)}
}

// Set replaces userID's preferences with p. Invalid preferences (an
// unknown time zone, a time that is not "HH:MM", an empty or too long
// type) fail with *notification.FieldError values wrapping the sentinels
// of notification.Preferences.Validate, before anything is written.
func (u *UserPreferences) Set(ctx context.Context, userID string, p notification.Preferences) error {
	if err := errors.Join(notification.ValidateUserID(userID), p.Validate()); err != nil {
		return fmt.Errorf("set preferences: %w", err)
	}
	if err := u.repo.Set(ctx, userID, p, u.now()); err != nil {
		return fmt.Errorf("set preferences: %w", err)
	}
	return nil
}

// Get returns userID's preferences: the zero Preferences (nothing muted,
// no quiet hours) when they have set none. A user id Herald never stores
// fails with *notification.FieldError values, as Set does.
func (u *UserPreferences) Get(ctx context.Context, userID string) (notification.Preferences, error) {
	if err := checkUser("get preferences", userID); err != nil {
		return notification.Preferences{}, err
	}
	p, _, err := u.repo.Get(ctx, userID)
	return p, err
}

// Delete removes userID's preferences, and reports whether they had any. A
// user id Herald never stores fails with *notification.FieldError values.
func (u *UserPreferences) Delete(ctx context.Context, userID string) (bool, error) {
	if err := checkUser("delete preferences", userID); err != nil {
		return false, err
	}
	return u.repo.Delete(ctx, userID)
}
