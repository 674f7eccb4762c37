package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ipsecca/ipsecca/ca"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
)

// pairFrom makes a TLS pair of an issued certificate and its key.
func pairFrom(t *testing.T, resp *ipseccav1.IssueResponse, key *ecdsa.PrivateKey) *tls.Certificate {
	t.Helper()
	block, _ := pem.Decode(resp.GetCertificate().GetCertificatePem())
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key, Leaf: leaf}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func wantDenied(t *testing.T, what string, err error, code codes.Code, reason string) {
	t.Helper()
	if status.Code(err) != code || ReasonOf(err) != reason {
		t.Fatalf("%s: %v, want %s (%s)", what, err, code, reason)
	}
}

// TestOnlyActiveCertificateAuthenticates (issue point 2): a superseded node
// certificate can neither renew nor watch; the one exception is a Renew
// with the immediately superseded certificate and its successor's key (the
// node lost the reply), which returns that successor.
func TestOnlyActiveCertificateAuthenticates(t *testing.T) {
	c := startCA(t)
	ctx := context.Background()
	key1 := newKey(t)
	tok, err := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t))).
		CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	r1, err := ipseccav1.NewNodeServiceClient(c.conn(t, nil)).
		Enroll(ctx, &ipseccav1.EnrollRequest{Token: tok.GetToken(), CsrPem: csrFor(t, key1, "node-a")})
	if err != nil {
		t.Fatal(err)
	}
	gen1 := pairFrom(t, r1, key1)
	key2 := newKey(t)
	r2, err := ipseccav1.NewNodeServiceClient(c.conn(t, gen1)).
		Renew(ctx, &ipseccav1.RenewRequest{CsrPem: csrFor(t, key2, "node-a")})
	if err != nil {
		t.Fatal(err)
	}
	gen2 := pairFrom(t, r2, key2)

	old := ipseccav1.NewNodeServiceClient(c.conn(t, gen1))
	// The lost reply: the same key as the successor gets the successor.
	again, err := old.Renew(ctx, &ipseccav1.RenewRequest{CsrPem: csrFor(t, key2, "node-a")})
	if err != nil || again.GetCertificate().GetSerial() != r2.GetCertificate().GetSerial() {
		t.Fatalf(
			"renew retry with the successor's key: %v %v, want serial %s",
			again.GetCertificate().GetSerial(),
			err,
			r2.GetCertificate().GetSerial(),
		)
	}
	// Any other key: refused, and nothing new is issued.
	_, err = old.Renew(ctx, &ipseccav1.RenewRequest{CsrPem: csrFor(t, newKey(t), "node-a")})
	wantDenied(t, "renew with a superseded certificate", err, codes.Unauthenticated, "certificate-superseded")
	w, err := old.Watch(ctx, &ipseccav1.WatchRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	wantDenied(t, "watch with a superseded certificate", err, codes.Unauthenticated, "certificate-superseded")
	_, err = old.ReportInventory(ctx, &ipseccav1.ReportInventoryRequest{})
	wantDenied(t, "inventory with a superseded certificate", err, codes.Unauthenticated, "certificate-superseded")

	// Two generations old, after an admin rotation: refused even with the key of the then successor.
	if _, err := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t))).Rotate(ctx,
		&ipseccav1.RotateRequest{Node: "node-a"}); err != nil {
		t.Fatal(err)
	}
	key3 := newKey(t)
	if _, err := ipseccav1.NewNodeServiceClient(c.conn(t, gen2)).Renew(ctx, &ipseccav1.RenewRequest{CsrPem: csrFor(t,
		key3, "node-a")}); err != nil {
		t.Fatal(err)
	}
	_, err = old.Renew(ctx, &ipseccav1.RenewRequest{CsrPem: csrFor(t, key2, "node-a")})
	wantDenied(t, "renew two generations back", err, codes.Unauthenticated, "certificate-superseded")
	_, err = old.Renew(ctx, &ipseccav1.RenewRequest{CsrPem: csrFor(t, key3, "node-a")})
	wantDenied(
		t,
		"renew two generations back with the current key",
		err,
		codes.Unauthenticated,
		"certificate-superseded",
	)
	list, err := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t))).
		ListCertificates(ctx, &ipseccav1.ListCertificatesRequest{Node: "node-a"})
	if err != nil || len(list.GetCertificates()) != 3 {
		t.Fatalf("node-a has %d certificates (%v), want 3", len(list.GetCertificates()), err)
	}
}

