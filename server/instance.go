package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/internal/atomicfile"
	"github.com/ipsecca/ipsecca/rotation"
	"github.com/ipsecca/ipsecca/store"
)

// Files in the data directory, besides the store's own.
const (
	CAFile        = "ca.pem"        // public CA bundle for clients (0644)
	AdminCertFile = "admin.pem"     // admin client certificate (0600)
	AdminKeyFile  = "admin-key.pem" // admin client key (0600)
	ServerCertDir = "tls"           // the service's own certificate and key
	serverCert    = "server.pem"
	serverKey     = "server-key.pem"
)

// ServiceCertYears is the lifetime of the service's TLS certificate and of
// the admin certificate; both are renewed after two thirds of it.
const ServiceCertYears = 1

// AdminName is the identity of the admin certificate.
const AdminName = "ipsecca-admin"

// Store is everything the service needs from a store backend.
type Store interface {
	ca.Store
	Queries
	rotation.Store
	Close() error
}

// Cluster is what a store shared by several replicas offers besides
// storage.
type Cluster interface {
	// Participate campaigns for leadership until ctx ends and runs lead
	// while this replica leads.
	Participate(ctx context.Context, self store.Replica, lead func(context.Context)) error
	// WatchEvents calls fn with every audit event any replica appends
	// that store.Notice selects.
	WatchEvents(ctx context.Context, fn func(*store.Event))
	// ClusterStatus reports the replicas and the store's own cluster.
	ClusterStatus(ctx context.Context) (*store.ClusterStatus, error)
	// StoreHealth: while the shared store cannot answer, the replica's
	// health service reports its services NOT_SERVING.
	StoreHealth
}

// Options configure an Instance.
type Options struct {
	DataDir     string
	Store       Store
	Root        ca.RootConfig
	ServerNames []string // extra DNS names or IPs for the service certificate
	// Rotation is the rotation policy; rotation.DefaultPolicy when zero.
	Rotation rotation.Policy
	// Limits on enrolment and renewal attempts (zero fields: off).
	Limits Limits
	// Mode is the cluster's IPsec mode; ModeFull when empty.
	Mode Mode
	// Cluster is set when the store is shared by several replicas
	// (store/etcd): the scheduler then runs only on the elected leader,
	// and Watch notifications come from the store's event feed, so every
	// replica's streams hear of what any replica did.
	Cluster Cluster
	// HealthInterval is how often Serve checks that the shared store
	// answers (Cluster only); DefaultHealthInterval when zero.
	HealthInterval time.Duration
	// Self describes this replica to the others (Cluster only).
	Self   store.Replica
	Clock  ca.Clock
	Rand   io.Reader
	Logger *slog.Logger
}

// Instance is a CA service over one data directory: the authority, its
// store and the TLS material in the directory.
type Instance struct {
	opts      Options
	Authority *ca.Authority
	Scheduler *rotation.Scheduler
	Hub       *Hub
	Server    *Server
	log       *slog.Logger
	tlsCert   atomic.Pointer[tls.Certificate]

	bundleMu         sync.Mutex
	bundleListeners  []func([]byte)
	revokedListeners []func(node, reason string)
}

// OnCABundleChanged registers f to be told the new bundle after every CA
// renewal (e.g. the Kubernetes signer's ConfigMap).
func (in *Instance) OnCABundleChanged(f func([]byte)) {
	in.bundleMu.Lock()
	defer in.bundleMu.Unlock()
	in.bundleListeners = append(in.bundleListeners, f)
}

// OnRevoked registers f to be told of every revocation this replica hears
// of (its own, or any replica's in a cluster; node is "" for an admin
// certificate), e.g. the Kubernetes signer's CRL.
func (in *Instance) OnRevoked(f func(node, reason string)) {
	in.bundleMu.Lock()
	defer in.bundleMu.Unlock()
	in.revokedListeners = append(in.revokedListeners, f)
}

func (in *Instance) tellRevoked(node, reason string) {
	in.bundleMu.Lock()
	listeners := slices.Clone(in.revokedListeners)
	in.bundleMu.Unlock()
	for _, f := range listeners {
		f(node, reason)
	}
}

// MetricsRegistry is where the service's metrics live, for other parts of
// the process (the Kubernetes signer) to add theirs.
func (in *Instance) MetricsRegistry() prometheus.Registerer { return in.Server.metrics.registry }

