package ca

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/ipsecca/ipsecca/internal/testclock"
	"github.com/ipsecca/ipsecca/store/bolt"
)

func newKEK(t *testing.T) KEK {
	b := make([]byte, 32)
	rand.Read(b)
	return KEK(b)
}

func TestKEKSealsTheCAKey(t *testing.T) {
	ctx := context.Background()
	clock := testclock.New(t0)
	kek := newKEK(t)
	dir := t.TempDir()
	st, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r1, _, err := Bootstrap(ctx, st, RootConfig{KEK: kek}, clock)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := st.CA(ctx)
	if stored.KeyEncryption != KeyAES256GCM || bytes.Contains(stored.KeyPEM, []byte("PRIVATE KEY")) {
		t.Fatal("CA key stored in the clear despite a KEK")
	}
	if _, _, err := Bootstrap(ctx, st, RootConfig{}, clock); err == nil ||
		!strings.Contains(err.Error(), "key-encryption key") {
		t.Fatalf("load without the KEK: %v", err)
	}
	if _, _, err := Bootstrap(ctx, st, RootConfig{KEK: newKEK(t)}, clock); !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("load with a wrong KEK: %v", err)
	}
	r2, _, err := Bootstrap(ctx, st, RootConfig{KEK: kek}, clock)
	if err != nil || r2.Fingerprint() != r1.Fingerprint() {
		t.Fatalf("reload with the KEK: %v", err)
	}
	// A renewal keeps the key sealed.
	a := New(st, r2, Config{Clock: clock, Rand: rand.Reader, KEK: kek})
	if _, err := a.RenewRoot(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	stored, _ = st.CA(ctx)
	if stored.KeyEncryption != KeyAES256GCM {
		t.Fatal("renewal stored the key in the clear")
	}
	st.Close()
}

func TestKEKSealsAnExistingClearKey(t *testing.T) {
	ctx := context.Background()
	clock := testclock.New(t0)
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, _, err := Bootstrap(ctx, st, RootConfig{}, clock); err != nil {
		t.Fatal(err)
	}
	kek := newKEK(t)
	if _, _, err := Bootstrap(ctx, st, RootConfig{KEK: kek}, clock); err != nil {
		t.Fatal(err)
	}
	stored, _ := st.CA(ctx)
	if stored.KeyEncryption != KeyAES256GCM {
		t.Fatal("existing clear key not sealed when a KEK was given")
	}
}

func TestParseKEK(t *testing.T) {
	if _, err := ParseKEK("AAAA"); err == nil {
		t.Error("3-byte KEK accepted")
	}
	if _, err := ParseKEK("not base64!!"); err == nil {
		t.Error("garbage KEK accepted")
	}
	if k, err := ParseKEK("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"); err != nil || len(k) != 32 {
		t.Errorf("valid KEK: %v", err)
	}
}

// TestKEKOpensKeysSealedBefore: keys sealed before the switch to the module's
// random nonce (AES-256-GCM with a nonce drawn by ipsecca, laid out as
// nonce || ciphertext) open unchanged, and what Seal makes has that layout.
func TestKEKOpensKeysSealedBefore(t *testing.T) {
	kek := newKEK(t)
	plaintext := []byte("-----BEGIN EC PRIVATE KEY-----\n...")
	var old []byte
	fips140.WithoutEnforcement(func() { // GCM with a caller's nonce, refused under fips140=only
		block, err := aes.NewCipher(kek)
		if err != nil {
			t.Fatal(err)
		}
		g, err := cipher.NewGCM(block)
		if err != nil {
			t.Fatal(err)
		}
		nonce := make([]byte, g.NonceSize())
		rand.Read(nonce)
		old = g.Seal(nonce, nonce, plaintext, kekAD)
	})
	if got, err := kek.Open(old); err != nil || !bytes.Equal(got, plaintext) {
		t.Fatalf("Open(key sealed before) = %q, %v", got, err)
	}
	sealed, err := kek.Seal(plaintext)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != len(old) {
		t.Errorf("sealed %d bytes, want %d (nonce || ciphertext || tag)", len(sealed), len(old))
	}
	if _, err := newKEK(t).Open(sealed); !errors.Is(err, ErrWrongKEK) {
		t.Errorf("Open with another KEK: %v, want ErrWrongKEK", err)
	}
	if _, err := kek.Open(sealed[:10]); !errors.Is(err, ErrWrongKEK) {
		t.Errorf("Open of 10 bytes: %v, want ErrWrongKEK", err)
	}
}
