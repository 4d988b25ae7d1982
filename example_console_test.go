package herald_test

import (
	"net/http"

	"github.com/herald-push/herald"
)

// ExampleHerald_Console mounts the operator console behind the host's own
// authentication: the console has none, and whoever reaches it may retry,
// replay and cancel. It is served under a path ending in "/", with that
// prefix stripped.
func ExampleHerald_Console() {
	var h *herald.Herald                 // from herald.New; one made without an FCM client will do
	var isAdmin func(*http.Request) bool // the host's own session check

	requireAdmin := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !isAdmin(r) {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	console := h.Console(herald.ConsoleOptions{Title: "Herald · production"})
	mux := http.NewServeMux()
	mux.Handle("/admin/herald/", requireAdmin(http.StripPrefix("/admin/herald", console)))
	_ = http.ListenAndServe("127.0.0.1:8080", mux)
}
