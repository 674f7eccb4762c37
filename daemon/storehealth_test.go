package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ipsecca/ipsecca/store"
)

// switchable answers its checks with whatever err holds.
type switchable struct {
	err    atomic.Pointer[error]
	checks atomic.Int64
}

func (s *switchable) Healthy(context.Context) error {
	s.checks.Add(1)
	if p := s.err.Load(); p != nil {
		return *p
	}
	return nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// The readiness entries follow the store, the overall entry (liveness)
// does not; each change is set and logged once; the watch ends with ctx.
func TestStoreHealthSetsReadiness(t *testing.T) {
	hs := health.NewServer()
	all := append([]string{""}, readinessServices...)
	for _, name := range all {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	st := &switchable{}
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r := &readiness{}
	r.attach(hs)
	go func() {
		defer close(done)
		watchStoreHealth(ctx, st, 10*time.Millisecond, log, func(err error) { r.set(causeStore, err) })
	}()

	statusOf := func(name string) healthpb.HealthCheckResponse_ServingStatus {
		resp, err := hs.Check(context.Background(), &healthpb.HealthCheckRequest{Service: name})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStatus()
	}
	eventually := func(what string, want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for statusOf(readinessServices[0]) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not %s within 5 s", what, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
		for _, name := range readinessServices {
			if got := statusOf(name); got != want {
				t.Fatalf("%s: %q is %s, want %s", what, name, got, want)
			}
		}
		if got := statusOf(""); got != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%s: overall entry %s, want SERVING (liveness)", what, got)
		}
	}
	waitChecks := func(n int64) {
		t.Helper()
		for start := st.checks.Load(); st.checks.Load() < start+n; {
			time.Sleep(5 * time.Millisecond)
		}
	}

	waitChecks(3)
	eventually("healthy store", healthpb.HealthCheckResponse_SERVING)
	down := errors.Join(store.ErrUnavailable, errors.New("etcd: health check: context deadline exceeded"))
	st.err.Store(&down)
	eventually("store down", healthpb.HealthCheckResponse_NOT_SERVING)
	waitChecks(5)
	st.err.Store(nil)
	eventually("store back", healthpb.HealthCheckResponse_SERVING)
	waitChecks(5)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not end with its context")
	}

	out := logs.String()
	if n := strings.Count(out, "NOT_SERVING until it answers"); n != 1 {
		t.Fatalf("going down logged %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "context deadline exceeded") {
		t.Fatalf("going down: want a warning with the error:\n%s", out)
	}
	if n := strings.Count(out, "health reports SERVING"); n != 1 {
		t.Fatalf("coming back logged %d times, want once:\n%s", n, out)
	}
}
