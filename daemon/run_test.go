package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/store/bolt"
)

// fakeSigner records what the process tells it; Run blocks until ctx ends
// (or returns fail at once), then takes linger to stop.
type fakeSigner struct {
	fail    error
	linger  time.Duration
	started chan struct{}

	mu      sync.Mutex
	bundles [][]byte
	revoked []string
	stopped bool
}

func newFakeSigner() *fakeSigner { return &fakeSigner{started: make(chan struct{})} }

func (f *fakeSigner) Run(ctx context.Context) error {
	close(f.started)
	if f.fail != nil {
		return f.fail
	}
	<-ctx.Done()
	time.Sleep(f.linger)
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
	return nil
}

func (f *fakeSigner) CABundleChanged(b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bundles = append(f.bundles, b)
}

func (f *fakeSigner) Revoked(node, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, node+":"+reason)
}

// openInstance opens an Instance over a fresh data directory, logging to
// logs when given.
func openInstance(t *testing.T, logs *lockedBuffer) *Instance {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	st, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	opts := Options{DataDir: dir, Store: st, Rand: rand.Reader}
	if logs != nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}
	in, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// runUntil runs in.Run in the background; the returned function waits
// (at most 10 s) for it to return and gives its error.
func runUntil(t *testing.T, ctx context.Context, in *Instance, d Doors) func() error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx, d) }()
	return func() error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return")
			return nil
		}
	}
}

// TestRunTellsTheSigner: the Kubernetes signer hears of every CA renewal
// and every revocation, and Run returns only after it has stopped.
func TestRunTellsTheSigner(t *testing.T) {
	in := openInstance(t, nil)
	sg := newFakeSigner()
	sg.linger = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runUntil(t, ctx, in, Doors{Listen: "127.0.0.1:0", Signer: sg})
	<-sg.started
	r, err := in.Authority.RenewRoot(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	in.CABundleChanged(r.BundlePEM)
	in.Revoked("node-a", "decommissioned")
	in.Revoked("", "admin laptop lost")
	cancel()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	sg.mu.Lock()
	defer sg.mu.Unlock()
	if !sg.stopped {
		t.Fatal("Run returned before the signer stopped")
	}
	if len(sg.bundles) != 1 || !bytes.Equal(sg.bundles[0], r.BundlePEM) {
		t.Fatalf("bundles told: %d", len(sg.bundles))
	}
	if strings.Join(sg.revoked, ",") != "node-a:decommissioned,:admin laptop lost" {
		t.Fatalf("revocations told: %v", sg.revoked)
	}
}

// TestRunStopsWhenTheSignerFails: a failed signer stops the process (as
// serve always did: logged, and Run returns without an error).
func TestRunStopsWhenTheSignerFails(t *testing.T) {
	var logs lockedBuffer
	in := openInstance(t, &logs)
	sg := newFakeSigner()
	sg.fail = errors.New("lost the API server")
	wait := runUntil(t, context.Background(), in, Doors{Listen: "127.0.0.1:0", Signer: sg})
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if out := logs.String(); !strings.Contains(out, "kubernetes signer failed") ||
		!strings.Contains(out, "lost the API server") ||
		!strings.Contains(out, "msg=stopped") {
		t.Fatalf("logs:\n%s", out)
	}
}

// TestRunKubeOnly: without a gRPC address nothing listens; the scheduler
// runs until ctx ends.
func TestRunKubeOnly(t *testing.T) {
	var logs lockedBuffer
	in := openInstance(t, &logs)
	sg := newFakeSigner()
	ctx, cancel := context.WithCancel(context.Background())
	wait := runUntil(t, ctx, in, Doors{Signer: sg, MetricsListen: "127.0.0.1:0"})
	<-sg.started
	cancel()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if out := logs.String(); strings.Contains(out, "serving") || !strings.Contains(out, "msg=stopped") {
		t.Fatalf("logs:\n%s", out)
	}
}

// TestRunListenFailure: an address in use is an error, and the signer
// started before is stopped rather than waited for forever.
func TestRunListenFailure(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	in := openInstance(t, nil)
	sg := newFakeSigner()
	wait := runUntil(t, context.Background(), in, Doors{Listen: busy.Addr().String(), Signer: sg})
	if err := wait(); err == nil || !strings.HasPrefix(err.Error(), "listen: ") {
		t.Fatalf("Run on a busy address: %v", err)
	}
}

// closeCounter counts Close calls on a store.
type closeCounter struct {
	*bolt.Store
	closed int
}

func (c *closeCounter) Close() error { c.closed++; return c.Store.Close() }

// TestOpenMakesAndChecksTheDirectoryBeforeTheStore: with OpenStore, Open
// creates the data directory 0700 and refuses one whose key material
// others can read before the store is opened; Close closes the store it
// opened.
func TestOpenMakesAndChecksTheDirectoryBeforeTheStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	var st *closeCounter
	opened := 0
	opts := Options{DataDir: dir, Rand: rand.Reader, OpenStore: func(context.Context) (Store, Cluster, error) {
		opened++
		b, err := bolt.Open(dir)
		if err != nil {
			return nil, nil, err
		}
		st = &closeCounter{Store: b}
		return st, nil, nil
	}}
	in, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data directory %v %v, want 0700", fi.Mode(), err)
	}
	if err := in.Close(); err != nil || st.closed != 1 {
		t.Fatalf("Close: %v, store closed %d times", err, st.closed)
	}
	os.Chmod(filepath.Join(dir, AdminKeyFile), 0o644)
	if _, err := Open(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "chmod 600") ||
		opened != 1 {
		t.Fatalf("readable admin key: %v (store opened %d times, want 1)", err, opened)
	}
	// A store passed in is the caller's to close.
	os.Chmod(filepath.Join(dir, AdminKeyFile), 0o600)
	b, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	mine := &closeCounter{Store: b}
	in, err = Open(context.Background(), Options{DataDir: dir, Store: mine, Rand: rand.Reader})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Close(); err != nil || mine.closed != 0 {
		t.Fatalf("Close closed a store passed in (%v, %d)", err, mine.closed)
	}
}