// TestEnrollRetryAfterLostReply (issue point 8): the same token and key get
// the certificate already issued; another key gets token-used.
func TestEnrollRetryAfterLostReply(t *testing.T) {
	c := startCA(t)
	ctx := context.Background()
	tok, err := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t))).
		CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	node := ipseccav1.NewNodeServiceClient(c.conn(t, nil))
	key := newKey(t)
	first, err := node.Enroll(ctx, &ipseccav1.EnrollRequest{Token: tok.GetToken(), CsrPem: csrFor(t, key, "node-a")})
	if err != nil {
		t.Fatal(err)
	}
	again, err := node.Enroll(ctx, &ipseccav1.EnrollRequest{Token: tok.GetToken(), CsrPem: csrFor(t, key, "node-a")})
	if err != nil || again.GetCertificate().GetSerial() != first.GetCertificate().GetSerial() {
		t.Fatalf("retry: %v %v", again.GetCertificate().GetSerial(), err)
	}
	_, err = node.Enroll(ctx, &ipseccav1.EnrollRequest{Token: tok.GetToken(), CsrPem: csrFor(t, newKey(t), "node-a")})
	wantDenied(t, "used token with another key", err, codes.Unauthenticated, "token-used")
}

// TestRevocationVoidsSpareTokens (issue point 3).
func TestRevocationVoidsSpareTokens(t *testing.T) {
	c := startCA(t)
	ctx := context.Background()
	admin := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t)))
	spare, err := admin.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	c.enrollNode(t, "node-a")
	if _, err := admin.RevokeNode(ctx, &ipseccav1.RevokeNodeRequest{Node: "node-a"}); err != nil {
		t.Fatal(err)
	}
	node := ipseccav1.NewNodeServiceClient(c.conn(t, nil))
	_, err = node.Enroll(ctx, &ipseccav1.EnrollRequest{Token: spare.GetToken(), CsrPem: csrFor(t, newKey(t), "node-a")})
	wantDenied(t, "spare token while revoked", err, codes.PermissionDenied, "node-revoked")
	if _, err := admin.ReadmitNode(ctx, &ipseccav1.ReadmitNodeRequest{Node: "node-a"}); err != nil {
		t.Fatal(err)
	}
	_, err = node.Enroll(ctx, &ipseccav1.EnrollRequest{Token: spare.GetToken(), CsrPem: csrFor(t, newKey(t), "node-a")})
	wantDenied(t, "spare token after readmission", err, codes.Unauthenticated, "token-voided")
	ev, err := admin.ListEvents(ctx, &ipseccav1.ListEventsRequest{Type: store.EventNodeRevoked})
	if err != nil || len(ev.GetEvents()) != 1 || ev.GetEvents()[0].GetDetail()["unused_tokens"] != "void" {
		t.Fatalf("revocation event: %v %v", ev.GetEvents(), err)
	}
	if ev, err := admin.ListEvents(ctx, &ipseccav1.ListEventsRequest{Type: store.EventNodeReadmitted}); err != nil ||
		len(ev.GetEvents()) != 1 {
		t.Fatalf("readmission event: %v %v", ev.GetEvents(), err)
	}
	c.enrollNode(t, "node-a") // a token made after readmission works
}

// TestAdminCredentialsRotateAndRevoke (issue point 4).
func TestAdminCredentialsRotateAndRevoke(t *testing.T) {
	c := startCA(t)
	ctx := context.Background()
	nodeCert := c.enrollNode(t, "node-a") // with the admin credential in the data directory
	first := c.admin(t)
	second := c.rotateAdmin(t, first)
	_, err := ipseccav1.NewAdminServiceClient(c.conn(t, first)).ListNodes(ctx, &ipseccav1.ListNodesRequest{})
	wantDenied(t, "rotated-away admin", err, codes.Unauthenticated, "certificate-superseded")
	admin := ipseccav1.NewAdminServiceClient(c.conn(t, second))
	_, err = admin.RevokeAdmin(ctx, &ipseccav1.RevokeAdminRequest{Serial: ca.SerialString(second.Leaf.SerialNumber)})
	wantDenied(t, "revoking one's own credential", err, codes.FailedPrecondition, "revoke-own-credential")
	_, err = admin.RevokeAdmin(ctx, &ipseccav1.RevokeAdminRequest{Serial: ca.SerialString(nodeCert.Leaf.SerialNumber)})
	wantDenied(t, "revoking a node certificate as an admin one", err, codes.InvalidArgument, "not-admin-certificate")
	firstSerial := ca.SerialString(first.Leaf.SerialNumber)
	if _, err := admin.RevokeAdmin(ctx, &ipseccav1.RevokeAdminRequest{Serial: firstSerial,
		Reason: "laptop lost"}); err != nil {
		t.Fatal(err)
	}
	crl, err := ipseccav1.NewNodeServiceClient(c.conn(t, nil)).GetCRL(ctx, &ipseccav1.GetCRLRequest{})
	if err != nil {
		t.Fatal(err)
	}
	list, err := x509.ParseRevocationList(crl.GetDer())
	if err != nil || len(list.RevokedCertificateEntries) != 1 ||
		list.RevokedCertificateEntries[0].SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
		t.Fatalf("CRL after admin revocation: %+v %v", list, err)
	}
	_, err = ipseccav1.NewAdminServiceClient(c.conn(t, first)).ListNodes(ctx, &ipseccav1.ListNodesRequest{})
	wantDenied(t, "revoked admin", err, codes.Unauthenticated, "caller-revoked")
}

