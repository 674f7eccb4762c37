// Package cli is the node sidecar's command line: its flags and how they
// make a running agent. Both `ipsecca sidecar` and the small
// ipsecca-sidecar binary that the DaemonSet runs are this one command, so
// their flags cannot drift apart; the package links only the sidecar, not
// the CA (cfssl, zlint, etcd), which is what keeps the small binary small.
package cli

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ipsecca/ipsecca/internal/flagnames"
	"github.com/ipsecca/ipsecca/sidecar"
)

// Command returns the sidecar command, named use. usage marks an error as
// the command line's fault (exit status 2) in the caller's terms; every
// other error it returns is a failure (exit status 1).
func Command(use string, usage func(error) error) *cobra.Command {
	usagef := func(format string, a ...any) error { return usage(fmt.Errorf(format, a...)) }
	var c sidecar.Config
	var once, kubeMode, ovsMode bool
	var ovs sidecar.OVSConfig
	var logFormat, logLevel, kubeconfig string
	kc := &sidecar.KubeConfig{}
	cmd := &cobra.Command{
		Use:   use,
		Short: "Node agent: keep this node's certificate, key and the CA current in its NSS database",
		Long: `sidecar enrols the node with a bootstrap token (the first time, and again if
its certificate expired or was revoked), renews over mTLS when the server says
rotation is due, and keeps the node's NSS database (default /var/lib/ipsec/nss)
holding the CA as ovs_cert_cacert (CT,,) and the node's pair as
ovs_certkey_<CN> (u,u,u). PEM copies go to the state directory. With --once it
does one pass and exits 0 only when the database is correct.

With --ovs it delivers as OVN-Kubernetes' ovn-ipsec-host does: it writes the
certificate, key and CA bundle as PEM files (a new file per version, in
--ovs-pki-dir) and points Open_vSwitch other_config:certificate, private_key
and ca_cert at them, so that ovs-monitor-ipsec imports them into NSS and
rewrites the libreswan conns. It keeps the CA's CRL in NSS, and every
--report-interval reads the tunnels back from ovs-monitor-ipsec and pluto and
reports which certificate each live IKE SA presents (ipsecca mesh status).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if c.Server == "" {
				c.Server = os.Getenv(flagnames.EnvServer)
			}
			if kubeMode {
				rc, err := restConfig(kubeconfig, usagef)
				if err != nil {
					return err
				}
				rc.UserAgent = "ipsecca-sidecar"
				if kc.Client, err = sidecar.NewKubeClient(rc); err != nil {
					return err
				}
				c.Kube = kc
			} else if c.Server == "" || c.CAFile == "" {
				return usagef("--server (or $%s) and --ca-file are required (or --kube)", flagnames.EnvServer)
			}
			if ovsMode {
				c.OVS = &ovs
			}
			log, err := logger(logFormat, logLevel, usagef)
			if err != nil {
				return err
			}
			c.Logger = log
			c.Idle = releaseStartupPages
			// Test hook: stop the process dead at a named step, as kill -9
			// would. Unset in production.
			if step := os.Getenv("IPSECCA_FAULT_STEP"); step != "" {
				c.Hook = func(s string) error {
					if strings.HasPrefix(s, step) {
						c.Logger.Warn("fault injection: exiting", "step", s)
						os.Exit(137)
					}
					return nil
				}
			}
			agent, err := sidecar.New(c)
			if err != nil {
				return usage(err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if once {
				if _, err := agent.Pass(ctx); err != nil {
					return err
				}
				if err := agent.Check(ctx); err != nil {
					return fmt.Errorf("the NSS database is not correct after the pass: %w", err)
				}
				return nil
			}
			return agent.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.Server, flagnames.Server, "", "CA server host:port (default $"+flagnames.EnvServer+")")
	f.StringVar(&c.CAFile, flagnames.CAFile, "", "CA bundle to trust for the first contact")
	f.StringVarP(&c.Node, flagnames.Node, "n", "", "this node's name (the token's node)")
	f.StringVar(&c.CN, "cn", "", "certificate name, e.g. the OVS system-id (default: the node name)")
	f.StringVar(
		&c.TokenFile,
		"token-file",
		"",
		"file holding a bootstrap token (first enrolment, and after expiry or revocation)",
	)
	f.StringVar(&c.NSSDir, flagnames.NSSDir, "/var/lib/ipsec/nss", "the node's NSS database directory")
	f.StringVar(
		&c.StateDir,
		flagnames.StateDir,
		"/var/lib/ipsecca-sidecar",
		"private state directory (key versions, PEM copies)",
	)
	f.StringVar(&c.KeyType, "key-type", "rsa-2048", "node key type: rsa-2048 or ecdsa-p256")
	f.StringVar(&c.CANickname, "ca-nickname", sidecar.CANickname, "NSS nickname of the CA")
	f.StringVar(&c.Nickname, "nickname", "", "NSS nickname of the node certificate (default ovs_certkey_<CN>)")
	f.StringVar(&c.ReloadCmd, "reload-cmd", "", "command to run after a change (sh -c), e.g. 'ipsec whack --rereadall'")
	f.DurationVar(&c.ReloadTimeout, "reload-timeout", 30*time.Second, "timeout of the reload command")
	f.DurationVar(&c.MaxBackoff, "max-backoff", 5*time.Minute, "longest wait between retries when the server is away")
	f.StringVar(&c.MetricsListen, "metrics-listen", "", "address to serve Prometheus /metrics on (off when empty)")
	f.BoolVar(&once, "once", false, "do one pass and exit: 0 only when the NSS database is correct")
	f.BoolVar(
		&kubeMode,
		flagnames.Kube,
		false,
		"enrol and renew through Kubernetes CertificateSigningRequests, as OpenShift's node script does, instead of "+
			"gRPC (no token needed)",
	)
	f.StringVar(
		&kubeconfig,
		flagnames.Kubeconfig,
		"",
		"with --kube: the node's kubeconfig (default: the in-cluster configuration)",
	)
	f.StringVar(
		&kc.SignerName,
		flagnames.SignerName,
		"network.openshift.io/signer",
		"with --kube: the CSRs' signerName",
	)
	f.StringVar(
		&kc.CABundleConfigMap,
		flagnames.CABundleConfigMap,
		"openshift-ovn-kubernetes/signer-ca",
		"with --kube: namespace/name of the ConfigMap holding the CA bundle (key ca-bundle.crt)",
	)
	f.DurationVar(&kc.Wait, "csr-wait", 2*time.Minute, "with --kube: how long to wait for a CSR's certificate")
	f.BoolVar(&ovsMode, "ovs", false,
		"deliver through Open vSwitch's other_config for ovs-monitor-ipsec, and report the tunnels")
	f.StringVar(&ovs.DB, "ovs-db", "", "with --ovs: the OVSDB remote (default unix:<ovs-rundir>/db.sock)")
	f.StringVar(&ovs.RunDir, "ovs-rundir", sidecar.DefaultOVSRunDir,
		"with --ovs: OVS's run directory, where ovs-monitor-ipsec's pidfile and control socket are")
	f.StringVar(&ovs.PKIDir, "ovs-pki-dir", "",
		"with --ovs: where the PEM files other_config points at go (default <state-dir>/ovs)")
	f.StringVar(&ovs.PlutoCtl, "pluto-ctl", sidecar.DefaultPlutoCtl, "with --ovs: pluto's control socket")
	f.StringVar(&ovs.PlutoStartCmd, "pluto-start-cmd", "",
		"with --ovs: command (sh -c) that starts pluto, e.g. 'systemctl start ipsec'; once the old key of a CA key "+
			"rollover is retired the sidecar stops pluto with its IPsec SAs left in the kernel and runs it, so that "+
			"pluto honours CRLs from the new key (empty: the sidecar only warns)")
	f.DurationVar(&ovs.ReportInterval, "report-interval", 30*time.Second,
		"with --ovs: how often the tunnels are read and reported, and the CRL refreshed")
	f.StringVar(&logFormat, flagnames.LogFormat, "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	cmd.MarkFlagRequired(flagnames.Node)
	return cmd
}

// restConfig is the node's Kubernetes client configuration: its kubeconfig
// file, else the in-cluster configuration.
func restConfig(kubeconfig string, usagef func(string, ...any) error) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, usagef("--kubeconfig: %v", err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, usagef("--kube without --kubeconfig needs the in-cluster configuration: %v", err)
	}
	return cfg, nil
}

// logger is the agent's logger on stderr, as --log-format and --log-level say.
func logger(format, level string, usagef func(string, ...any) error) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, usagef("--log-format %q: want text or json", format)
}
