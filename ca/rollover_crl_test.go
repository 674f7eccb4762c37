package ca

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/store"
)

// rolloverStep moves a's rollover one step on.
type rolloverStep func(ctx context.Context, a *Authority) error

var (
	stepStart = func(ctx context.Context, a *Authority) error {
		_, err := a.StartRollover(ctx, RolloverOptions{}, "test")
		return err
	}
	stepEmergency = func(ctx context.Context, a *Authority) error {
		_, err := a.StartRollover(ctx, RolloverOptions{Emergency: true}, "test")
		return err
	}
	stepAdvance = func(ctx context.Context, a *Authority) error {
		_, err := a.AdvanceRollover(ctx, SerialString(a.Root().Other.SerialNumber), "test")
		return err
	}
	stepAbort = func(ctx context.Context, a *Authority) error {
		_, err := a.AbortRollover(ctx, "test")
		return err
	}
	stepFinish = func(ctx context.Context, a *Authority) error {
		_, _, err := a.FinishRollover(ctx, true, "test")
		return err
	}
)

// The CRL is signed by the key the CA had before a rollover while the new
// key issues (NSS verifies a subject's CRLs with the first CA certificate
// it saw), and otherwise by the issuing key; a phase change re-signs the
// cached CRL.
func TestRolloverCRLSigner(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []rolloverStep
		kek   bool
		// first: the CRL verifies with the CA certificate from before the
		// rollover; else with the rollover's new one.
		first bool
		phase string
	}{
		{"no rollover", nil, false, true, ""},
		{"trust", []rolloverStep{stepStart}, false, true, store.RolloverTrust},
		{"issue", []rolloverStep{stepStart, stepAdvance}, false, true, store.RolloverIssue},
		{"issue, keys sealed", []rolloverStep{stepStart, stepAdvance}, true, true, store.RolloverIssue},
		{"issue, emergency", []rolloverStep{stepEmergency}, false, true, store.RolloverIssue},
		{"issue aborted", []rolloverStep{stepStart, stepAdvance, stepAbort}, false, true, store.RolloverIssue},
		{"issue aborted twice", []rolloverStep{stepStart, stepAdvance, stepAbort, stepAbort}, true, true,
			store.RolloverIssue},
		{"retire", []rolloverStep{stepStart, stepAdvance, stepFinish}, false, false, store.RolloverRetire},
		{"retire, keys sealed", []rolloverStep{stepStart, stepAdvance, stepFinish}, true, false,
			store.RolloverRetire},
		{"retire after an abort", []rolloverStep{stepStart, stepAdvance, stepAbort, stepFinish}, false, true,
			store.RolloverRetire},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			a, st, clock := newTestAuthority(t, KeyECDSAP256)
			if tc.kek {
				kek := newKEK(t)
				root, _, err := Bootstrap(ctx, st, RootConfig{KEK: kek}, clock)
				if err != nil || !root.SealedOnLoad {
					t.Fatalf("seal the CA key: sealed %v, %v", root != nil && root.SealedOnLoad, err)
				}
				a = New(st, root, Config{Clock: clock, Rand: rand.Reader, KEK: kek})
			}
			first := a.Root().Cert
			// Revoked before the rollover, and the CRL fetched after each
			// step: a cached CRL must not outlive its signer.
			early := issueMesh(t, a, "early", mustECDSA(t, elliptic.P256()), 0)
			if _, err := a.RevokeNode(ctx, "early", "test", "test"); err != nil {
				t.Fatal(err)
			}
			if _, err := a.CRL(ctx); err != nil {
				t.Fatal(err)
			}
			var second *x509.Certificate
			for _, step := range tc.steps {
				clock.Add(time.Minute)
				if err := step(ctx, a); err != nil {
					t.Fatal(err)
				}
				if second == nil {
					second = a.Root().Other
					if second.Equal(first) {
						second = a.Root().Cert
					}
				}
				if _, err := a.CRL(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if got := rolloverPhase(a.Root()); got != tc.phase {
				t.Fatalf("phase %q, want %q", got, tc.phase)
			}
			want, other := first, second
			if !tc.first {
				want, other = second, first
			}
			crl := func() *x509.RevocationList {
				t.Helper()
				der, err := a.CRL(ctx)
				if err != nil {
					t.Fatal(err)
				}
				l, err := x509.ParseRevocationList(der)
				if err != nil {
					t.Fatal(err)
				}
				if err := l.CheckSignatureFrom(want); err != nil {
					t.Errorf("the CRL does not verify with the expected CA: %v", err)
				}
				if other != nil && l.CheckSignatureFrom(other) == nil {
					t.Error("the CRL verifies with the other CA")
				}
				if !bytes.Equal(l.AuthorityKeyId, want.SubjectKeyId) {
					t.Errorf("authority key id %x, want %x", l.AuthorityKeyId, want.SubjectKeyId)
				}
				return l
			}
			listed := func(l *x509.RevocationList, serial string) bool {
				return slices.ContainsFunc(l.RevokedCertificateEntries, func(e x509.RevocationListEntry) bool {
					return SerialString(e.SerialNumber) == serial
				})
			}
			if l := crl(); !listed(l, early.cert.Serial) {
				t.Errorf("the CRL does not list %s, revoked before the rollover", early.cert.Serial)
			}
			clock.Add(time.Minute)
			late := issueMesh(t, a, "late", mustECDSA(t, elliptic.P256()), 0)
			if _, err := a.RevokeNode(ctx, "late", "test", "test"); err != nil {
				t.Fatal(err)
			}
			if l := crl(); !listed(l, late.cert.Serial) || !listed(l, early.cert.Serial) {
				t.Errorf("the CRL does not list %s and %s", early.cert.Serial, late.cert.Serial)
			}
		})
	}
}

