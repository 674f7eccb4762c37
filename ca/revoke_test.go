package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/ipsecca/ipsecca/store"
)

func TestParseSerial(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"1a2b", "1a2b", true},
		{"1A:2B", "1a2b", true},
		{"00:1a:2b", "1a2b", true},
		{"0x01A2B", "1a2b", true},
		{" 1a2b\n", "1a2b", true},
		{"0", "0", true},
		{"", "", false},
		{"xyz", "", false},
		{"1a-2b", "", false},
		{"-1", "", false},
		{"0x", "", false},
		{"ff0102030405060708090a0b0c0d0e0f1011121314", "", false}, // 21 octets
		{"000102030405060708090a0b0c0d0e0f1011121314", "102030405060708090a0b0c0d0e0f1011121314", true},
	} {
		got, err := ParseSerial(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSerial(%q) = %q, %v; want %q ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil {
			wantReason(t, err, ReasonSerialInvalid)
		}
	}
}

func TestParseRevocationReason(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code int
		ok   bool
	}{
		{"", 0, true},
		{"unspecified", 0, true},
		{"keyCompromise", 1, true},
		{"KEYCOMPROMISE", 1, true},
		{"cACompromise", 2, true},
		{"affiliationChanged", 3, true},
		{"superseded", 4, true},
		{"cessationOfOperation", 5, true},
		{"privilegeWithdrawn", 9, true},
		{"aACompromise", 10, true},
		{"certificateHold", 0, false},
		{"removeFromCRL", 0, false},
		{"stolen", 0, false},
	} {
		code, err := ParseRevocationReason(tc.in)
		if (err == nil) != tc.ok || code != tc.code {
			t.Errorf("ParseRevocationReason(%q) = %d, %v; want %d ok=%v", tc.in, code, err, tc.code, tc.ok)
		}
		if err != nil {
			wantReason(t, err, ReasonRevocationReason)
			if !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("%q: %v is not an invalid request", tc.in, err)
			}
		}
		if tc.ok && ReasonName(code) == "" {
			t.Errorf("no name for code %d", code)
		}
	}
}

// A revoked token is refused by Enroll with the code of an expired one;
// revoking is idempotent; a used token cannot be revoked.
func TestRevokedTokenRefused(t *testing.T) {
	a, _, _ := newTestAuthority(t, KeyECDSAP256)
	ctx := context.Background()
	tok, rec, err := a.CreateToken(ctx, "node-a", "", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	for i, wantAlready := range []bool{false, true} {
		got, already, err := a.RevokeToken(ctx, tok, "admin:x") // the whole token names it
		if err != nil || already != wantAlready || got.ID != rec.ID || got.RevokedAt.IsZero() {
			t.Fatalf("revoke %d: %+v %v %v", i, got, already, err)
		}
	}
	_, err = a.EnrollWithToken(ctx, tok, makeCSR(t, csrOpts{cn: "node-a"}))
	wantReason(t, err, ReasonTokenRevoked)
	if !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("revoked token: %v; want the class of an expired token (unauthenticated)", err)
	}
	tok2, _, err := a.CreateToken(ctx, "node-b", "", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.EnrollWithToken(ctx, tok2, makeCSR(t, csrOpts{cn: "node-b"})); err != nil {
		t.Fatal(err)
	}
	_, _, err = a.RevokeToken(ctx, tok2, "admin:x")
	wantReason(t, err, ReasonTokenUsedNoRevoke)
	var nf *NotFoundError
	if _, _, err := a.RevokeToken(ctx, "0123456789abcdef", "admin:x"); !errors.As(err, &nf) {
		t.Fatalf("unknown token: %v", err)
	}
	_, _, err = a.RevokeToken(ctx, "nope", "admin:x")
	wantReason(t, err, ReasonTokenIDInvalid)
}

// RevokeNode: an RFC 5280 reason name becomes the CRL entries' reason
// code (free text stays unspecified); revoking again reports
// store.ErrAlreadyRevoked; a node nothing is known of is not found.
func TestRevokeNodeReasonsAndIdempotence(t *testing.T) {
	a, _, _ := newTestAuthority(t, KeyECDSAP256)
	ctx := context.Background()
	serials := map[string]string{}
	for _, n := range []string{"node-k", "node-f"} {
		tok, _, err := a.CreateToken(ctx, n, "", 0, "test")
		if err != nil {
			t.Fatal(err)
		}
		rec, err := a.EnrollWithToken(ctx, tok, makeCSR(t, csrOpts{cn: n}))
		if err != nil {
			t.Fatal(err)
		}
		serials[n] = rec.Serial
	}
	for _, tc := range []struct{ node, reason string }{{"node-k", "keyCompromise"}, {"node-f", "decommissioned"}} {
		if n, err := a.RevokeNode(ctx, tc.node, tc.reason, "admin:x"); err != nil || n != 1 {
			t.Fatalf("revoke %s: %d %v", tc.node, n, err)
		}
	}
	if _, err := a.RevokeNode(ctx, "node-k", "", "admin:x"); !errors.Is(err, store.ErrAlreadyRevoked) {
		t.Fatalf("second revoke: %v; want ErrAlreadyRevoked", err)
	}
	var nf *NotFoundError
	if _, err := a.RevokeNode(ctx, "nobody", "", "admin:x"); !errors.As(err, &nf) {
		t.Fatalf("unknown node: %v; want *NotFoundError", err)
	}
	der, err := a.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, e := range l.RevokedCertificateEntries {
		got[SerialString(e.SerialNumber)] = e.ReasonCode
	}
	if got[serials["node-k"]] != 1 || got[serials["node-f"]] != 0 || len(got) != 2 {
		t.Fatalf("CRL reason codes %v; want node-k's 1 (keyCompromise), node-f's 0", got)
	}
}
