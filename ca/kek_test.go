package ca

import (
	"bytes"
	"context"
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