// In the issue phase the outgoing CA's key is loaded with the issuing one:
// one that does not open or match its certificate fails the load; one the
// record lacks leaves the issuing key to sign the CRL.
func TestLoadRootOutgoingKey(t *testing.T) {
	for _, tc := range []struct {
		name     string
		edit     func(t *testing.T, other *store.CA, kek KEK)
		err      string
		fellBack bool
	}{
		{"sealed", func(*testing.T, *store.CA, KEK) {}, "", false},
		{"in the clear", func(t *testing.T, other *store.CA, kek KEK) {
			var err error
			if other.KeyPEM, err = kek.Open(other.KeyPEM); err != nil {
				t.Fatal(err)
			}
			other.KeyEncryption = KeyPlain
		}, "", false},
		{"sealed under another key-encryption key", func(t *testing.T, other *store.CA, kek KEK) {
			clear, err := kek.Open(other.KeyPEM)
			if err != nil {
				t.Fatal(err)
			}
			if other.KeyPEM, err = newKEK(t).Seal(clear); err != nil {
				t.Fatal(err)
			}
		}, ErrWrongKEK.Error(), false},
		{"another key", func(t *testing.T, other *store.CA, _ KEK) {
			der, err := x509.MarshalPKCS8PrivateKey(mustECDSA(t, elliptic.P256()))
			if err != nil {
				t.Fatal(err)
			}
			other.KeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
			other.KeyEncryption = KeyPlain
		}, "does not match", false},
		{"not in the record", func(_ *testing.T, other *store.CA, _ KEK) {
			other.KeyPEM, other.KeyEncryption = nil, ""
		}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			_, st, clock := newTestAuthority(t, KeyECDSAP256)
			kek := newKEK(t)
			root, _, err := Bootstrap(ctx, st, RootConfig{KEK: kek}, clock)
			if err != nil {
				t.Fatal(err)
			}
			a := New(st, root, Config{Clock: clock, Rand: rand.Reader, KEK: kek})
			for _, step := range []rolloverStep{stepStart, stepAdvance} {
				if err := step(ctx, a); err != nil {
					t.Fatal(err)
				}
			}
			m, err := st.CA(ctx)
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(t, m.Rollover.Other, kek)
			r, err := loadRoot(m, kek)
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("load: %v, want %q", err, tc.err)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			cert, key, fellBack := r.crlSigner()
			want := r.Other
			if tc.fellBack {
				want = r.Cert
			}
			if fellBack != tc.fellBack || !cert.Equal(want) || !publicKeysEqual(cert.PublicKey, key.Public()) {
				t.Errorf("CRL signer %s (fell back %v), want %s", cert.SerialNumber, fellBack, want.SerialNumber)
			}
		})
	}
}
