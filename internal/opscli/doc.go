// Package opscli holds the operator commands of the herald binary, which
// work on the database in DATABASE_URL and never start one: `herald
// migrate`, `herald status`, `herald deliveries list|retry|timeline|cancel`
// and `herald deadletters list|replay`. They act only through the facade's
// operator methods, on a Herald made without an FCM client.
package opscli
