package herald_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
)

// ExampleHerald_Status serves the deployment's status as JSON on the
// host's own (authenticated) health endpoint: durations are readable
// ("oldest_due_age": "1.2s"), and any process on the database, one
// without an FCM client included, sees every instance's work.
func ExampleHerald_Status() {
	var h *herald.Herald // from herald.New
	http.HandleFunc("/internal/herald/status", func(w http.ResponseWriter, r *http.Request) {
		s, err := h.Status(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s)
	})
}

// ExampleHerald_QueryDeliveries answers "why did Alice get nothing since
// yesterday?": her deliveries, page by page, then one notification's
// timeline with every attempt, then a retry of what FCM refused.
func ExampleHerald_QueryDeliveries() {
	var h *herald.Herald // from herald.New
	ctx := context.Background()
	q := herald.DeliveryQuery{Recipient: "alice", Since: time.Now().Add(-24 * time.Hour)}
	var last uuid.UUID
	for {
		page, err := h.QueryDeliveries(ctx, q)
		if err != nil {
			return
		}
		for _, d := range page.Deliveries {
			fmt.Println(d.ID, d.TokenHash, d.Status, d.Code, d.LastError)
			last = d.NotificationID
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}

	tl, err := h.Timeline(ctx, last)
	if err != nil {
		return
	}
	for _, d := range tl.Deliveries {
		for _, a := range d.Attempts {
			fmt.Println(d.TokenHash, a.Number, a.Outcome, a.Code, a.At.Format(time.RFC3339))
		}
	}

	retried, err := h.RetryFailedWhere(ctx, herald.DeliveryQuery{
		Status: notification.StatusFailed, Recipient: "alice", Code: "UNAVAILABLE"})
	fmt.Println(retried, err)
}
