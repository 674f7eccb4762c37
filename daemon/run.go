package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/ipsecca/ipsecca/kube"
)

// Signer is a front door that runs beside the gRPC one over the same CA:
// the Kubernetes CSR signer (*kube.Signer).
type Signer interface {
	// Run runs it until ctx ends; an error stops the process.
	Run(ctx context.Context) error
	// CABundleChanged is told the new bundle after every CA renewal.
	CABundleChanged(bundlePEM []byte)
	// Revoked is told of every revocation this replica hears of.
	Revoked(node, reason string)
	// Ready returns why the signer cannot work now (its Lease cannot be
	// made), nil when it can: the replica reports not ready meanwhile.
	Ready() error
}

var _ Signer = (*kube.Signer)(nil)

// NewSigner builds the Kubernetes front door over this process's CA: the
// Authority, Store, Logger and Metrics of cfg are this instance's when
// empty. Run connects it to the CA's renewals and revocations.
func (in *Instance) NewSigner(cfg kube.Config) (*kube.Signer, error) {
	if cfg.Authority == nil {
		cfg.Authority = in.Authority
	}
	if cfg.Store == nil {
		cfg.Store = in.opts.Store
	}
	if cfg.Logger == nil {
		cfg.Logger = in.log
	}
	if cfg.Metrics == nil {
		cfg.Metrics = in.MetricsRegistry()
	}
	return kube.New(cfg)
}

// Doors are the front doors Run opens.
type Doors struct {
	// Listen is the address of the gRPC front door. Empty (and no
	// Listener): no gRPC server (the Kubernetes signer alone); the
	// rotation scheduler still runs (it renews the root).
	Listen string
	// MetricsListen serves Prometheus /metrics, /readyz and /healthz (off
	// when empty); its failure stops the process.
	MetricsListen string
	// PprofListen serves Go's /debug/pprof (off when empty).
	PprofListen string
	// Listener, MetricsListener and PprofListener are the addresses bound
	// (Bind); Run binds those that are not.
	Listener, MetricsListener, PprofListener net.Listener
	// Signer, when set, runs beside the gRPC server; its failure stops
	// the process.
	Signer Signer
}

// Bind binds every address of d not bound yet, so that a process can
// fail on a bad or busy address before it writes anything. On error
// (a *BindError) nothing it bound stays open.
func (d *Doors) Bind() error {
	for _, l := range []struct {
		door string
		addr string
		lis  *net.Listener
	}{
		{DoorGRPC, d.Listen, &d.Listener},
		{DoorMetrics, d.MetricsListen, &d.MetricsListener},
		{DoorPprof, d.PprofListen, &d.PprofListener},
	} {
		if l.addr == "" || *l.lis != nil {
			continue
		}
		lis, err := net.Listen("tcp", l.addr)
		if err != nil {
			d.Close()
			return &BindError{Door: l.door, Addr: l.addr, Err: err}
		}
		*l.lis = lis
	}
	return nil
}

// The doors a BindError names.
const (
	DoorGRPC    = "gRPC"
	DoorMetrics = "metrics"
	DoorPprof   = "pprof"
)

// BindError is a listener that could not be bound.
type BindError struct {
	Door string // DoorGRPC, DoorMetrics or DoorPprof
	Addr string
	Err  error
}

func (e *BindError) Error() string {
	why := e.Err
	var op *net.OpError
	if errors.As(why, &op) && op.Err != nil {
		why = op.Err // net's own message repeats the address
	}
	return fmt.Sprintf("cannot listen for %s on %s: %v", e.Door, e.Addr, why)
}

func (e *BindError) Unwrap() error { return e.Err }

// Close closes the listeners of d (when Run will not be called after
// Bind).
func (d *Doors) Close() {
	for _, l := range []*net.Listener{&d.Listener, &d.MetricsListener, &d.PprofListener} {
		if *l != nil {
			(*l).Close()
			*l = nil
		}
	}
}

