// Package demo is `herald demo`: a course-and-comments host application
// that raises events in its own transactions, through everyday traffic, an
// FCM outage and throttling, and prints what reached whom. It runs on
// DATABASE_URL and real FCM when configured, else on a throwaway Postgres
// and the fake FCM.
package demo
