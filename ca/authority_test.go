package ca

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/internal/testclock"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
)

func TestRootProfile(t *testing.T) {
	for _, kt := range KeyTypes {
		t.Run(string(kt), func(t *testing.T) {
			a, _, _ := newTestAuthority(t, kt)
			r := a.Root().Cert
			if !r.NotAfter.Equal(r.NotBefore.AddDate(10, 0, 0)) {
				t.Errorf("root validity %s..%s is not exactly 10 years", r.NotBefore, r.NotAfter)
			}
			if !r.NotBefore.Equal(t0) {
				t.Errorf("root NotBefore %s, want the clock's %s", r.NotBefore, t0)
			}
			if !r.IsCA || !r.BasicConstraintsValid || r.MaxPathLen != 0 || !r.MaxPathLenZero {
				t.Errorf("root constraints: CA=%v pathlen=%d zero=%v", r.IsCA, r.MaxPathLen, r.MaxPathLenZero)
			}
			if r.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
				t.Errorf("root key usage %v", r.KeyUsage)
			}
			if len(r.SubjectKeyId) == 0 {
				t.Error("root has no SKID")
			}
			if got := r.Subject.String(); got != "CN=ipsecca root CA,O=ipsecca" {
				t.Errorf("root subject %q", got)
			}
			if err := r.CheckSignatureFrom(r); err != nil {
				t.Errorf("root is not self-signed: %v", err)
			}
			wantAlg := map[KeyType]x509.PublicKeyAlgorithm{KeyRSA2048: x509.RSA, KeyRSA3072: x509.RSA, KeyRSA4096: x509.RSA}[kt]
			if wantAlg == 0 {
				wantAlg = x509.ECDSA
			}
			if r.PublicKeyAlgorithm != wantAlg {
				t.Errorf("root key algorithm %v, want %v", r.PublicKeyAlgorithm, wantAlg)
			}
		})
	}
}

func TestBootstrapIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	clock := testclock.New(t0)
	ctx := context.Background()
	st, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r1, created, err := Bootstrap(ctx, st, RootConfig{}, clock)
	if err != nil || !created {
		t.Fatal(created, err)
	}
	st.Close()
	st, err = bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r2, created, err := Bootstrap(ctx, st, RootConfig{KeyType: KeyRSA2048}, clock)
	if err != nil || created {
		t.Fatal(created, err)
	}
	if r1.Fingerprint() != r2.Fingerprint() || !bytes.Equal(r1.CertPEM, r2.CertPEM) {
		t.Fatal("reopened store gave a different root")
	}
}

var ovsSubjectRe = regexp.MustCompile(`CN=(.+?),`)

