package daemon

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Readiness causes: what can keep a running replica from being ready.
const (
	causeStore  = "store"
	causeSigner = "kube-signer"
)

// readiness collects what keeps this replica from being ready, by cause,
// and shows it on the gRPC health service (readinessServices NOT_SERVING
// while any cause holds; the overall entry, liveness, stays SERVING) and
// on the metrics listener's /readyz. Each watcher logs its own changes.
type readiness struct {
	mu     sync.Mutex
	causes map[string]error
	hs     *health.Server
}

// set records err as cause's state (nil: resolved) and shows the result.
func (r *readiness) set(cause string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.causes == nil {
		r.causes = map[string]error{}
	}
	if err == nil {
		delete(r.causes, cause)
	} else {
		r.causes[cause] = err
	}
	r.show()
}

// attach makes the health service hs show readiness from now on.
func (r *readiness) attach(hs *health.Server) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hs = hs
	r.show()
}

func (r *readiness) show() {
	if r.hs == nil {
		return
	}
	status := healthpb.HealthCheckResponse_SERVING
	if len(r.causes) > 0 {
		status = healthpb.HealthCheckResponse_NOT_SERVING
	}
	for _, name := range readinessServices {
		r.hs.SetServingStatus(name, status)
	}
}

// err is why the replica is not ready (every cause), nil when it is.
func (r *readiness) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, c := range slices.Sorted(maps.Keys(r.causes)) {
		errs = append(errs, r.causes[c])
	}
	return errors.Join(errs...)
}

// readyz answers 200 "ok" when ready, else 503 with why.
func (r *readiness) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := r.err(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("not ready: " + err.Error() + "\n"))
		return
	}
	w.Write([]byte("ok\n"))
}

// signerReadinessInterval is how often the signer's readiness is looked at.
const signerReadinessInterval = time.Second

// watchSignerReadiness follows the signer's Ready until ctx ends (it logs
// its own changes).
func watchSignerReadiness(ctx context.Context, sg Signer, r *readiness) {
	t := time.NewTicker(signerReadinessInterval)
	defer t.Stop()
	var last error
	for {
		if err := sg.Ready(); (err == nil) != (last == nil) || (err != nil && err.Error() != last.Error()) {
			last = err
			r.set(causeSigner, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
