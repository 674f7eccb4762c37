package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math"
	"math/big"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/ipsecca/ipsecca/bundle"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// p12WithMACIterations is a real PKCS#12 (go-pkcs12 Modern, empty password) whose MAC then asks for n
// iterations of the PKCS#12 KDF; the MAC no longer verifies, which the decoder finds out only after them.
func p12WithMACIterations(t *testing.T, n int) (p12, caPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node1.example.com"},
		DNSNames: []string{
			"node1.example.com",
		}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p, err := pkcs12.Modern2023.Encode(key, cert, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	var pfx struct {
		Version  int
		AuthSafe asn1.RawValue
		MacData  struct {
			Mac        asn1.RawValue
			MacSalt    []byte
			Iterations int `asn1:"optional,default:1"`
		}
	}
	if _, err := asn1.Unmarshal(p, &pfx); err != nil {
		t.Fatal(err)
	}
	pfx.MacData.Iterations = n
	if p, err = asn1.Marshal(pfx); err != nil {
		t.Fatal(err)
	}
	return p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestValidateBundleRefusesKDFBomb: a 1 KB PKCS#12 whose MAC asks for 2^31-1 iterations (minutes of a
// core before) is answered at once with p12-kdf-iterations, and audited with it.
func TestValidateBundleRefusesKDFBomb(t *testing.T) {
	c := startCA(t)
	admin := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t)))
	p12, caPEM := p12WithMACIterations(t, math.MaxInt32)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	req := &ipseccav1.ValidateBundleRequest{P12: p12, CaPem: caPEM, Left: "node1.example.com", Right: "ext.example.com"}
	resp, err := admin.ValidateBundle(ctx, req)
	if err != nil {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
	t.Logf("%d bytes answered in %v", len(p12), time.Since(start))
	var msg string
	for _, f := range resp.GetFindings() {
		if f.GetCode() == bundle.CodeP12KDFIterations && f.GetSeverity() == string(bundle.SeverityError) {
			msg = f.GetMessage()
		}
	}
	if resp.GetOk() || !strings.Contains(msg, "2147483647") || !strings.Contains(msg, "1000000") {
		t.Fatalf("response %+v", resp)
	}
	events, err := admin.ListEvents(context.Background(), &ipseccav1.ListEventsRequest{Type: "bundle.validated"})
	if err != nil || len(events.GetEvents()) != 1 ||
		!strings.Contains(events.GetEvents()[0].String(), bundle.CodeP12KDFIterations) {
		t.Fatalf("audit: %v %v", events, err)
	}
}

// TestValidateBundleHonoursDeadline: the handler returns DeadlineExceeded when the caller's deadline
// passes in the middle of a decode (a MAC at a quarter of the cap: allowed, some 200 ms here), rather than
// answering after it; the next call is served once that decode ends.
func TestValidateBundleHonoursDeadline(t *testing.T) {
	c := startCA(t)
	svc := adminService{Server: c.in.Server}
	p12, caPEM := p12WithMACIterations(t, bundle.MaxP12KDFIterations/4)
	req := &ipseccav1.ValidateBundleRequest{P12: p12, CaPem: caPEM, Left: "node1.example.com", Right: "ext.example.com"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	resp, err := svc.ValidateBundle(ctx, req)
	elapsed := time.Since(start)
	if status.Code(err) != codes.DeadlineExceeded || resp != nil || elapsed > 500*time.Millisecond {
		t.Fatalf("after %v: %v, %+v", elapsed, err, resp)
	}
	t.Logf("returned %v after %v", status.Code(err), elapsed)
	canceled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := svc.ValidateBundle(canceled, req); status.Code(err) != codes.Canceled {
		t.Fatalf("canceled: %v", err)
	}
	admin := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t)))
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	good, _ := p12WithMACIterations(t, 2048)
	req.P12 = good
	if resp, err := admin.ValidateBundle(ctx, req); err != nil || resp.GetLeafSubject() == "" {
		t.Fatalf("next call: %v %+v", err, resp)
	}
}