func TestNodeCertificateProfile(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  csrOpts
		ku   x509.KeyUsage
	}{
		{"ecdsa", csrOpts{cn: "node-a", org: "ovnkubernetes"}, x509.KeyUsageDigitalSignature},
		{"rsa", csrOpts{cn: "node-a", key: mustRSA(t, 2048)}, x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _, clock := newTestAuthority(t, KeyECDSAP256)
			ctx := context.Background()
			clock.Add(time.Hour)
			tok, _, err := a.CreateToken(ctx, "node-a", "", 0, "test")
			if err != nil {
				t.Fatal(err)
			}
			rec, err := a.EnrollWithToken(ctx, tok, makeCSR(t, tc.key))
			if err != nil {
				t.Fatal(err)
			}
			c, err := x509.ParseCertificate(rec.DER)
			if err != nil {
				t.Fatal(err)
			}
			now := clock.Now()
			if want := now.Add(-Backdate); !c.NotBefore.Equal(want) {
				t.Errorf("NotBefore %s, want now-%s = %s", c.NotBefore, Backdate, want)
			}
			if !c.NotAfter.Equal(c.NotBefore.AddDate(5, 0, 0)) {
				t.Errorf("validity %s..%s is not exactly 5 years", c.NotBefore, c.NotAfter)
			}
			life := c.NotAfter.Sub(c.NotBefore)
			if d := rec.RotateAfter.Sub(c.NotBefore) - life*9/10; d < -time.Second || d > time.Second {
				t.Errorf("rotate_after %s is not NotBefore + 90%%", rec.RotateAfter)
			}
			if got := c.Subject.String(); got != "CN=node-a,O=ipsecca" {
				t.Errorf("subject %q, want CA-built CN=node-a,O=ipsecca", got)
			}
			if m := ovsSubjectRe.FindStringSubmatch(c.Subject.String()); m == nil || m[1] != "node-a" {
				t.Errorf("ovs-monitor-ipsec regex does not find the CN in %q", c.Subject.String())
			}
			if !slices.Equal(c.DNSNames, []string{"node-a"}) || len(c.IPAddresses) != 0 {
				t.Errorf("SANs %v %v", c.DNSNames, c.IPAddresses)
			}
			if c.KeyUsage != tc.ku {
				t.Errorf("key usage %v, want %v", c.KeyUsage, tc.ku)
			}
			if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) ||
				len(c.UnknownExtKeyUsage) != 1 ||
				!c.UnknownExtKeyUsage[0].Equal(OIDExtKeyUsageIPSecIKE) {
				t.Errorf("EKU %v %v", c.ExtKeyUsage, c.UnknownExtKeyUsage)
			}
			if c.IsCA || !bytes.Equal(c.AuthorityKeyId, a.Root().Cert.SubjectKeyId) {
				t.Errorf("CA=%v AKID=%x root SKID=%x", c.IsCA, c.AuthorityKeyId, a.Root().Cert.SubjectKeyId)
			}
			// RFC 7093 method 1 (SHA-256, leftmost 160 bits), not RFC 5280's SHA-1, which FIPS 140-3 mode refuses.
			var spki struct {
				Algorithm pkix.AlgorithmIdentifier
				PublicKey asn1.BitString
			}
			if _, err := asn1.Unmarshal(c.RawSubjectPublicKeyInfo, &spki); err != nil {
				t.Fatal(err)
			}
			if sum := sha256.Sum256(spki.PublicKey.Bytes); !bytes.Equal(c.SubjectKeyId, sum[:20]) {
				t.Errorf("subject key id %x, want SHA-256 of the key truncated to 160 bits %x", c.SubjectKeyId,
					sum[:20])
			}
			// 20 bytes at most (RFC 5280); the issue time, then 96 random bits.
			if b := c.SerialNumber.Bytes(); len(b) != 20 || int64(binary.BigEndian.Uint64(b)) != now.UnixNano() {
				t.Errorf("serial %x: want 20 bytes starting with the issue time %x", b, now.UnixNano())
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: a.Root().Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("does not verify against the root: %v", err)
			}
			if _, ok := c.PublicKey.(*rsa.PublicKey); ok != (tc.name == "rsa") {
				t.Error("public key is not the CSR's")
			}
		})
	}
}