// Open bootstraps the CA in opts.Store (creating the root on first use),
// writes the public bundle, and makes sure the service and admin
// certificates in the data directory are present and current.
func Open(ctx context.Context, opts Options) (*Instance, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := CheckPermissions(opts.DataDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(opts.DataDir, ServerCertDir), 0o700); err != nil {
		return nil, fmt.Errorf("server: data directory: %w", err)
	}
	root, created, err := ca.Bootstrap(ctx, opts.Store, opts.Root, opts.Clock)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("created root CA", "subject", root.Cert.Subject.String(), "not_after", root.Cert.NotAfter, "sha256", root.Fingerprint())
	} else {
		log.Info("loaded root CA", "subject", root.Cert.Subject.String(), "not_after", root.Cert.NotAfter, "sha256", root.Fingerprint())
	}
	if root.SealedOnLoad {
		log.Info("sealed the CA key in the store under the key-encryption key")
	}
	scrubStore(opts.Store, root.SealedOnLoad, log)
	if err := atomicfile.WriteFile(filepath.Join(opts.DataDir, CAFile), root.BundlePEM, 0o644); err != nil {
		return nil, err
	}
	if opts.Rotation == (rotation.Policy{}) {
		opts.Rotation = rotation.DefaultPolicy
	}
	if err := opts.Rotation.Validate(rotation.NodeLifetime(opts.Clock.Now())); err != nil {
		return nil, err
	}
	auth := ca.New(opts.Store, root, ca.Config{Clock: opts.Clock, Rand: opts.Rand, Logger: log, RotateAfter: opts.Rotation.DueAt, KEK: opts.Root.KEK})
	in := &Instance{opts: opts, Authority: auth, Hub: NewHub(), log: log}
	in.Scheduler = rotation.NewScheduler(opts.Store, auth, in, opts.Rotation, opts.Clock, log)
	in.Server = New(Deps{Authority: auth, Queries: opts.Store, Scheduler: in.Scheduler, Hub: in.Hub, Notifier: in, Clock: opts.Clock, Logger: log, Limits: opts.Limits, Mode: opts.Mode, Cluster: opts.Cluster, Self: opts.Self})
	if err := in.RenewServiceCerts(ctx); err != nil {
		return nil, err
	}
	return in, nil
}

// compacter is a store whose file keeps freed pages (store/bolt): after a
// seal it is rewritten so the clear CA key does not stay readable in it.
type compacter interface {
	CompactPending() (bool, error)
	Compact() error
}

// scrubStore rewrites the store's file when the CA key was just sealed, or
// was sealed before without a rewrite (a crash between the two, or an older
// ipsecca). A failure is logged, not fatal: the CA works, the old file stays
// whole, and the next start tries again.
func scrubStore(st Store, sealed bool, log *slog.Logger) {
	c, ok := st.(compacter)
	if !ok {
		return
	}
	pending, err := c.CompactPending()
	if err != nil {
		log.Error("check whether the store file must be rewritten after sealing", "err", err)
	}
	if !sealed && !pending {
		return
	}
	if err := c.Compact(); err != nil {
		log.Error("rewrite the store file after sealing the CA key: a clear copy may remain in its freed pages; "+
			"the next start retries", "err", err)
		return
	}
	log.Info("rewrote the store file with live data only: no freed copy of a clear CA key remains in it")
}

// RotationDue forwards to the Watch streams (in a cluster the event feed
// does, on every replica).
func (in *Instance) RotationDue(node, serial, reason string) {
	if in.opts.Cluster == nil {
		in.Hub.RotationDue(node, serial, reason)
	}
}

// Revoked tells the node's Watch streams (in a cluster the event feed
// does, on every replica).
func (in *Instance) Revoked(node, reason string) {
	if in.opts.Cluster == nil {
		if node != "" {
			in.Hub.Revoked(node, reason)
		}
		in.tellRevoked(node, reason)
	}
}

// onStoreEvent turns an audit event appended by any replica into what
// this replica's Watch streams, scheduler and root must know.
func (in *Instance) onStoreEvent(e *store.Event) {
	switch e.Type {
	case store.EventRotationDue:
		reason := e.Detail["reason"]
		if reason == "" {
			reason = "scheduled"
		}
		in.Hub.RotationDue(e.Node, e.Serial, reason)
	case store.EventRotationOverdue:
		in.Hub.RotationDue(e.Node, e.Serial, "overdue")
	case store.EventRotationForced:
		if e.Detail["already_due"] == "true" {
			in.Hub.RotationDue(e.Node, e.Serial, "forced")
		}
		in.Scheduler.Wake()
	case store.EventNodeRevoked:
		in.Hub.Revoked(e.Node, e.Reason)
		in.tellRevoked(e.Node, e.Reason)
	case store.EventCertRevoked:
		in.tellRevoked("", e.Reason)
	case store.EventCARenewed, store.EventCAKeySealed:
		r, changed, err := in.Authority.ReloadRoot(context.Background())
		if err != nil {
			in.log.Error("reload the root after another replica renewed it", "err", err)
			return
		}
		if changed {
			in.CABundleChanged(r.BundlePEM)
		}
	}
}

