package herald

import (
	"encoding/json"
	"time"
)

// statsJSON is the stable JSON form of Stats: snake_case names that do not
// follow Go renames, and durations as Go duration strings ("1.5s").
type statsJSON struct {
	Relay struct {
		Messages                int64  `json:"messages"`
		Events                  int64  `json:"events"`
		Deliveries              int64  `json:"deliveries"`
		DeadLetters             int64  `json:"dead_letters"`
		OldestTransactionAge    string `json:"oldest_transaction_age"`
		OldestTransactionPID    int32  `json:"oldest_transaction_pid"`
		RestoredOffsetsRepaired int64  `json:"restored_offsets_repaired"`
	} `json:"relay"`
	Sender struct {
		Claimed          int64 `json:"claimed"`
		Sent             int64 `json:"sent"`
		TokensPruned     int64 `json:"tokens_pruned"`
		Failed           int64 `json:"failed"`
		RetriesScheduled int64 `json:"retries_scheduled"`
		Released         int64 `json:"released"`
		ConfigAlarms     int64 `json:"config_alarms"`
		QuotaExceeded    int64 `json:"quota_exceeded"`
		QuotaPauses      int64 `json:"quota_pauses"`
		PlatformPauses   int64 `json:"platform_pauses"`
		ClosedBeforePush int64 `json:"closed_before_push"`
		CircuitOpen      int64 `json:"circuit_open"`
		InFlight         int64 `json:"in_flight"`
		InFlightLimit    int64 `json:"in_flight_limit"`
	} `json:"sender"`
	Breaker string `json:"breaker"`
}

// MarshalJSON encodes Stats for a status endpoint or a log line, with
// stable snake_case field names ("relay", "sender", "breaker", then
// "dead_letters", "retries_scheduled"...) and durations as Go duration
// strings: "oldest_transaction_age": "1.5s" ("0s" when there is none).
// A Herald without an FCM client encodes its zero Stats, "breaker": "".
func (s Stats) MarshalJSON() ([]byte, error) {
	var j statsJSON
	r, d := &j.Relay, s.Relay
	r.Messages, r.Events, r.Deliveries, r.DeadLetters = d.Messages, d.Events, d.Deliveries, d.DeadLetters
	r.OldestTransactionAge = d.OldestTransactionAge.Round(time.Millisecond).String()
	r.OldestTransactionPID, r.RestoredOffsetsRepaired = d.OldestTransactionPID, d.RestoredOffsetsRepaired
	w, e := &j.Sender, s.Sender
	w.Claimed, w.Sent, w.TokensPruned, w.Failed, w.RetriesScheduled, w.Released =
		e.Claimed, e.Sent, e.TokensPruned, e.Failed, e.RetriesScheduled, e.Released
	w.ConfigAlarms, w.QuotaExceeded, w.QuotaPauses, w.PlatformPauses = e.ConfigAlarms, e.QuotaExceeded, e.QuotaPauses, e.PlatformPauses
	w.ClosedBeforePush, w.CircuitOpen, w.InFlight, w.InFlightLimit = e.ClosedBeforePush, e.CircuitOpen, e.InFlight, e.InFlightLimit
	j.Breaker = s.Breaker
	return json.Marshal(j)
}
