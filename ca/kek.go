package ca

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// KEK is a key-encryption key: 32 bytes for AES-256-GCM. The CA key is
// stored sealed under it when one is configured.
type KEK []byte

// KeyEncryption names how a stored CA key is protected.
const (
	KeyPlain     = ""          // PEM in the clear (file permissions only)
	KeyAES256GCM = "aes256gcm" // sealed under a KEK: nonce || ciphertext
)

// ErrWrongKEK means the CA key does not open with the given KEK.
var ErrWrongKEK = errors.New("ca: the CA key does not open with this key-encryption key")

// ParseKEK decodes a KEK given as base64 (standard or URL alphabet) of
// exactly 32 bytes, as written by `head -c32 /dev/urandom | base64`.
func ParseKEK(s string) (KEK, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != 32 {
				return nil, fmt.Errorf(
					"ca: key-encryption key is %d bytes; want 32 (base64 of 32 random bytes)",
					len(b),
				)
			}
			return KEK(b), nil
		}
	}
	return nil, errors.New("ca: key-encryption key is not base64")
}

// aead is AES-256-GCM with a random 96-bit nonce drawn by the Go
// cryptographic module and prepended to the ciphertext: the FIPS 140-3
// approved form (GCM with a caller's nonce is refused in fips140=only), and
// the same layout as the "nonce || ciphertext" sealed before it, so keys
// sealed by earlier versions open unchanged.
func (k KEK) aead() (cipher.AEAD, error) {
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

// additional data binds a sealed key to its purpose.
var kekAD = []byte("ipsecca ca key v1")

// Seal encrypts plaintext under k. The nonce comes from the Go
// cryptographic module's own random source (not a parameter: FIPS 140-3
// wants the module to draw it).
func (k KEK) Seal(plaintext []byte) ([]byte, error) {
	g, err := k.aead()
	if err != nil {
		return nil, err
	}
	return g.Seal(nil, nil, plaintext, kekAD), nil
}

// Open decrypts what Seal produced.
func (k KEK) Open(sealed []byte) ([]byte, error) {
	g, err := k.aead()
	if err != nil {
		return nil, err
	}
	if len(sealed) < g.Overhead() {
		return nil, ErrWrongKEK
	}
	pt, err := g.Open(nil, nil, sealed, kekAD)
	if err != nil {
		return nil, ErrWrongKEK
	}
	return pt, nil
}