// CABundleChanged rewrites the bundle file, reissues the service
// certificates under the new root and tells every Watch stream.
func (in *Instance) CABundleChanged(bundlePEM []byte) {
	if err := atomicfile.WriteFile(filepath.Join(in.opts.DataDir, CAFile), bundlePEM, 0o644); err != nil {
		in.log.Error("write CA bundle", "err", err)
	}
	if err := in.RenewServiceCerts(context.Background()); err != nil {
		in.log.Error("service certificates after CA renewal", "err", err)
	}
	in.Hub.CABundleChanged(bundlePEM)
	in.bundleMu.Lock()
	listeners := slices.Clone(in.bundleListeners)
	in.bundleMu.Unlock()
	for _, f := range listeners {
		f(bundlePEM)
	}
}

var _ rotation.Notifier = (*Instance)(nil)

// RenewServiceCerts reissues the service's TLS certificate and the admin
// certificate when missing, past two thirds of their life, not from the
// current root, or (for the service) missing a configured name.
func (in *Instance) RenewServiceCerts(ctx context.Context) error {
	dir := in.opts.DataDir
	names := append([]string{"localhost", "127.0.0.1", "::1"}, in.opts.ServerNames...)
	pair, err := in.ensurePair(ctx, store.KindServer, "ipsecca-server", names,
		filepath.Join(dir, ServerCertDir, serverCert), filepath.Join(dir, ServerCertDir, serverKey))
	if err != nil {
		return err
	}
	in.tlsCert.Store(pair)
	_, err = in.ensurePair(ctx, store.KindAdmin, AdminName, nil, filepath.Join(dir, AdminCertFile), filepath.Join(dir, AdminKeyFile))
	return err
}

func (in *Instance) ensurePair(ctx context.Context, kind store.Kind, name string, names []string, certPath, keyPath string) (*tls.Certificate, error) {
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && in.current(pair.Leaf, names) {
		return &pair, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), in.opts.Rand)
	if err != nil {
		return nil, fmt.Errorf("server: generate %s key: %w", kind, err)
	}
	var dns []string
	var ips []net.IP
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	rec, err := in.Authority.IssueService(ctx, kind, name, key.Public(), dns, ips, ServiceCertYears, "server")
	if err != nil {
		return nil, fmt.Errorf("server: issue %s certificate: %w", kind, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rec.DER})
	if err := atomicfile.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(certPath, certPEM, 0o600); err != nil {
		return nil, err
	}
	in.log.Info("wrote certificate", "kind", kind, "path", certPath, "serial", rec.Serial, "not_after", rec.NotAfter)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &pair, nil
}

// current reports whether leaf is from the current root, covers names and
// is before two thirds of its life.
func (in *Instance) current(leaf *x509.Certificate, names []string) bool {
	if leaf == nil {
		return false
	}
	now := in.opts.Clock.Now()
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: in.Authority.Root().Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return false
	}
	renewAt := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)
	if !now.Before(renewAt) {
		return false
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
				return false
			}
		} else if !slices.Contains(leaf.DNSNames, n) {
			return false
		}
	}
	return true
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
// by a few seconds). It renews the service certificates hourly when due.
// In a cluster it checks every HealthInterval that the shared store
// answers and sets the health of the node and admin services to match.
func (in *Instance) Serve(ctx context.Context, lis net.Listener) error {
	g, hs := in.Server.GRPCServer(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return in.tlsCert.Load(), nil })
	if c := in.opts.Cluster; c != nil {
		// A replica that cannot commit is not ready: load balancers and
		// readiness probes send its traffic to the others meanwhile.
		healthDone := make(chan struct{})
		go func() {
			defer close(healthDone)
			watchStoreHealth(ctx, c, hs, readinessServices, in.opts.HealthInterval, in.log)
		}()
		defer func() { <-healthDone }()
	}
	schedDone := make(chan struct{})
	go func() { defer close(schedDone); in.RunScheduler(ctx) }()
	// In a cluster, stopping resigns the leadership (the next replica
	// takes over at once): let that finish before the store closes.
	defer func() {
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
