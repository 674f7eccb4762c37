// Package flagnames names the ipsecca command line that the deployment
// manifests write (kube) and the commands declare (cmd/ipsecca): the
// commands a container runs, their flags and the environment variables
// the flags fall back to. Both sides use these constants, so a renamed
// flag cannot leave the manifests running a command line the binary
// refuses.
package flagnames

// Commands the manifests' containers and probes run.
const (
	CmdServe   = "serve"
	CmdSidecar = "sidecar"
	CmdHealth  = "health"
)

// Flags (without the leading "--"; see Flag).
const (
	// serve and init: the CA's data and process.
	DataDir       = "data-dir"
	KEKFile       = "kek-file"
	Mode          = "mode"
	ServerName    = "server-name"
	LogFormat     = "log-format"
	Listen        = "listen"
	Advertise     = "advertise"
	MetricsListen = "metrics-listen"

	// serve's store.
	Store         = "store"
	EtcdEndpoints = "etcd-endpoints"
	EtcdPrefix    = "etcd-prefix"
	EtcdCACert    = "etcd-cacert"
	EtcdCert      = "etcd-cert"
	EtcdKey       = "etcd-key"
	ReplicaID     = "replica-id"

	// The Kubernetes front door (serve) and the sidecar's Kubernetes mode.
	Kube              = "kube"
	Kubeconfig        = "kubeconfig"
	SignerName        = "signer-name"
	RequesterPrefix   = "requester-prefix"
	CNFrom            = "cn-from"
	CABundleConfigMap = "ca-bundle-configmap"

	// Clients: how to reach and verify the server (health, sidecar, admin).
	Server  = "server"
	CAFile  = "ca-file"
	Service = "service"

	// The sidecar.
	Node     = "node"
	NSSDir   = "nss-dir"
	StateDir = "state-dir"
)

// Environment variables flags fall back to.
const (
	EnvServer  = "IPSECCA_SERVER"   // --server
	EnvDataDir = "IPSECCA_DATA_DIR" // --data-dir
)

// Flag is name as a command-line argument: "--" + name.
func Flag(name string) string { return "--" + name }