// TestNamesAreCaseInsensitive (issue point 5): names differing only in case
// are one name; they are stored and issued in lower case.
func TestNamesAreCaseInsensitive(t *testing.T) {
	c := startCA(t)
	ctx := context.Background()
	const upper, lower = "0A1B2C3D-0000-4000-8000-00000000ABCD", "0a1b2c3d-0000-4000-8000-00000000abcd"
	admin := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t)))
	tok, err := admin.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "node-x", CommonName: upper})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ipseccav1.NewNodeServiceClient(c.conn(t, nil)).
		Enroll(ctx, &ipseccav1.EnrollRequest{Token: tok.GetToken(), CsrPem: csrFor(t, newKey(t), upper)})
	if err != nil {
		t.Fatal(err)
	}
	if cert := pairFrom(t, resp, nil).Leaf; cert.Subject.CommonName != lower || len(cert.DNSNames) != 1 ||
		cert.DNSNames[0] != lower {
		t.Fatalf("issued CN %q SANs %v, want %q", cert.Subject.CommonName, cert.DNSNames, lower)
	}
	_, err = admin.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "node-y", CommonName: lower})
	wantDenied(t, "the lower-case name for another node", err, codes.AlreadyExists, "name-held-by-other-node")
	_, err = admin.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "node-y", CommonName: upper})
	wantDenied(t, "the upper-case name for another node", err, codes.AlreadyExists, "name-held-by-other-node")
}

// TestForgetReleasesName (issue point 6): a revoked node's name is free
// for another node only after 'node forget'.
func TestForgetReleasesName(t *testing.T) {
	c := startCA(t)
	ctx := context.Background()
	admin := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t)))
	const chassis = "11111111-2222-4333-8444-555555555555"
	tok, _ := admin.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "old-node", CommonName: chassis})
	if _, err := ipseccav1.NewNodeServiceClient(c.conn(t, nil)).Enroll(ctx,
		&ipseccav1.EnrollRequest{Token: tok.GetToken(), CsrPem: csrFor(t, newKey(t), chassis)}); err != nil {
		t.Fatal(err)
	}
	_, err := admin.ForgetNode(ctx, &ipseccav1.ForgetNodeRequest{Node: "old-node"})
	wantDenied(t, "forget before revoke", err, codes.FailedPrecondition, "node-not-revoked")
	if _, err := admin.RevokeNode(ctx, &ipseccav1.RevokeNodeRequest{Node: "old-node"}); err != nil {
		t.Fatal(err)
	}
	_, err = admin.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "new-node", CommonName: chassis})
	wantDenied(t, "revoked node's name", err, codes.AlreadyExists, "name-held-by-other-node")
	f, err := admin.ForgetNode(ctx, &ipseccav1.ForgetNodeRequest{Node: "old-node"})
	if err != nil || len(f.GetReleased()) != 1 || f.GetReleased()[0] != chassis {
		t.Fatalf("forget: %v %v", f.GetReleased(), err)
	}
	tok, err = admin.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "new-node", CommonName: chassis})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ipseccav1.NewNodeServiceClient(c.conn(t, nil)).Enroll(ctx,
		&ipseccav1.EnrollRequest{Token: tok.GetToken(), CsrPem: csrFor(t, newKey(t), chassis)}); err != nil {
		t.Fatalf("re-provisioned chassis: %v", err)
	}
}

