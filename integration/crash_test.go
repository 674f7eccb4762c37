package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// adminClient connects to srv with the data directory's admin credentials.
func adminClient(t *testing.T, srv *serverProc) (ipseccav1.AdminServiceClient, func()) {
	t.Helper()
	caPEM, err := os.ReadFile(srv.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(
		filepath.Join(srv.DataDir, "admin.pem"),
		filepath.Join(srv.DataDir, "admin-key.pem"),
	)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := dialTLS(srv.Addr, caPEM, &pair)
	if err != nil {
		t.Fatal(err)
	}
	return ipseccav1.NewAdminServiceClient(conn), func() { conn.Close() }
}

// assertAllStored lists every node certificate: each serial once, and
// every certificate a client received (serial -> DER) stored byte for byte.
func assertAllStored(
	t *testing.T,
	admin ipseccav1.AdminServiceClient,
	received map[string][]byte,
) (stored map[string]bool) {
	t.Helper()
	stored = map[string]bool{}
	page := ""
	for {
		resp, err := admin.ListCertificates(
			context.Background(),
			&ipseccav1.ListCertificatesRequest{Kind: "node", PageSize: 1000, PageToken: page},
		)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.GetCertificates() {
			if stored[c.GetSerial()] {
				t.Fatalf("serial %s listed twice", c.GetSerial())
			}
			stored[c.GetSerial()] = true
			if der, ok := received[c.GetSerial()]; ok {
				b, _ := pem.Decode(c.GetCertificatePem())
				if !bytes.Equal(b.Bytes, der) {
					t.Fatalf("stored certificate %s differs from the one the client received", c.GetSerial())
				}
			}
		}
		if page = resp.GetNextPageToken(); page == "" {
			break
		}
	}
	for serial := range received {
		if !stored[serial] {
			t.Fatalf("certificate %s was handed out but is not in the store", serial)
		}
	}
	return stored
}

// TestKill9UnderEnrolmentLoad kills the server at random moments while
// clients enrol, 20 times. After each kill the file passes bbolt's check
// and the audit chain verifies; at the end every certificate a client
// received is stored byte for byte, serials are unique and the root is
// unchanged.
func TestKill9UnderEnrolmentLoad(t *testing.T) {
	srv := startServer(t, "", "--limit-per-node", "0", "--limit-global", "0")
	root, _ := os.ReadFile(srv.CAFile())
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	received := map[string][]byte{}
	var mu sync.Mutex
	for iter := 0; iter < 20; iter++ {
		admin, done := adminClient(t, srv)
		req := &ipseccav1.CreateTokensRequest{}
		for i := 0; i < 60; i++ {
			req.Requests = append(req.Requests, &ipseccav1.CreateTokenRequest{Node: fmt.Sprintf("n%d-%d", iter, i)})
		}
		toks, err := admin.CreateTokens(context.Background(), req)
		done()
		if err != nil {
			t.Fatal(err)
		}
		conn, err := dialTLS(srv.Addr, root, nil)
		if err != nil {
			t.Fatal(err)
		}
		node := ipseccav1.NewNodeServiceClient(conn)
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < len(toks.GetTokens()); i += 8 {
					name := fmt.Sprintf("n%d-%d", iter, i)
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					resp, err := node.Enroll(
						ctx,
						&ipseccav1.EnrollRequest{
							Token:  toks.GetTokens()[i].GetToken(),
							CsrPem: goCSR(t, key, name, nil),
						},
					)
					cancel()
					if err != nil {
						if c := status.Code(err); c != codes.Unavailable && c != codes.Canceled &&
							c != codes.DeadlineExceeded {
							t.Errorf("enrol during a crash: %v", err)
						}
						return
					}
					b, _ := pem.Decode(resp.GetCertificate().GetCertificatePem())
					mu.Lock()
					received[resp.GetCertificate().GetSerial()] = b.Bytes
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(20+mrand.IntN(200)) * time.Millisecond)
		srv.Kill()
		wg.Wait()
		conn.Close()
		// Right after the kill: the file is consistent and the chain verifies.
		if out := mustRun(t, nil, "store", "check", "--data-dir", srv.DataDir); !strings.Contains(
			out,
			"bbolt consistency: ok",
		) ||
			!strings.Contains(out, "audit chain: ok") {
			t.Fatalf("after kill %d: %s", iter, out)
		}
		srv.Start()
	}
	if len(received) < 20 {
		t.Fatalf("only %d certificates issued across 20 runs: the load did not run", len(received))
	}
	admin, done := adminClient(t, srv)
	defer done()
	stored := assertAllStored(t, admin, received)
	if after, _ := os.ReadFile(srv.CAFile()); !bytes.Equal(root, after) {
		t.Fatal("the root changed across crashes")
	}
	if out := mustRun(t, srv.Env(), "audit", "verify"); !strings.Contains(out, "intact") {
		t.Fatalf("audit verify: %s", out)
	}
	t.Logf(
		"%d certificates received across 20 kills, all stored; %d node certificates in the store",
		len(received),
		len(stored),
	)
}
