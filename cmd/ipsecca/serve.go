package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/daemon"
	"github.com/ipsecca/ipsecca/internal/flagnames"
	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/rotation"
	"github.com/ipsecca/ipsecca/server"
	"github.com/ipsecca/ipsecca/store"
)

// caFlags are the flags that create and open a CA data directory.
type caFlags struct {
	dataDir     string
	org         string
	caName      string
	keyType     string
	serverNames []string
	logFormat   string
	logLevel    string
	spread      time.Duration
	grace       time.Duration
	limits      server.Limits
	kekFile     string
	mode        string
	store       storeFlags
	advertise   string // this replica's gRPC address, for status (cluster only)
}

// register adds the flags that make and open the CA to fs; with serve,
// also those of a running CA (limits, rotation, mode, logging, the
// replica's etcd session), else those take their defaults unseen.
func (f *caFlags) register(fs *pflag.FlagSet, serve bool) {
	only := fs
	if !serve {
		only = pflag.NewFlagSet("serve-only", pflag.ContinueOnError)
	}
	fs.StringVar(&f.dataDir, flagnames.DataDir, "", "data directory (default $"+envDataDir+", else "+defaultDataDir+")")
	fs.StringVar(
		&f.org,
		"org",
		ca.DefaultOrganization,
		"organization (O) of the root and of every issued subject; used when the CA is created",
	)
	fs.StringVar(&f.caName, "ca-name", ca.DefaultRootName, "common name of the root; used when the CA is created")
	fs.StringVar(
		&f.keyType,
		"ca-key-type",
		string(ca.DefaultCAKeyType),
		"root key type when the CA is created: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096",
	)
	fs.StringSliceVar(
		&f.serverNames,
		flagnames.ServerName,
		nil,
		"extra DNS name or IP for the service certificate (repeatable)",
	)
	only.DurationVar(
		&f.spread,
		"rotation-spread",
		0,
		"spread node rotations over this window after their due point (4.5 years), per serial, so a fleet enrolled "+
			"together does not rotate together (e.g. 168h)",
	)
	only.DurationVar(
		&f.grace,
		"rotation-grace",
		rotation.DefaultPolicy.Grace,
		"how long a due certificate may stay unrotated before it is reported overdue",
	)
	only.Float64Var(
		&f.limits.Global,
		"limit-global",
		server.DefaultLimits.Global,
		"enrolment+renewal attempts per second over all nodes (0: off)",
	)
	only.Float64Var(
		&f.limits.PerNode,
		"limit-per-node",
		server.DefaultLimits.PerNode,
		"attempts per second per node or token (0: off)",
	)
	only.IntVar(
		&f.limits.PerNodeBurst,
		"limit-per-node-burst",
		server.DefaultLimits.PerNodeBurst,
		"burst of attempts per node or token",
	)
	fs.StringVar(
		&f.kekFile,
		flagnames.KEKFile,
		"",
		"file holding a key-encryption key (base64 of 32 random bytes) that seals the CA key in the store; default "+
			"$IPSECCA_KEK; without one the key is protected by file permissions only",
	)
	only.StringVar(
		&f.mode,
		flagnames.Mode,
		string(server.ModeFull),
		"the cluster's IPsec mode: Full (node certificates and bundle validation), External (bundle validation only) "+
			"or Disabled (node enrolment refused)",
	)
	f.store.register(fs, only)
	// init logs what it creates too.
	fs.StringVar(&f.logFormat, flagnames.LogFormat, "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
}

func (f *caFlags) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, usageError("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, usageError("--log-format %q: want text or json", f.logFormat)
}

// open opens the CA instance over the store the flags choose.
func (f *caFlags) open(ctx context.Context) (*daemon.Instance, *slog.Logger, error) {
	opts, log, err := f.options()
	if err != nil {
		return nil, nil, err
	}
	in, err := daemon.Open(ctx, opts)
	if err != nil {
		return nil, nil, err
	}
	return in, log, nil
}

// options are the daemon's options from the flags, checked.
func (f *caFlags) options() (daemon.Options, *slog.Logger, error) {
	log, err := f.logger()
	if err != nil {
		return daemon.Options{}, nil, err
	}
	keyType, err := ca.ParseKeyType(f.keyType)
	if err != nil {
		return daemon.Options{}, nil, usageError("--ca-key-type: %v", err)
	}
	if f.dataDir == "" {
		f.dataDir = envOr(envDataDir, defaultDataDir)
	}
	for _, n := range f.serverNames {
		if net.ParseIP(n) == nil && ca.ValidName(n) != nil {
			return daemon.Options{}, nil, usageError("--server-name %q is neither an IP address nor a DNS name", n)
		}
	}
	kek, err := readKEK(f.kekFile)
	if err != nil {
		return daemon.Options{}, nil, err
	}
	mode, err := server.ParseMode(f.mode)
	if err != nil {
		return daemon.Options{}, nil, usageError("--mode: %v", err)
	}
	policy := rotation.Policy{Fraction: rotation.DefaultPolicy.Fraction, Spread: f.spread, Grace: f.grace}
	if err := policy.Validate(rotation.NodeLifetime(time.Now())); err != nil {
		return daemon.Options{}, nil, usageError("%v", err)
	}
	if f.store.healthIval <= 0 {
		return daemon.Options{}, nil, usageError(
			"--etcd-health-interval %s: want a positive duration",
			f.store.healthIval,
		)
	}
	if f.store.kind == storeEtcd && kek == nil {
		return daemon.Options{}, nil, usageError(
			"--store etcd needs a key-encryption key (--kek-file or $IPSECCA_KEK, the same on every replica): the CA " +
				"key is kept in etcd only sealed",
		)
	}
	return daemon.Options{
		DataDir: f.dataDir,
		OpenStore: func(ctx context.Context) (daemon.Store, daemon.Cluster, error) {
			st, cluster, err := f.store.open(ctx, f.dataDir, log)
			return st, cluster, err
		},
		Root:           ca.RootConfig{Organization: f.org, CommonName: f.caName, KeyType: keyType, KEK: kek},
		ServerNames:    f.serverNames,
		Rotation:       policy,
		Limits:         f.limits,
		Mode:           mode,
		HealthInterval: f.store.healthIval,
		Self:           store.Replica{ID: f.store.replica(), Address: f.advertise, StartedAt: time.Now().UTC()},
		Logger:         log,
	}, log, nil
}

// readKEK reads the key-encryption key from file, else $IPSECCA_KEK; nil
// when neither is set.
func readKEK(file string) (ca.KEK, error) {
	text := os.Getenv("IPSECCA_KEK")
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read --kek-file: %w", err)
		}
		text = string(b)
	}
	if text == "" {
		return nil, nil
	}
	kek, err := ca.ParseKEK(text)
	if err != nil {
		return nil, usageError("%v", err)
	}
	return kek, nil
}

