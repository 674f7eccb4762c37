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
	// Listen is the address of the gRPC front door. Empty: no gRPC server,
	// and no metrics or pprof listener either (the Kubernetes signer
	// alone); the rotation scheduler still runs (it renews the root).
	Listen string
	// MetricsListen serves Prometheus /metrics (off when empty); its
	// failure stops the process.
	MetricsListen string
	// PprofListen serves Go's /debug/pprof (off when empty).
	PprofListen string
	// Signer, when set, runs beside the gRPC server; its failure stops
	// the process.
	Signer Signer
}

// Run runs the process until ctx ends: the Kubernetes signer when there is
// one (told of every CA renewal and revocation), then the gRPC front door
// with its metrics and pprof listeners, or without a gRPC address the
// scheduler alone. It returns when what it started has stopped, so the
// store may be closed then.
func (in *Instance) Run(ctx context.Context, d Doors) error {
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
	}
	if d.Listen == "" {
		// No gRPC listener; the scheduler still renews the root.
		in.RunScheduler(ctx)
		in.log.Info("stopped")
		return nil
	}
	lis, err := net.Listen("tcp", d.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if d.MetricsListen != "" {
		go func() {
			if err := in.ServeMetrics(ctx, d.MetricsListen); err != nil {
				in.log.Error("metrics server failed", "err", err)
				stop()
			}
		}()
	}
	if d.PprofListen != "" {
		go servePprof(ctx, d.PprofListen, in.log)
	}
	err = in.Serve(ctx, lis)
	in.log.Info("stopped")
	return err
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
	if c := in.opts.Cluster; c != nil {
		// A replica that cannot commit is not ready: load balancers and
		// readiness probes send its traffic to the others meanwhile.
		healthDone := make(chan struct{})
		go func() {
			defer close(healthDone)
			watchStoreHealth(ctx, c, hs, readinessServices, in.opts.HealthInterval, in.log)
		}()
		defer func() { cancel(); <-healthDone }()
	}
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

// ServeMetrics serves /metrics on addr until ctx ends.
func (in *Instance) ServeMetrics(ctx context.Context, addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(in.Server.MetricsRegistry(), promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	in.log.Info("serving metrics", "addr", lis.Addr().String())
	if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// servePprof serves the Go profiler until ctx ends.
func servePprof(ctx context.Context, addr string, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	log.Info("serving pprof", "addr", addr)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Error("pprof server", "err", err)
	}
}
