package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ipsecca/ipsecca/daemon"
	"github.com/ipsecca/ipsecca/internal/flagnames"
	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/kube/deploy"
)

func newManifestsCmd() *cobra.Command {
	var o deploy.ManifestOptions
	var mode, cnFrom, format string
	cmd := &cobra.Command{
		Use:   "manifests",
		Short: "Print the Kubernetes manifests that deploy ipsecca (kubectl apply -f -)",
		Long: `manifests prints, as one YAML stream, everything that deploys ipsecca: the
namespace, service accounts, RBAC limited to what each part uses, the CA as a
StatefulSet with its data on a PersistentVolumeClaim and a Service on the gRPC
port, and (mode Full) the node sidecar DaemonSet. The CA bundle ConfigMap's
namespace (--ca-bundle-configmap) must exist: it is the cluster's, not ours.

--mode External deploys the CA for bundle validation only: no signer, no node
RBAC, no sidecar. --mode Disabled prints nothing and says why.

--store etcd deploys the CA highly available instead: --replicas replicas
(default 3) as a Deployment spread over the nodes, sharing the etcd cluster at
--etcd-endpoints, with a PodDisruptionBudget and no volume of their own. Their
key-encryption key, which seals the CA key in etcd, comes from the Secret
` + deploy.NameKEK + ` (key ` + deploy.KEKKey + `) that you create first; the printed manifests hold
no key material. --etcd-tls-secret names a Secret with the etcd client TLS
files (ca.crt, tls.crt, tls.key).

There is no encapsulation setting here: on a node, ovs-monitor-ipsec writes
libreswan's conns from OVN's option (ovn-nbctl set nb_global .
options:ipsec_encapsulation=true forces NAT-T, like OpenShift's Always).

--monitoring adds the monitoring pack: a ServiceMonitor for the CA's metrics
port (job ` + deploy.JobCA + `), a PodMonitor for the sidecars' (job ` + deploy.JobSidecar + `; the
sidecar then listens on host port ` + fmt.Sprint(deploy.DefaultSidecarMetrics) + `), a PrometheusRule with the alerts
and a ConfigMap holding the Grafana dashboard (label grafana_dashboard). The
Prometheus Operator's CRDs must be installed; without the operator, load the
same rule file (kube/deploy/monitoring/ipsecca-rules.yaml) into Prometheus.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := kube.ParseMode(mode)
			if err != nil {
				return usageError("%v", err)
			}
			o.Mode = m
			cf, err := kube.ParseCNFrom(cnFrom)
			if err != nil {
				return usageError("%v", err)
			}
			o.CNFrom = cf
			if o.Store == deploy.StoreEtcd && len(o.EtcdEndpoints) == 0 {
				return usageError("--store etcd needs --etcd-endpoints")
			}
			objs, err := deploy.Manifests(o)
			if err != nil {
				return usageError("%v", err)
			}
			if len(objs) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "ipsecca: %s\n", deploy.DisabledNote)
				return nil
			}
			// What to do before applying, as YAML comments; on stderr with -o json (JSON has none).
			out, notes := cmd.OutOrStdout(), cmd.OutOrStdout()
			if format == "json" {
				notes = cmd.ErrOrStderr()
			}
			if o.Store != deploy.StoreEtcd {
				fmt.Fprintf(
					notes,
					"# ipsecca manifests (namespace %s, mode %s): kubectl apply -f -\n",
					o.Namespace,
					o.Mode,
				)
			} else {
				// Manifests has filled in the defaults.
				replicas := o.Replicas
				if replicas == 0 {
					replicas = deploy.DefaultReplicas
				}
				fmt.Fprintf(notes,
					"# ipsecca manifests (namespace %s, mode %s, store etcd, %d replicas): kubectl apply -f -\n",
					o.Namespace, o.Mode, replicas)
				fmt.Fprintf(notes,
					"# First create the key-encryption key that seals the CA key in etcd (every replica must share "+
						"it; keep a copy:\n"+
						"# without it the CA in etcd cannot be opened), in the namespace (kubectl create namespace %s "+
						"if absent):\n"+
						"#   kubectl -n %s create secret generic %s --from-literal=%s=$(head -c32 /dev/urandom | base64)\n",
					o.Namespace, o.Namespace, deploy.NameKEK, deploy.KEKKey)
				if o.EtcdTLSSecret != "" {
					fmt.Fprintf(notes, "# and the etcd client TLS Secret %s (keys ca.crt, tls.crt, tls.key), e.g.:\n"+
						"#   kubectl -n %s create secret generic %s --from-file=ca.crt=... --from-file=tls.crt=... "+
						"--from-file=tls.key=...\n",
						o.EtcdTLSSecret, o.Namespace, o.EtcdTLSSecret)
				}
			}
			if format == "json" {
				return deploy.WriteJSON(out, objs)
			}
			return deploy.WriteYAML(out, objs)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&format, "output", "o", "yaml", "output format: yaml (documents) or json (a v1 List)")
	f.SetAnnotation("output", outputFormatsAnnotation, []string{"yaml", "json"})
	cmd.RegisterFlagCompletionFunc(
		"output",
		cobra.FixedCompletions([]string{"yaml", "json"}, cobra.ShellCompDirectiveNoFileComp),
	)
	f.StringVar(&o.Namespace, "namespace", kube.DefaultNamespace, "namespace of the CA and the sidecar")
	f.StringVar(&o.Image, "image", deploy.DefaultImage, "ipsecca container image")
	f.StringVar(&o.NSSDir, "nss-dir", deploy.DefaultNSSDir, "the nodes' NSS database directory (libreswan's)")
	f.StringVar(&mode, "mode", string(kube.ModeFull), "the cluster's IPsec mode: Full, External or Disabled")
	f.BoolVar(&o.Monitoring, "monitoring", false, fmt.Sprintf(
		"add a ServiceMonitor, a PodMonitor (sidecar --metrics-listen on host port %d), a PrometheusRule and a "+
			"Grafana dashboard ConfigMap (needs the Prometheus Operator's CRDs)", deploy.DefaultSidecarMetrics))
	f.StringVar(&o.SignerName, "signer-name", kube.DefaultSignerName, "CSR signer name the CA serves")
	f.StringVar(
		&o.RequesterPrefix,
		"requester-prefix",
		kube.DefaultRequesterPrefix,
		"user name prefix of the nodes' identities",
	)
	f.StringVar(&o.NodeGroup, "node-group", kube.DefaultNodeGroup, "group of the nodes' identities (may create CSRs)")
	f.StringVar(
		&cnFrom,
		"cn-from",
		string(kube.CNFromChassisID),
		"which name of a node its certificate's CN must be: chassis-id or node-name",
	)
	f.StringVar(
		&o.CABundleConfigMap,
		"ca-bundle-configmap",
		kube.DefaultCABundleConfigMap,
		"namespace/name of the CA bundle ConfigMap",
	)
	f.StringVar(&o.StorageSize, "storage-size", "1Gi", "size of the CA's data volume")
	f.StringVar(
		&o.StorageClass,
		"storage-class",
		"",
		"storage class of the CA's data volume (the cluster's default when empty)",
	)
	f.StringVar(
		&o.Store,
		"store",
		deploy.StoreBolt,
		"the CA's store: bolt (one replica, data on a volume) or etcd (--replicas replicas sharing an etcd cluster)",
	)
	f.StringSliceVar(
		&o.EtcdEndpoints,
		"etcd-endpoints",
		nil,
		"etcd client URLs, comma-separated (e.g. https://h1:2379,https://h2:2379,https://h3:2379); --store etcd only",
	)
	f.StringVar(
		&o.EtcdPrefix,
		"etcd-prefix",
		"",
		"key prefix of this CA in etcd (default "+deploy.DefaultEtcdPrefix+"); --store etcd only",
	)
	f.StringVar(
		&o.EtcdTLSSecret,
		"etcd-tls-secret",
		"",
		"Secret with the etcd client TLS files ca.crt, tls.crt and tls.key (no client TLS when empty); --store etcd "+
			"only",
	)
	f.Int32Var(
		&o.Replicas,
		"replicas",
		0,
		fmt.Sprintf("the CA's replicas (default %d with --store etcd; bolt serves one)", deploy.DefaultReplicas),
	)
	return cmd
}

func newHealthCmd() *cobra.Command {
	var c connFlags
	var service string
	var out *outputFlags
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Ask the server's gRPC health service (a probe: exit 0 when SERVING)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if c.caFile == "" {
				c.caFile = filepath.Join(envOr(envDataDir, defaultDataDir), daemon.CAFile)
			}
			conn, err := c.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := c.context()
			defer cancel()
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
			if err != nil {
				return failure(c.unreachable(rpcError("", err)))
			}
			v := struct {
				Service string `json:"service"`
				Status  string `json:"status"`
			}{service, resp.GetStatus().String()}
			if err := out.print(cmd, v, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, resp.GetStatus())
				return err
			}); err != nil {
				return err
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return failure(nil)
			}
			return nil
		},
	}
	c.register(cmd.Flags(), false)
	cmd.Flags().StringVar(&service, flagnames.Service, "", "service to ask about (empty: the server as a whole)")
	out = addOutput(cmd, false)
	return cmd
}

// kubeFlags are serve's flags for the Kubernetes front door.
type kubeFlags struct {
	enabled           bool
	only              bool
	kubeconfig        string
	signerName        string
	requesterPrefix   string
	cnFrom            string
	caBundleConfigMap string
	leaseNamespace    string
	leaseName         string
}

func (k *kubeFlags) register(fs *pflag.FlagSet) {
	fs.BoolVar(
		&k.enabled,
		flagnames.Kube,
		false,
		"also sign Kubernetes CSRs for --signer-name and publish the CA bundle ConfigMap (same CA, store and audit "+
			"log)",
	)
	fs.BoolVar(&k.only, "kube-only", false, "run the Kubernetes front door alone (no gRPC listener); implies --kube")
	fs.StringVar(&k.kubeconfig, flagnames.Kubeconfig, "", "kubeconfig file (default: the in-cluster configuration)")
	fs.StringVar(
		&k.signerName,
		flagnames.SignerName,
		kube.DefaultSignerName,
		"CSR signer name to serve (list/watch filtered on spec.signerName)",
	)
	fs.StringVar(
		&k.requesterPrefix,
		flagnames.RequesterPrefix,
		kube.DefaultRequesterPrefix,
		"a CSR's requester must be this prefix followed by an existing node's name",
	)
	fs.StringVar(
		&k.cnFrom,
		flagnames.CNFrom,
		string(kube.CNFromChassisID),
		"the CN a node may hold: chassis-id (its "+kube.AnnotationChassisID+" annotation) or node-name",
	)
	fs.StringVar(
		&k.caBundleConfigMap,
		flagnames.CABundleConfigMap,
		kube.DefaultCABundleConfigMap,
		"namespace/name of the ConfigMap holding the CA bundle (key "+kube.CABundleKey+")",
	)
	fs.StringVar(
		&k.leaseNamespace,
		"lease-namespace",
		"",
		"namespace of the leader-election Lease (default: this pod's namespace, else "+kube.DefaultNamespace+")",
	)
	fs.StringVar(&k.leaseName, "lease-name", kube.DefaultLeaseName, "name of the leader-election Lease")
}

// active reports whether the Kubernetes front door runs.
func (k *kubeFlags) active() bool { return k.enabled || k.only }

// restConfig loads --kubeconfig, or the in-cluster configuration.
func (k *kubeFlags) restConfig() (*rest.Config, error) {
	if k.kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", k.kubeconfig)
		if err != nil {
			return nil, usageError("--kubeconfig: %v", err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, usageError("--kube without --kubeconfig needs the in-cluster configuration: %v", err)
	}
	return cfg, nil
}

// config is the Kubernetes signer's configuration from the flags; the
// daemon fills in the CA's authority, store and metrics. Its logs go to
// log. IPSECCA_KUBE_FAULT_STEP (tests only) stops the process dead at a
// named step, as kill -9 would.
func (k *kubeFlags) config(mode string, log *slog.Logger) (kube.Config, error) {
	cnFrom, err := kube.ParseCNFrom(k.cnFrom)
	if err != nil {
		return kube.Config{}, usageError("%v", err)
	}
	m, err := kube.ParseMode(mode)
	if err != nil {
		return kube.Config{}, usageError("--mode: %v", err)
	}
	rc, err := k.restConfig()
	if err != nil {
		return kube.Config{}, err
	}
	client, err := kube.NewClient(rc) // the signer's user agent and request limits
	if err != nil {
		return kube.Config{}, err
	}
	cfg := kube.Config{
		Client:            client,
		SignerName:        k.signerName,
		RequesterPrefix:   k.requesterPrefix,
		CNFrom:            cnFrom,
		CABundleConfigMap: k.caBundleConfigMap,
		Mode:              m,
		LeaderElection:    kube.LeaderElection{Namespace: k.leaseNamespace, Name: k.leaseName},
		Logger:            log,
	}
	if step := os.Getenv("IPSECCA_KUBE_FAULT_STEP"); step != "" {
		cfg.Hook = func(_ context.Context, s string) error {
			if strings.HasPrefix(s, step) {
				log.Warn("fault injection: exiting", "step", s)
				os.Exit(137)
			}
			return nil
		}
	}
	return cfg, nil
}