func newInitCmd() *cobra.Command {
	var f caFlags
	var subordinate bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the CA in a data directory (idempotent) without serving",
		Long: `init creates the root CA (10 years), the service's TLS certificate and the
admin client credentials in the data directory. Run again on the same
directory it keeps the existing root and prints its fingerprint.

With --subordinate the CA runs under your organisation's root instead: init
makes the CA key (sealed under the KEK when one is given) and a request for
a CA certificate, DATA-DIR/` + daemon.CSRFile + `, and nothing else. Have the request
signed by your root, import the certificate (ipsecca ca import), then serve.
Run again it writes the same request; on a subordinate that has its
certificate it writes a request for its renewal (same key and subject).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if subordinate {
				return initSubordinate(cmd, &f)
			}
			in, _, err := f.open(cmd.Context())
			if err != nil {
				return err
			}
			defer in.Close()
			root := in.Authority.Root()
			fmt.Fprintf(
				cmd.OutOrStdout(),
				"root: %s\nnot after: %s\nsha256: %s\nbundle: %s/%s\n",
				root.Cert.Subject.String(),
				root.Cert.NotAfter.UTC().Format(time.RFC3339),
				root.Fingerprint(),
				f.dataDir,
				daemon.CAFile,
			)
			return nil
		},
	}
	f.register(cmd.Flags(), false)
	cmd.Flags().BoolVar(&subordinate, "subordinate", false, "make a subordinate CA: its key and a request (ca.csr) "+
		"for your organisation's root to sign, then ipsecca ca import; --ca-name defaults to \""+
		ca.DefaultSubordinateName+"\"")
	return cmd
}

func newServeCmd() *cobra.Command {
	var f caFlags
	var kf kubeFlags
	var listen, metricsListen, pprofListen string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the CA service (gRPC over TLS); creates the CA on first start",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if kf.only {
				listen = "" // no gRPC listener: the Kubernetes front door alone
			}
			if f.advertise == "" {
				f.advertise = listen
			}
			// Every flag is checked and every address bound before anything
			// is written: a mistyped or busy address leaves no CA behind.
			opts, log, err := f.options()
			if err != nil {
				return err
			}
			if err := checkStoreFlags(&f.store, log); err != nil {
				return err
			}
			for _, a := range []struct{ flag, addr string }{
				{flagnames.Listen, listen}, {flagnames.MetricsListen, metricsListen}, {"pprof-listen", pprofListen},
			} {
				if err := checkListenAddr(a.flag, a.addr, a.flag == flagnames.Listen && !kf.only); err != nil {
					return err
				}
			}
			var kcfg kube.Config
			if kf.active() {
				if kcfg, err = kf.config(f.mode, log); err != nil {
					return err
				}
				if err := kcfg.Check(); err != nil {
					return usageError("%v", err)
				}
			}
			doors := daemon.Doors{Listen: listen, MetricsListen: metricsListen, PprofListen: pprofListen}
			if err := doors.Bind(); err != nil {
				var be *daemon.BindError
				if errors.As(err, &be) {
					flag := map[string]string{daemon.DoorGRPC: flagnames.Listen,
						daemon.DoorMetrics: flagnames.MetricsListen, daemon.DoorPprof: "pprof-listen"}[be.Door]
					err = fmt.Errorf("--%s: %w", flag, err)
				}
				return failure(err)
			}
			in, err := daemon.Open(ctx, opts)
			if err != nil {
				doors.Close()
				return err
			}
			defer in.Close()
			if kf.active() {
				sg, err := in.NewSigner(kcfg)
				if err != nil {
					doors.Close()
					return usageError("%v", err)
				}
				doors.Signer = sg
			}
			return in.Run(ctx, doors)
		},
	}
	f.register(cmd.Flags(), true)
	kf.register(cmd.Flags())
	cmd.Flags().StringVar(&listen, flagnames.Listen, "127.0.0.1:8443", "address to serve gRPC on")
	cmd.Flags().
		StringVar(&f.advertise, flagnames.Advertise, "",
			"address clients reach this replica at, shown by 'ipsecca status' (default: --listen)")
	cmd.Flags().
		StringVar(&metricsListen, flagnames.MetricsListen, "",
			"address to serve Prometheus /metrics on (off when empty)")
	cmd.Flags().
		StringVar(&pprofListen, "pprof-listen", "",
			"address to serve Go's /debug/pprof on, for profiling (off when empty; keep it on loopback)")
	return cmd
}

// checkListenAddr refuses an address serve cannot listen on whatever the
// host's state (a usage error): not host:port, or a port that is not a
// number 0-65535 or a service name. Empty is refused only when required.
func checkListenAddr(flag, addr string, required bool) error {
	if addr == "" {
		if required {
			return usageError("--%s: want host:port (e.g. 127.0.0.1:8443)", flag)
		}
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usageError("--%s %q: want host:port (e.g. 127.0.0.1:8443): %v", flag, addr, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return usageError("--%s %q: port %q: want a number from 0 to 65535", flag, addr, port)
	}
	return nil
}

// checkStoreFlags checks the store flags without opening the store (that
// writes the data directory).
func checkStoreFlags(sf *storeFlags, log *slog.Logger) error {
	switch sf.kind {
	case storeBolt:
		return nil
	case storeEtcd:
		_, err := sf.etcdOptions(log)
		return err
	}
	return usageError("--store %q: want bolt or etcd", sf.kind)
}