// Run runs the process until ctx ends: the Kubernetes signer when there is
// one (told of every CA renewal and revocation), the metrics and pprof
// listeners, then the gRPC front door, or without one the scheduler alone.
// It returns when what it started has stopped, so the store may be closed
// then.
func (in *Instance) Run(ctx context.Context, d Doors) error {
	if err := d.Bind(); err != nil {
		return err
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if d.Signer != nil {
		in.OnCABundleChanged(d.Signer.CABundleChanged)
		in.OnRevoked(d.Signer.Revoked)
		signerDone := make(chan struct{})
		defer func() { stop(); <-signerDone }() // before the store closes
		go func() {
			defer close(signerDone)
			if err := d.Signer.Run(ctx); err != nil {
				in.log.Error("kubernetes signer failed", "err", err)
				stop()
			}
		}()
		go watchSignerReadiness(ctx, d.Signer, in.ready)
	}
	if d.MetricsListener != nil {
		go func() {
			if err := in.serveMetrics(ctx, d.MetricsListener); err != nil {
				in.log.Error("metrics server failed", "err", err)
				stop()
			}
		}()
	}
	if d.PprofListener != nil {
		go servePprof(ctx, d.PprofListener, in.log)
	}
	if d.Listener == nil {
		// No gRPC listener; the scheduler still renews the root.
		wait := in.watchStoreHealth(ctx)
		in.RunScheduler(ctx)
		stop()
		wait()
		in.log.Info("stopped")
		return nil
	}
	err := in.Serve(ctx, d.Listener)
	in.log.Info("stopped")
	return err
}

// watchStoreHealth follows the shared store's health (Cluster only)
// until ctx ends, into readiness and ipsecca_store_up; the function it
// returns waits for the watch to end.
func (in *Instance) watchStoreHealth(ctx context.Context) func() {
	c := in.opts.Cluster
	if c == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchStoreHealth(ctx, c, in.opts.HealthInterval, in.log, func(err error) {
			in.ready.set(causeStore, err)
			if err != nil {
				in.storeUp.Set(0)
			} else {
				in.storeUp.Set(1)
			}
		})
	}()
	return func() { <-done }
}

// RunScheduler runs the rotation scheduler until ctx ends. In a cluster
// it runs only while this replica is the elected leader, and the store's
// event feed drives the Watch streams.
func (in *Instance) RunScheduler(ctx context.Context) {
	c := in.opts.Cluster
	if c == nil {
		in.Scheduler.Run(ctx)
		return
	}
	go c.WatchEvents(ctx, in.onStoreEvent)
	c.Participate(ctx, in.opts.Self, in.Scheduler.Run)
}

// Serve serves gRPC on lis until ctx ends, then stops gracefully (bounded
// by a few seconds). It runs the scheduler and renews the service
// certificates hourly when due. In a cluster it checks every
// HealthInterval that the shared store answers and sets the health of the
// node and admin services to match.
func (in *Instance) Serve(ctx context.Context, lis net.Listener) error {
	// Whatever ends serving ends what serves with it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, hs := in.Server.GRPCServer(
		func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return in.tlsCert.Load(), nil },
	)
	// A replica that cannot commit, or whose signer cannot work, is not
	// ready: load balancers and readiness probes send its traffic to the
	// others meanwhile.
	in.ready.attach(hs)
	waitHealth := in.watchStoreHealth(ctx)
	defer func() { cancel(); waitHealth() }()
	schedDone := make(chan struct{})
	go func() { defer close(schedDone); in.RunScheduler(ctx) }()
	// In a cluster, stopping resigns the leadership (the next replica
	// takes over at once): let that finish before the store closes.
	defer func() {
		cancel()
		select {
		case <-schedDone:
		case <-time.After(5 * time.Second):
		}
	}()
	go func() {
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				hs.Shutdown()
				// Watch streams never end by themselves: end them, or the
				// graceful stop waits its whole timeout on them.
				in.Hub.Close()
				done := make(chan struct{})
				go func() { g.GracefulStop(); close(done) }()
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					g.Stop()
				}
				return
			case <-t.C:
				if err := in.RenewServiceCerts(ctx); err != nil {
					in.log.Error("service certificate renewal failed", "err", err)
				}
			}
		}
	}()
	in.log.Info("serving", "addr", lis.Addr().String(), "data_dir", in.opts.DataDir)
	err := g.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// ServeMetrics serves /metrics, /readyz and /healthz on addr until ctx
// ends.
func (in *Instance) ServeMetrics(ctx context.Context, addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return in.serveMetrics(ctx, lis)
}

// serveMetrics serves on lis until ctx ends: /metrics, /readyz (503 with
// why while the replica is not ready, like the gRPC health service's
// readiness entries) and /healthz (liveness), so a process without a gRPC
// listener (kube-only) can be probed too.
func (in *Instance) serveMetrics(ctx context.Context, lis net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(in.Server.MetricsRegistry(), promhttp.HandlerOpts{}))
	mux.HandleFunc("/readyz", in.ready.readyz)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	in.log.Info("serving metrics", "addr", lis.Addr().String())
	if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// servePprof serves the Go profiler on lis until ctx ends.
func servePprof(ctx context.Context, lis net.Listener, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	log.Info("serving pprof", "addr", lis.Addr().String())
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("pprof server", "err", err)
	}
}