func TestNodeCertCappedAtRoot(t *testing.T) {
	a, _, clock := newTestAuthority(t, KeyECDSAP256)
	ctx := context.Background()
	clock.Add(8 * 365 * 24 * time.Hour) // 2 years of root life left
	tok, _, err := a.CreateToken(ctx, "node-a", "", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := a.EnrollWithToken(ctx, tok, makeCSR(t, csrOpts{cn: "node-a"}))
	if err != nil {
		t.Fatal(err)
	}
	if !rec.NotAfter.Equal(a.Root().Cert.NotAfter) {
		t.Fatalf("NotAfter %s, want capped at root's %s", rec.NotAfter, a.Root().Cert.NotAfter)
	}
	if !rec.RotateAfter.Before(rec.NotAfter) {
		t.Fatal("rotate_after not before NotAfter")
	}
}

func wantReason(t *testing.T, err error, r Reason) {
	t.Helper()
	var de *DenyError
	if !errors.As(err, &de) || de.Reason != r {
		t.Fatalf("want denial %s, got %v", r, err)
	}
}

func TestTokenLifecycle(t *testing.T) {
	a, st, clock := newTestAuthority(t, KeyECDSAP256)
	ctx := context.Background()
	csr := makeCSR(t, csrOpts{cn: "node-a"})

	tok, rec, err := a.CreateToken(ctx, "node-a", "", time.Minute, "test")
	if err != nil {
		t.Fatal(err)
	}
	stored, err := st.Token(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, secret, _ := ParseToken(tok)
	if bytes.Contains(stored.SecretHash, []byte(secret)) || len(stored.SecretHash) != 32 {
		t.Fatal("token secret stored in the clear")
	}

	// Wrong secret for a real id, unknown id, malformed.
	id, _, _ := ParseToken(tok)
	_, err = a.EnrollWithToken(ctx, id+"."+string(bytes.Repeat([]byte("0"), tokenSecretLen)), csr)
	wantReason(t, err, ReasonTokenInvalid)
	_, err = a.EnrollWithToken(ctx, "0000000000000000."+secret, csr)
	wantReason(t, err, ReasonTokenInvalid)
	_, err = a.EnrollWithToken(ctx, "garbage", csr)
	wantReason(t, err, ReasonTokenInvalid)
	// A denied CSR does not consume the token.
	_, err = a.EnrollWithToken(ctx, tok, makeCSR(t, csrOpts{cn: "node-b"}))
	wantReason(t, err, ReasonCNNotCallersNode)

	first, err := a.EnrollWithToken(ctx, tok, csr)
	if err != nil {
		t.Fatalf("first use: %v", err)
	}
	// A retry with the same key (the reply was lost) gets the same
	// certificate; another key gets token-used.
	again, err := a.EnrollWithToken(ctx, tok, csr)
	if err != nil || again.Serial != first.Serial {
		t.Fatalf("retry with the same key: %v, %v; want serial %s", again, err, first.Serial)
	}
	_, err = a.EnrollWithToken(ctx, tok, makeCSR(t, csrOpts{cn: "node-a"}))
	wantReason(t, err, ReasonTokenUsed)

	tok2, _, err := a.CreateToken(ctx, "node-a", "", time.Minute, "test")
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute)
	_, err = a.EnrollWithToken(ctx, tok2, csr)
	wantReason(t, err, ReasonTokenExpired)

	// Every decision on a recognised token is in the audit log (the three
	// anonymous ones above, a wrong secret, an unknown id and a malformed
	// token, are not: anyone can make them), and no record carries the
	// secret.
	events, _, err := st.ListEvents(ctx, store.EventFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	denied := 0
	for _, e := range events {
		if e.Type == store.EventDenied {
			denied++
		}
		for _, v := range e.Detail {
			if bytes.Contains([]byte(v), []byte(secret)) {
				t.Fatalf("audit record %d holds the token secret", e.Seq)
			}
		}
	}
	if denied != 3 {
		t.Fatalf("%d denial events, want 3 (CN, token used, token expired)", denied)
	}
}

func TestNameHeldByOtherNode(t *testing.T) {
	a, _, _ := newTestAuthority(t, KeyECDSAP256)
	ctx := context.Background()
	uuid := "0f2c41c6-1b64-4f0e-9d5e-8a1f3e0c2b7a"
	tokX, _, err := a.CreateToken(ctx, "worker-x", uuid, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	tokY, _, err := a.CreateToken(ctx, "worker-y", uuid, 0, "test") // both pending: allowed
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.EnrollWithToken(ctx, tokX, makeCSR(t, csrOpts{cn: uuid})); err != nil {
		t.Fatal(err)
	}
	_, err = a.EnrollWithToken(ctx, tokY, makeCSR(t, csrOpts{cn: uuid}))
	wantReason(t, err, ReasonNameHeld)
	if !errors.Is(err, ErrConflict) {
		t.Fatal("name held is not a conflict")
	}
	_, _, err = a.CreateToken(ctx, "worker-y", uuid, 0, "test")
	wantReason(t, err, ReasonNameHeld)
	// The holder itself may get a new token (re-enrolment after expiry).
	if _, _, err := a.CreateToken(ctx, "worker-x", uuid, 0, "test"); err != nil {
		t.Fatal(err)
	}
}

func TestRenewAndAuthenticate(t *testing.T) {
	a, st, clock := newTestAuthority(t, KeyECDSAP256)
	ctx := context.Background()
	tok, _, _ := a.CreateToken(ctx, "node-a", "", 0, "test")
	first, err := a.EnrollWithToken(ctx, tok, makeCSR(t, csrOpts{cn: "node-a"}))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(first.DER)
	caller, err := a.Authenticate(ctx, leaf)
	if err != nil || caller.Node != "node-a" || caller.Kind != store.KindNode {
		t.Fatalf("authenticate: %+v %v", caller, err)
	}
	second, err := a.Renew(ctx, caller, makeCSR(t, csrOpts{cn: "node-a"}))
	if err != nil {
		t.Fatal(err)
	}
	if second.Serial == first.Serial {
		t.Fatal("renewal reused the serial")
	}
	old, _ := st.Cert(ctx, first.Serial)
	if old.State != store.StateSuperseded || old.SupersededBy != second.Serial {
		t.Fatalf("old cert state %s superseded_by %s", old.State, old.SupersededBy)
	}
	// A renewal for another name is refused.
	_, err = a.Renew(ctx, caller, makeCSR(t, csrOpts{cn: "node-b"}))
	wantReason(t, err, ReasonCNNotCallersNode)
	// Admin certificates cannot renew node certs.
	_, err = a.Renew(
		ctx,
		Caller{Kind: store.KindAdmin, Node: "ipsecca-admin"},
		makeCSR(t, csrOpts{cn: "ipsecca-admin"}),
	)
	wantReason(t, err, ReasonCallerNotNode)
	// After expiry the certificate no longer authenticates.
	clock.Add(5*365*24*time.Hour + 48*time.Hour)
	_, err = a.Authenticate(ctx, leaf)
	wantReason(t, err, ReasonCallerExpired)
	// A certificate this CA never stored does not authenticate.
	other, _, _ := newTestAuthority(t, KeyECDSAP256)
	tokO, _, _ := other.CreateToken(ctx, "node-a", "", 0, "test")
	foreign, err := other.EnrollWithToken(ctx, tokO, makeCSR(t, csrOpts{cn: "node-a"}))
	if err != nil {
		t.Fatal(err)
	}
	fleaf, _ := x509.ParseCertificate(foreign.DER)
	_, err = a.Authenticate(ctx, fleaf)
	wantReason(t, err, ReasonCallerUnknown)
}

func TestIssueForNodeKubernetesPath(t *testing.T) {
	a, st, clock := newTestAuthority(t, KeyECDSAP256)
	ctx := context.Background()
	req := NodeRequest{
		CSRPEM:      makeCSR(t, csrOpts{cn: "0f2c41c6-1b64-4f0e-9d5e-8a1f3e0c2b7a"}),
		Identity:    Identity{Node: "worker-1", CN: "0f2c41c6-1b64-4f0e-9d5e-8a1f3e0c2b7a"},
		Via:         "kube",
		Actor:       "system:ovn-node:worker-1",
		RequestUID:  "uid-1",
		MaxLifetime: 24 * time.Hour,
	}
	c, err := a.IssueForNode(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.NotAfter.Sub(c.NotBefore); got != 24*time.Hour {
		t.Fatalf("lifetime %s, want the requested 24h", got)
	}
	if c.IssuedVia != "kube" || c.RequestUID != "uid-1" {
		t.Fatalf("record %+v", c)
	}
	// The same CSR UID never gets a second certificate.
	if _, err := a.IssueForNode(ctx, req); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second issue for one UID: %v", err)
	}
	if got, err := st.CertByRequest(ctx, "uid-1"); err != nil || got.Serial != c.Serial {
		t.Fatalf("by request: %v %v", got, err)
	}
	req.RequestUID, req.MaxLifetime = "uid-2", time.Minute
	_, err = a.IssueForNode(ctx, req)
	wantReason(t, err, ReasonLifetimeTooShort)
	req.MaxLifetime = 50 * 365 * 24 * time.Hour // longer than 5 years: capped
	if c, err = a.IssueForNode(ctx, req); err != nil || !c.NotAfter.Equal(c.NotBefore.AddDate(5, 0, 0)) {
		t.Fatalf("long request: %v %v", c, err)
	}
	_ = clock
}
