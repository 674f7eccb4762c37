package ca

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"
)

// Bootstrap tokens look like "<id>.<secret>": 16 hex digits naming the
// token, a dot, 48 hex digits (192 bits) of secret. Only SHA-256(secret)
// is stored; the id lets the store find the record without the secret.
const (
	tokenIDLen     = 16
	tokenSecretLen = 48
	// DefaultTokenTTL is how long a new token stays valid.
	DefaultTokenTTL = time.Hour
	// MaxTokenTTL bounds a token's life.
	MaxTokenTTL = 7 * 24 * time.Hour
)

// newToken draws a token from rand and returns it with its id and hash.
func newToken(rand io.Reader) (token, id string, hash []byte, err error) {
	var b [tokenIDLen/2 + tokenSecretLen/2]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return "", "", nil, fmt.Errorf("ca: read token randomness: %w", err)
	}
	id = hex.EncodeToString(b[:tokenIDLen/2])
	secret := hex.EncodeToString(b[tokenIDLen/2:])
	sum := sha256.Sum256([]byte(secret))
	return id + "." + secret, id, sum[:], nil
}

// ParseToken splits a token into id and secret, checking its shape only.
// The error never contains the token.
func ParseToken(token string) (id, secret string, err error) {
	token = strings.TrimSpace(token)
	id, secret, ok := strings.Cut(token, ".")
	if !ok || len(id) != tokenIDLen || len(secret) != tokenSecretLen || !isLowerHex(id) || !isLowerHex(secret) {
		return "", "", deny(
			ErrUnauthenticated,
			ReasonTokenInvalid,
			"the bootstrap token is malformed (want <16 hex>.<48 hex>)",
		)
	}
	return id, secret, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// secretMatches compares SHA-256(secret) with the stored hash in constant time.
func secretMatches(secret string, hash []byte) bool {
	sum := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(sum[:], hash) == 1
}