// TestAnonymousJunkCostsLittle (issue point 9): 3,000 Enroll calls with
// made-up tokens append no audit record, write (almost) nothing to disk,
// and the peer is throttled once its failure budget is spent.
func TestAnonymousJunkCostsLittle(t *testing.T) {
	c := startCAWith(t, func(d *Deps) { d.Limits = DefaultLimits })
	ctx := context.Background()
	admin := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t)))
	before, err := admin.VerifyAudit(ctx, &ipseccav1.VerifyAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(c.dir, bolt.FileName)
	st0, _ := os.Stat(dbPath)
	node := ipseccav1.NewNodeServiceClient(c.conn(t, nil))
	csr := csrFor(t, newKey(t), "node-a")
	codesSeen := map[codes.Code]int{}
	for range 3000 {
		var b [32]byte
		rand.Read(b[:])
		token := hex.EncodeToString(b[:8]) + "." + hex.EncodeToString(b[8:])
		_, err := node.Enroll(ctx, &ipseccav1.EnrollRequest{Token: token, CsrPem: csr})
		codesSeen[status.Code(err)]++
	}
	after, err := admin.VerifyAudit(ctx, &ipseccav1.VerifyAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if after.GetRecords() != before.GetRecords() {
		t.Errorf("audit grew from %d to %d records", before.GetRecords(), after.GetRecords())
	}
	if st1, _ := os.Stat(dbPath); st1.Size() > st0.Size() {
		t.Errorf("the store file grew from %d to %d bytes", st0.Size(), st1.Size())
	}
	if codesSeen[codes.Unauthenticated] > DefaultLimits.PeerFailuresBurst+10 ||
		codesSeen[codes.ResourceExhausted] < 2900 {
		t.Errorf(
			"codes %v: want at most ~%d Unauthenticated, then ResourceExhausted",
			codesSeen,
			DefaultLimits.PeerFailuresBurst,
		)
	}
}

// TestCRLSignedOnlyWhenItChanges (issue point 10): anonymous GetCRL calls
// are answered with one cached CRL (ECDSA signatures are randomised, so a
// re-signed CRL would differ); a revocation makes the next one new.
func TestCRLSignedOnlyWhenItChanges(t *testing.T) {
	c := startCA(t)
	ctx := context.Background()
	nodeA := c.enrollNode(t, "node-a")
	node := ipseccav1.NewNodeServiceClient(c.conn(t, nil))
	first, err := node.GetCRL(ctx, &ipseccav1.GetCRLRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		crl, err := node.GetCRL(ctx, &ipseccav1.GetCRLRequest{})
		if err != nil || string(crl.GetDer()) != string(first.GetDer()) {
			t.Fatalf("call %d: a different CRL (%v): signed per request", i, err)
		}
	}
	if _, err := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t))).RevokeNode(ctx,
		&ipseccav1.RevokeNodeRequest{Node: "node-a"}); err != nil {
		t.Fatal(err)
	}
	crl, err := node.GetCRL(ctx, &ipseccav1.GetCRLRequest{})
	if err != nil || crl.GetEntries() != 1 {
		t.Fatalf("CRL after revocation: %d entries %v", crl.GetEntries(), err)
	}
	list, _ := x509.ParseRevocationList(crl.GetDer())
	if list.RevokedCertificateEntries[0].SerialNumber.Cmp(nodeA.Leaf.SerialNumber) != 0 {
		t.Fatal("the CRL lists another serial")
	}
	// Signed in the same second as the first (the test clock stands still),
	// it is still later, with a higher number: NSS refuses a CRL that is not
	// later than the one it holds (SEC_ERROR_OLD_CRL).
	firstList, _ := x509.ParseRevocationList(first.GetDer())
	if !list.ThisUpdate.After(firstList.ThisUpdate) || list.Number.Cmp(firstList.Number) <= 0 {
		t.Fatalf("CRL after revocation: thisUpdate %s number %s, first %s number %s",
			list.ThisUpdate, list.Number, firstList.ThisUpdate, firstList.Number)
	}
	// Past half its validity it is signed afresh.
	c.clock.Add(ca.CRLValidity/2 + 1)
	later, err := node.GetCRL(ctx, &ipseccav1.GetCRLRequest{})
	if err != nil || string(later.GetDer()) == string(crl.GetDer()) ||
		!later.GetNextUpdate().AsTime().After(crl.GetNextUpdate().AsTime()) {
		t.Fatalf("CRL not refreshed near its next update: %v", err)
	}
}
