// Package opscli holds the operator commands of the herald binary, which
// work on the database in DATABASE_URL and never start one: `herald
// migrate`, `herald deliveries list|retry` and `herald deadletters
// list|replay`.
package opscli
