// Package daemon builds a running CA process from options: the store, the
// root, the TLS material in the data directory (the service's certificate
// and the admin credentials), the event feed shared by replicas, the
// rotation scheduler and the front doors (the gRPC server of package
// server, the Kubernetes signer of package kube, the metrics and pprof
// listeners). It decides nothing about a request: that is the front doors'
// and the domain's (ca, rotation) work.
package daemon

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/internal/atomicfile"
	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/rotation"
	"github.com/ipsecca/ipsecca/server"
	"github.com/ipsecca/ipsecca/store"
)

// Store is everything a CA process needs from a store backend: the CA
// core's, the gRPC handlers' queries, the scheduler's and the Kubernetes
// signer's.
type Store interface {
	ca.Store
	server.Queries
	rotation.Store
	kube.Store
	Close() error
}

// Cluster is what a store shared by several replicas offers besides
// storage.
type Cluster interface {
	// ClusterStatus (server.Cluster) reports the replicas and the store's
	// own cluster, for GetStatus.
	server.Cluster
	// Participate campaigns for leadership until ctx ends and runs lead
	// while this replica leads.
	Participate(ctx context.Context, self store.Replica, lead func(context.Context)) error
	// WatchEvents calls fn with every audit event any replica appends
	// that store.Notice selects.
	WatchEvents(ctx context.Context, fn func(*store.Event))
	// StoreHealth: while the shared store cannot answer, the replica's
	// health service reports its services NOT_SERVING.
	StoreHealth
}

// Options configure an Instance.
type Options struct {
	DataDir string
	// Store is the store to serve from, the caller's to close. When nil,
	// Open makes the data directory (0700), checks its permissions and
	// then calls OpenStore; Close closes that store.
	Store Store
	// OpenStore opens the store (and, for a store shared by replicas, its
	// Cluster) when Store is nil.
	OpenStore   func(ctx context.Context) (Store, Cluster, error)
	Root        ca.RootConfig
	ServerNames []string // extra DNS names or IPs for the service certificate
	// Rotation is the rotation policy; rotation.DefaultPolicy when zero.
	Rotation rotation.Policy
	// Limits on enrolment and renewal attempts (zero fields: off).
	Limits server.Limits
	// Mode is the cluster's IPsec mode; server.ModeFull when empty.
	Mode server.Mode
	// Cluster is set when the store is shared by several replicas
	// (store/etcd): the scheduler then runs only on the elected leader,
	// and Watch notifications come from the store's event feed, so every
	// replica's streams hear of what any replica did.
	Cluster Cluster
	// HealthInterval is how often Serve checks that the shared store
	// answers (Cluster only); DefaultHealthInterval when zero.
	HealthInterval time.Duration
	// Self describes this replica to the others (Cluster only).
	Self store.Replica
	// Clock is the CA's clock; time.Now when nil.
	Clock ca.Clock
	// Rand is the source of keys and serials; crypto/rand when nil.
	Rand   io.Reader
	Logger *slog.Logger
}

