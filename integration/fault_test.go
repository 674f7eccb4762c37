package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// TestFullDisk: the data directory on a small tmpfs fills up; enrolments
// fail with Unavailable and hand out nothing unstored; when space returns
// the same server process recovers.
func TestFullDisk(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "small")
	os.MkdirAll(mnt, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount a small tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	srv := startServer(t, filepath.Join(mnt, "ca"), "--limit-per-node", "0", "--limit-global", "0")
	admin, done := adminClient(t, srv)
	defer done()
	caPEM, _ := os.ReadFile(srv.CAFile())
	conn, err := dialTLS(srv.Addr, caPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	node := ipseccav1.NewNodeServiceClient(conn)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	enrol := func(name string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tok, err := admin.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: name})
		if err != nil {
			return "", err
		}
		resp, err := node.Enroll(ctx, &ipseccav1.EnrollRequest{Token: tok.GetToken(), CsrPem: goCSR(t, key, name, nil)})
		return resp.GetCertificate().GetSerial(), err
	}
	var handedOut []string
	var full error
	for i := 0; i < 20000 && full == nil; i++ {
		serial, err := enrol(fmt.Sprintf("node-%d", i))
		if err != nil {
			full = err
			break
		}
		handedOut = append(handedOut, serial)
	}
	if full == nil {
		t.Fatal("the store never filled up")
	}
	if c := status.Code(full); c != codes.Unavailable {
		t.Fatalf("on a full disk: %v, want Unavailable", full)
	}
	if !strings.Contains(status.Convert(full).Message(), "nothing was issued") {
		t.Fatalf("unclear message on a full disk: %q", status.Convert(full).Message())
	}
	t.Logf("disk full after %d enrolments: %v", len(handedOut), full)
	// Space returns: the same process takes writes again.
	if out, err := exec.Command("mount", "-o", "remount,size=64m", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
	var recovered error
	for i := 0; i < 20; i++ {
		if _, recovered = enrol(fmt.Sprintf("after-%d", i)); recovered == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if recovered != nil {
		t.Fatalf("no recovery after space returned: %v", recovered)
	}
	// Everything handed out is stored.
	for _, serial := range handedOut {
		if _, err := admin.GetCertificate(context.Background(), &ipseccav1.GetCertificateRequest{Serial: serial}); err != nil {
			t.Fatalf("certificate %s handed out but not stored: %v", serial, err)
		}
	}
	srv.Stop()
	if out := mustRun(t, nil, "store", "check", "--data-dir", srv.DataDir); !strings.Contains(out, "audit chain: ok") {
		t.Fatalf("store check: %s", out)
	}
}
