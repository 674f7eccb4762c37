package ca

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
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

func (k KEK) aead() (cipher.AEAD, error) {
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// additional data binds a sealed key to its purpose.
var kekAD = []byte("ipsecca ca key v1")

// Seal encrypts plaintext under k with a random nonce from rand.
func (k KEK) Seal(rand io.Reader, plaintext []byte) ([]byte, error) {
	g, err := k.aead()
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, g.NonceSize())
	if _, err := io.ReadFull(rand, nonce); err != nil {
		return nil, err
	}
	return g.Seal(nonce, nonce, plaintext, kekAD), nil
}

// Open decrypts what Seal produced.
func (k KEK) Open(sealed []byte) ([]byte, error) {
	g, err := k.aead()
	if err != nil {
		return nil, err
	}
	if len(sealed) < g.NonceSize() {
		return nil, ErrWrongKEK
	}
	pt, err := g.Open(nil, sealed[:g.NonceSize()], sealed[g.NonceSize():], kekAD)
	if err != nil {
		return nil, ErrWrongKEK
	}
	return pt, nil
}