// Instance is a CA process over one data directory: the authority, its
// store, the TLS material in the directory, the scheduler and the gRPC
// front door.
type Instance struct {
	opts      Options
	Authority *ca.Authority
	Scheduler *rotation.Scheduler
	Hub       *server.Hub
	Server    *server.Server
	log       *slog.Logger
	tlsCert   atomic.Pointer[tls.Certificate]
	ownStore  bool // Open opened the store: Close closes it
	ready     *readiness
	storeUp   prometheus.Gauge // 1 while the store answers (always, for a store of its own)

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
func (in *Instance) MetricsRegistry() prometheus.Registerer { return in.Server.MetricsRegistry() }

// Open bootstraps the CA in the store (creating the root on first use),
// writes the public bundle, and makes sure the service and admin
// certificates in the data directory are present and current. Without
// opts.Store it first makes and checks the data directory and opens the
// store with opts.OpenStore.
func Open(ctx context.Context, opts Options) (*Instance, error) {
	if opts.Store != nil {
		return open(ctx, opts)
	}
	if opts.OpenStore == nil {
		return nil, errors.New("daemon: Options need a Store or OpenStore")
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	// Before the store: bbolt's file would make an empty directory one
	// that holds key material.
	if err := CheckPermissions(opts.DataDir); err != nil {
		return nil, err
	}
	st, cluster, err := opts.OpenStore(ctx)
	if err != nil {
		return nil, err
	}
	opts.Store, opts.Cluster = st, cluster
	in, err := open(ctx, opts)
	if err != nil {
		st.Close()
		return nil, err
	}
	in.ownStore = true
	return in, nil
}

func open(ctx context.Context, opts Options) (*Instance, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = ca.ClockFunc(time.Now)
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if err := CheckPermissions(opts.DataDir); err != nil {
		return nil, err
	}
	// A subordinate CA awaiting its certificate (ca.ErrAwaitingCertificate)
	// stops here: no file is made before it can issue.
	root, created, err := ca.Bootstrap(ctx, opts.Store, opts.Root, opts.Clock)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(opts.DataDir, ServerCertDir), 0o700); err != nil {
		return nil, fmt.Errorf("server: data directory: %w", err)
	}
	if created {
		log.Info(
			"created root CA",
			"subject",
			root.Cert.Subject.String(),
			"not_after",
			root.Cert.NotAfter,
			"sha256",
			root.Fingerprint(),
		)
	} else {
		log.Info("loaded root CA", "subject", root.Cert.Subject.String(), "not_after", root.Cert.NotAfter, "sha256",
			root.Fingerprint())
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
	auth := ca.New(
		opts.Store,
		root,
		ca.Config{
			Clock:       opts.Clock,
			Rand:        opts.Rand,
			Logger:      log,
			RotateAfter: opts.Rotation.DueAt,
			KEK:         opts.Root.KEK,
		},
	)
	in := &Instance{opts: opts, Authority: auth, Hub: server.NewHub(), log: log}
	in.Scheduler = rotation.NewScheduler(opts.Store, auth, in, opts.Rotation, opts.Clock, log)
	in.Server = server.New(
		server.Deps{
			Authority: auth,
			Queries:   opts.Store,
			Scheduler: in.Scheduler,
			Hub:       in.Hub,
			Notifier:  in,
			Clock:     opts.Clock,
			Logger:    log,
			Limits:    opts.Limits,
			Mode:      opts.Mode,
			Cluster:   opts.Cluster,
			Self:      opts.Self,
		},
	)
	in.ready = &readiness{}
	in.storeUp = prometheus.NewGauge(prometheus.GaugeOpts{Name: "ipsecca_store_up",
		Help: "1 while the store answers (a shared store is checked every health interval), else 0."})
	in.storeUp.Set(1)
	if err := in.Server.MetricsRegistry().Register(in.storeUp); err != nil {
		return nil, err
	}
	if err := in.RenewServiceCerts(ctx); err != nil {
		return nil, err
	}
	return in, nil
}

// Close closes the store when Open opened it (Options.OpenStore); a store
// passed in Options.Store is the caller's to close.
func (in *Instance) Close() error {
	if !in.ownStore {
		return nil
	}
	return in.opts.Store.Close()
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
	case store.EventCARenewed, store.EventCAKeySealed, store.EventCAImported, store.EventCARollover:
		r, changed, err := in.Authority.ReloadRoot(context.Background())
		if err != nil {
			in.log.Error("reload the root after another replica renewed it", "err", err)
			return
		}
		if changed {
			in.CABundleChanged(r.BundlePEM)
		}
		if e.Type == store.EventCARollover {
			in.Scheduler.Wake() // the leader's scheduler runs the rollover's steps
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

var (
	_ rotation.Notifier = (*Instance)(nil)
	_ server.Notifier   = (*Instance)(nil)
)
