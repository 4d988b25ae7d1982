package adapters

import (
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
)

// sightings is one reaper's memory of the other instances' heartbeats: for
// each registered instance, the heartbeat_at it last read, the DeadAfter
// the instance registered, and when (by this process's monotonic clock)
// it first read that same heartbeat_at.
//
// An instance is reaped only when the database's clock says its heartbeat
// is older than its DeadAfter AND this reaper has itself seen that
// heartbeat stand still for its DeadAfter. The database's clock alone is
// one reading of one clock: when it stepped forward by more than DeadAfter
// (a VM resumed after a pause or a live migration, an NTP step), the first
// beat after the step saw every other heartbeat as old, reaped every live
// instance and freed their claims, which others then pushed again while
// their holders still pushed them. A live instance's heartbeat_at changes
// at every beat, whatever the clock reads, so no reaper sees it stand still
// for DeadAfter.
//
// The reap deletes a row only if its heartbeat_at is still the one
// remembered: a reaper that was itself stopped (SIGSTOP, a long GC pause)
// while the instance went on beating does not wake to reap it from a
// memory older than its pause. Times are taken so as to underestimate how
// long a heartbeat stood still: first seen at the end of the beat that read
// it, judged at the start of the beat that may reap it.
type sightings struct {
	mu   sync.Mutex
	seen map[uuid.UUID]sighting
}

// sighting is what a reaper remembers of one instance.
type sighting struct {
	heartbeat pgtype.Timestamptz
	deadAfter time.Duration
	since     time.Time // local, with its monotonic reading
}

// registration is one row of the registry as a beat reads it.
type registration struct {
	id        uuid.UUID
	heartbeat pgtype.Timestamptz
	deadAfter time.Duration
}

// stalled returns the instances other than self whose heartbeat this
// reaper has seen stand still for at least their DeadAfter at now, with
// the heartbeat_at it saw, as the reap statement's parameters.
func (s *sightings) stalled(self uuid.UUID, now time.Time) (ptrArray[uuidElem], ptrArray[pgtype.Timestamptz]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids, beats := ptrArray[uuidElem]{}, ptrArray[pgtype.Timestamptz]{}
	for id, seen := range s.seen {
		if id != self && now.Sub(seen.since) >= seen.deadAfter {
			ids = append(ids, uuidElem(id))
			beats = append(beats, seen.heartbeat)
		}
	}
	return ids, beats
}

// saw replaces the memory with the registry read by a beat that ended at
// now: an instance whose heartbeat_at is unchanged keeps the time it was
// first seen; any other is first seen now; one no longer registered is
// forgotten.
func (s *sightings) saw(registry []registration, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := make(map[uuid.UUID]sighting, len(registry))
	for _, r := range registry {
		since := now
		if old, ok := s.seen[r.id]; ok && sameHeartbeat(old.heartbeat, r.heartbeat) {
			since = old.since
		}
		next[r.id] = sighting{heartbeat: r.heartbeat, deadAfter: r.deadAfter, since: since}
	}
	s.seen = next
}

func sameHeartbeat(a, b pgtype.Timestamptz) bool {
	return a.Valid == b.Valid && a.InfinityModifier == b.InfinityModifier && a.Time.Equal(b.Time)
}
