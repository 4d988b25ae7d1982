package adapters

import (
	"crypto/sha256"
	"encoding/hex"
)

// TokenHash is how Herald shows a device token in logs and operator
// output: the first 12 hex digits of its SHA-256, enough to correlate, not
// enough to send to. Tokens themselves are never logged.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "tok_" + hex.EncodeToString(sum[:6])
}
