package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ipsecca/ipsecca/store/bolt"
)

// fakeSigner records what the process tells it; Run blocks until ctx ends
// (or returns fail at once), then takes linger to stop.
type fakeSigner struct {
	fail    error
	linger  time.Duration
	started chan struct{}
	ready   atomic.Pointer[error]

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

func (f *fakeSigner) Ready() error {
	if p := f.ready.Load(); p != nil {
		return *p
	}
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

// TestRunKubeOnly: without a gRPC address no gRPC server runs, but the
// metrics listener does (/metrics, /readyz, /healthz); the scheduler runs
// until ctx ends.
func TestRunKubeOnly(t *testing.T) {
	var logs lockedBuffer
	in := openInstance(t, &logs)
	sg := newFakeSigner()
	d := Doors{Signer: sg, MetricsListen: "127.0.0.1:0"}
	if err := d.Bind(); err != nil {
		t.Fatal(err)
	}
	base := "http://" + d.MetricsListener.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	wait := runUntil(t, ctx, in, d)
	<-sg.started
	for _, tc := range []struct{ path, want string }{
		{"/metrics", "ipsecca_store_up 1"},
		{"/healthz", "ok"},
		{"/readyz", "ok"},
	} {
		code, body := httpGet(t, base+tc.path)
		if code != http.StatusOK || !strings.Contains(body, tc.want) {
			t.Fatalf("GET %s: %d %q, want 200 with %q", tc.path, code, body, tc.want)
		}
	}
	cancel()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	if out := logs.String(); strings.Contains(out, "msg=serving ") || !strings.Contains(out, "msg=stopped") {
		t.Fatalf("logs:\n%s", out)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestReadinessFollowsTheSigner: while the signer cannot work (its Lease
// cannot be made) the replica is not ready, on the gRPC health service's
// readiness entries and on /readyz (with why), and ready again once it
// can; liveness stays up throughout.
func TestReadinessFollowsTheSigner(t *testing.T) {
	in := openInstance(t, nil)
	sg := newFakeSigner()
	d := Doors{Listen: "127.0.0.1:0", Signer: sg, MetricsListen: "127.0.0.1:0"}
	if err := d.Bind(); err != nil {
		t.Fatal(err)
	}
	base := "http://" + d.MetricsListener.Addr().String()
	why := errors.New(`kube: the leader-election Lease's namespace "nope" does not exist`)
	sg.ready.Store(&why)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := runUntil(t, ctx, in, d)
	<-sg.started
	status := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		in.ready.mu.Lock()
		hs := in.ready.hs
		in.ready.mu.Unlock()
		if hs == nil {
			return healthpb.HealthCheckResponse_UNKNOWN
		}
		resp, err := hs.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStatus()
	}
	check := func(what string, want healthpb.HealthCheckResponse_ServingStatus, code int, body string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for status(readinessServices[0]) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: readiness not %s within 5 s", what, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
		for _, s := range readinessServices {
			if got := status(s); got != want {
				t.Fatalf("%s: %s is %s, want %s", what, s, got, want)
			}
		}
		if got := status(""); got != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%s: liveness %s", what, got)
		}
		if c, b := httpGet(t, base+"/readyz"); c != code || !strings.Contains(b, body) {
			t.Fatalf("%s: /readyz %d %q, want %d with %q", what, c, b, code, body)
		}
	}
	check("lease namespace missing", healthpb.HealthCheckResponse_NOT_SERVING, http.StatusServiceUnavailable,
		`namespace "nope" does not exist`)
	sg.ready.Store(nil)
	check("resolved", healthpb.HealthCheckResponse_SERVING, http.StatusOK, "ok")
	cancel()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
}

// TestRunListenFailure: an address in use is an error naming it, and the
// signer started before is stopped rather than waited for forever. Bind
// fails the same way before anything runs, and leaves nothing bound.
func TestRunListenFailure(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	in := openInstance(t, nil)
	sg := newFakeSigner()
	wait := runUntil(t, context.Background(), in, Doors{Listen: busy.Addr().String(), Signer: sg})
	if err := wait(); err == nil ||
		err.Error() != "cannot listen for gRPC on "+busy.Addr().String()+": bind: address already in use" {
		t.Fatalf("Run on a busy address: %v", err)
	}
	d := Doors{Listen: "127.0.0.1:0", MetricsListen: busy.Addr().String()}
	err = d.Bind()
	var be *BindError
	if !errors.As(err, &be) || be.Door != DoorMetrics || be.Addr != busy.Addr().String() {
		t.Fatalf("Bind with a busy metrics address: %v", err)
	}
	if d.Listener != nil || d.MetricsListener != nil {
		t.Fatal("Bind left a listener open after failing")
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
