package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/ipsecca/ipsecca/daemon"
	"github.com/ipsecca/ipsecca/internal/flagnames"
	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/store/bolt"
	"github.com/ipsecca/ipsecca/store/etcd"
)

// backend is what serve needs of a store: the service's and the
// Kubernetes signer's interfaces.
type backend interface {
	daemon.Store
	kube.Store
}

var (
	_ backend = (*bolt.Store)(nil)
	_ backend = (*etcd.Store)(nil)
	// The shared store: elections, the event feed, status and the health
	// check behind the replica's readiness.
	_ daemon.Cluster = (*etcd.Store)(nil)
)

// storeFlags choose and configure the store backend.
type storeFlags struct {
	kind       string
	endpoints  []string
	caFile     string
	certFile   string
	keyFile    string
	prefix     string
	maxTxnOps  int
	sessionTTL time.Duration
	timeout    time.Duration
	healthIval time.Duration
	replicaID  string
}

const (
	storeBolt = "bolt"
	storeEtcd = "etcd"
)

// register adds the store flags to fs, and those of a serving replica
// (its etcd session and health checks) to serve.
func (f *storeFlags) register(fs, serve *pflag.FlagSet) {
	fs.StringVar(
		&f.kind,
		flagnames.Store,
		storeBolt,
		"store backend: bolt (one file in --data-dir, one replica) or etcd (several replicas share an etcd cluster; "+
			"needs --etcd-endpoints and a KEK)",
	)
	f.registerEtcd(fs)
	serve.DurationVar(
		&f.sessionTTL,
		"etcd-session-ttl",
		etcd.DefaultSessionTTL,
		"lease TTL of the leader election: a dead leader's scheduler is taken over after at most this",
	)
	serve.StringVar(
		&f.replicaID,
		flagnames.ReplicaID,
		"",
		"this replica's name in the cluster (default: the host name)",
	)
	serve.DurationVar(
		&f.healthIval,
		"etcd-health-interval",
		daemon.DefaultHealthInterval,
		"how often a replica checks that etcd answers a linearizable read; while it does not, the gRPC health of "+
			"ipsecca.v1.NodeService and AdminService is NOT_SERVING",
	)
}

// registerEtcd registers the connection flags (also used by store migrate and status).
func (f *storeFlags) registerEtcd(fs *pflag.FlagSet) {
	fs.StringSliceVar(
		&f.endpoints,
		flagnames.EtcdEndpoints,
		nil,
		"etcd client URLs, comma-separated (e.g. https://h1:2379,https://h2:2379,https://h3:2379)",
	)
	fs.StringVar(&f.caFile, flagnames.EtcdCACert, "", "CA bundle to verify the etcd servers (https endpoints)")
	fs.StringVar(&f.certFile, flagnames.EtcdCert, "", "client certificate for etcd")
	fs.StringVar(&f.keyFile, flagnames.EtcdKey, "", "client key for etcd")
	fs.StringVar(&f.prefix, flagnames.EtcdPrefix, etcd.DefaultPrefix, "key prefix of this CA in etcd")
	fs.IntVar(
		&f.maxTxnOps,
		"etcd-max-txn-ops",
		etcd.DefaultMaxTxnOps,
		"keys per etcd transaction; at most the cluster's --max-txn-ops (larger batches: raise both)",
	)
	fs.DurationVar(
		&f.timeout,
		"etcd-timeout",
		etcd.DefaultRequestTimeout,
		"bound on each etcd request; without quorum requests fail with Unavailable after it",
	)
}

func (f *storeFlags) tlsConfig() (*tls.Config, error) {
	if f.caFile == "" && f.certFile == "" && f.keyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.caFile != "" {
		pemBytes, err := os.ReadFile(f.caFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cacert: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pemBytes) {
			return nil, usageError("--etcd-cacert %s holds no PEM certificate", f.caFile)
		}
	}
	if (f.certFile == "") != (f.keyFile == "") {
		return nil, usageError("--etcd-cert and --etcd-key go together")
	}
	if f.certFile != "" {
		pair, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert/--etcd-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// etcdOptions are the etcd store's options from the flags.
func (f *storeFlags) etcdOptions(log *slog.Logger) (etcd.Options, error) {
	if len(f.endpoints) == 0 {
		return etcd.Options{}, usageError("--store etcd needs --etcd-endpoints")
	}
	for _, e := range f.endpoints {
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") && strings.Contains(e, "://") {
			return etcd.Options{}, usageError(
				"--etcd-endpoints %q: want host:port, http://host:port or https://host:port",
				e,
			)
		}
	}
	cfg, err := f.tlsConfig()
	if err != nil {
		return etcd.Options{}, err
	}
	return etcd.Options{Endpoints: f.endpoints, TLS: cfg, Prefix: f.prefix, MaxTxnOps: f.maxTxnOps,
		RequestTimeout: f.timeout, SessionTTL: f.sessionTTL, Logger: log}, nil
}

// openEtcd connects to the etcd cluster.
func (f *storeFlags) openEtcd(ctx context.Context, log *slog.Logger) (*etcd.Store, error) {
	o, err := f.etcdOptions(log)
	if err != nil {
		return nil, err
	}
	return etcd.Open(ctx, o)
}

// open opens the chosen backend. Cluster is nil for bolt.
func (f *storeFlags) open(ctx context.Context, dataDir string, log *slog.Logger) (backend, daemon.Cluster, error) {
	switch f.kind {
	case storeBolt:
		st, err := bolt.Open(dataDir)
		if err != nil {
			return nil, nil, err
		}
		return st, nil, nil
	case storeEtcd:
		st, err := f.openEtcd(ctx, log)
		if err != nil {
			return nil, nil, err
		}
		return st, st, nil
	}
	return nil, nil, usageError("--store %q: want bolt or etcd", f.kind)
}

func (f *storeFlags) replica() string {
	if f.replicaID != "" {
		return f.replicaID
	}
	h, err := os.Hostname()
	if err != nil {
		return "ipsecca"
	}
	return h
}
