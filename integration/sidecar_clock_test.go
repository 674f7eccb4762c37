package integration

import (
	"context"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/daemon"
	"github.com/ipsecca/ipsecca/internal/testclock"
	"github.com/ipsecca/ipsecca/sidecar"
	"github.com/ipsecca/ipsecca/store/bolt"
)

// fakeClock is the tests' shared clock.
type fakeClock = testclock.Clock

// TestSidecarReenrolsAfterExpiry: the CA was away longer than the node
// certificate lived; the sidecar says it needs a token, and re-enrols
// with a new one without a restart. Server and sidecar share a fake
// clock (the only fake in these tests) over real TLS, bbolt and NSS.
func TestSidecarReenrolsAfterExpiry(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := filepath.Join(t.TempDir(), "ca")
	os.MkdirAll(dir, 0o700)
	st, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// The fake clock starts five years and a month in the past, so that
	// after the jump it agrees with NSS's own clock (NSS picks the "best"
	// certificate of a nickname by real time).
	jump := 5*365*24*time.Hour + 30*24*time.Hour
	clock := testclock.New(time.Now().Add(-jump))
	in, err := daemon.Open(ctx, daemon.Options{DataDir: dir, Store: st, Clock: clock, Rand: rand.Reader})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { in.Serve(ctx, lis); close(done) }()
	defer func() { cancel(); <-done }()

	nodeDir := t.TempDir()
	tokenFile := filepath.Join(nodeDir, "token")
	newToken := func() {
		tok, _, err := in.Authority.CreateToken(ctx, "node-a", "", 0, "test")
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(tokenFile, []byte(tok), 0o600)
	}
	newToken()
	agent, err := sidecar.New(
		sidecar.Config{
			Server:    lis.Addr().String(),
			CAFile:    filepath.Join(dir, daemon.CAFile),
			Node:      "node-a",
			TokenFile: tokenFile,
			NSSDir:    filepath.Join(nodeDir, "nss"),
			StateDir:  filepath.Join(nodeDir, "state"),
			Now:       clock.Now,
		},
	)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if err := agent.Check(ctx); err != nil {
		t.Fatal(err)
	}
	first := serialsUnder(t, filepath.Join(nodeDir, "nss"), "ovs_certkey_node-a")

	// Five years and a month later: the node certificate has expired.
	clock.Add(jump)
	if err := in.RenewServiceCerts(ctx); err != nil {
		t.Fatal(err)
	}
	if err := agent.Check(ctx); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("check on an expired certificate: %v", err)
	}
	_, err = agent.Pass(ctx)
	if err == nil || !strings.Contains(err.Error(), "ipsecca token create --node node-a") {
		t.Fatalf("pass with only the used token: %v", err)
	}
	newToken()
	if _, err := agent.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if err := agent.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if now := serialsUnder(t, filepath.Join(nodeDir, "nss"), "ovs_certkey_node-a"); len(now) != 1 ||
		now[0] == first[0] {
		t.Fatalf("NSS holds %v after re-enrolment (was %v)", now, first)
	}
}
