package kube

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/store"
)

// Defaults, as OpenShift's network operator and OVN-Kubernetes name things.
const (
	DefaultSignerName        = "network.openshift.io/signer"
	DefaultRequesterPrefix   = "system:ovn-node:"
	DefaultCABundleConfigMap = "openshift-ovn-kubernetes/signer-ca"
	// CABundleKey is the ConfigMap key holding the PEM bundle.
	CABundleKey = "ca-bundle.crt"
	// CRLKey is the ConfigMap key holding the CA's current CRL (PEM, X509
	// CRL): nodes read it under the RBAC they already have for the bundle.
	CRLKey = "ca-crl.pem"
	// DefaultLeaseName is the coordination.k8s.io Lease replicas elect a
	// leader on.
	DefaultLeaseName = "ipsecca-signer"
	// DefaultNamespace is where ipsecca runs (manifests, the Lease).
	DefaultNamespace = "ipsecca"
	// DefaultNodeGroup is the group of the nodes' identities.
	DefaultNodeGroup = "system:ovn-nodes"

	// LabelIPsecCSR is the label OVN-Kubernetes puts on a node's CSR: the node's name.
	LabelIPsecCSR = "k8s.ovn.org/ipsec-csr"
	// AnnotationChassisID is the Node annotation holding the OVS system-id.
	AnnotationChassisID = "k8s.ovn.org/node-chassis-id"

	// IssuedTTL: CSRs with a decision are deleted this long after it.
	IssuedTTL = time.Hour
	// PendingTTL: CSRs without an answer are deleted this long after creation.
	PendingTTL = 24 * time.Hour
)

// DefaultWorkers is how many nodes' CSRs are decided at once. A decision
// waits mostly on the API server (two writes) and on the store's commit,
// which batches concurrent issuances: a flood of node CSRs (a cluster's
// nodes all starting at once) is served by as many in flight as the API
// server and the store take well, not by the signer's CPU.
const DefaultWorkers = 32

// CNFrom says which name of a Node its certificate's CN must be.
type CNFrom string

// CN sources.
const (
	// CNFromChassisID: the Node's k8s.ovn.org/node-chassis-id annotation
	// (the OVS system-id, which OVN uses as the IPsec identity).
	CNFromChassisID CNFrom = "chassis-id"
	// CNFromNodeName: the Node's name.
	CNFromNodeName CNFrom = "node-name"
)

// ParseCNFrom parses a --cn-from value.
func ParseCNFrom(s string) (CNFrom, error) {
	switch CNFrom(strings.ToLower(s)) {
	case CNFromChassisID:
		return CNFromChassisID, nil
	case CNFromNodeName:
		return CNFromNodeName, nil
	}
	return "", fmt.Errorf("kube: --cn-from %q: want chassis-id or node-name", s)
}

// Mode is the cluster's IPsec mode, as OpenShift's network config names
// it (the same values as server.Mode).
type Mode string

// Modes.
const (
	ModeFull     Mode = "Full"     // nodes get certificates: the signer signs
	ModeExternal Mode = "External" // external endpoints only: CSRs are left alone
	ModeDisabled Mode = "Disabled" // no IPsec: CSRs are left for another signer
)

// ParseMode parses a mode name (case-insensitive).
func ParseMode(s string) (Mode, error) {
	for _, m := range []Mode{ModeFull, ModeExternal, ModeDisabled} {
		if strings.EqualFold(s, string(m)) {
			return m, nil
		}
	}
	return "", fmt.Errorf("kube: mode %q: want Full, External or Disabled", s)
}

// Authority is the CA core as the signer uses it (*ca.Authority).
type Authority interface {
	IssueForNode(ctx context.Context, req ca.NodeRequest) (*store.Cert, error)
	Root() *ca.Root
	// CRL is the current CRL (DER), signed by the current root.
	CRL(ctx context.Context) ([]byte, error)
}

var _ Authority = (*ca.Authority)(nil)

// Store is what the signer reads and appends in the store.
type Store interface {
	// CertByRequest returns the certificate stored for a CSR UID, or an
	// error wrapping store.ErrNotFound.
	CertByRequest(ctx context.Context, uid string) (*store.Cert, error)
	AppendEvent(ctx context.Context, ev store.Event) error
	// Node returns what the store knows of a node (whether it is revoked),
	// or an error wrapping store.ErrNotFound.
	Node(ctx context.Context, name string) (*store.NodeInfo, error)
}

// LeaderElection configures the election among replicas.
type LeaderElection struct {
	// Disabled runs the signer without a Lease (one replica only).
	Disabled bool
	// Namespace and Name of the Lease; InClusterNamespace() and
	// DefaultLeaseName when empty.
	Namespace string
	Name      string
	// Identity of this replica; the host name and a random suffix when empty.
	Identity string
	// Timings; client-go's usual 15s/10s/2s when zero.
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
}

// Config configures a Signer.
type Config struct {
	Client    kubernetes.Interface // required
	Authority Authority            // required
	Store     Store                // required

	SignerName        string // DefaultSignerName when empty
	RequesterPrefix   string // DefaultRequesterPrefix when empty
	CNFrom            CNFrom // CNFromChassisID when empty
	CABundleConfigMap string // "namespace/name"; DefaultCABundleConfigMap when empty
	Mode              Mode   // ModeFull when empty

	LeaderElection LeaderElection

	// Workers process the queue concurrently (one node at a time each);
	// DefaultWorkers when zero.
	Workers int
	// PerNodeRate and PerNodeBurst bound how often one node's requests are
	// decided (per second); 1 and 5 when zero. Requests beyond it wait in
	// the queue: nothing is dropped.
	PerNodeRate  float64
	PerNodeBurst int
	// ChassisIDWait is how long a CSR waits for its Node's chassis-id
	// annotation (OVN-Kubernetes sets it as it starts) before it is denied;
	// 30s when zero, none when negative.
	ChassisIDWait time.Duration
	// IssuedTTL and PendingTTL override the clean-up ages (tests).
	IssuedTTL, PendingTTL time.Duration
	// Resync is how often the ConfigMap (bundle and CRL) is checked and
	// old CSRs are cleaned up even when nothing changed; 30s when zero.
	Resync time.Duration

	Clock  ca.Clock // ClockFunc(time.Now) when nil
	Logger *slog.Logger
	// Metrics registers the signer's metrics when set.
	Metrics prometheus.Registerer

	// Hook, when set, is called at named steps of a decision ("stored":
	// the certificate is in the store and not yet on the CSR; "approved":
	// approved, not yet published). A test uses it to stop a signer dead
	// between two steps; an error aborts the step. Nil in production.
	Hook func(ctx context.Context, step string) error
}

// Hook steps.
const (
	StepStored   = "stored"
	StepApproved = "approved"
)

// Check checks the names and modes a user supplies (signer name, CN
// source, ConfigMap, mode), so that a process can refuse them before it
// does anything; New checks them again.
func (c Config) Check() error {
	return c.setNames()
}

func (c *Config) setDefaults() error {
	if c.Client == nil || c.Authority == nil || c.Store == nil {
		return errors.New("kube: Config needs Client, Authority and Store")
	}
	if err := c.setNames(); err != nil {
		return err
	}
	return c.setTunables()
}

// setNames defaults and checks what a user supplies.
func (c *Config) setNames() error {
	if c.SignerName == "" {
		c.SignerName = DefaultSignerName
	}
	if errs := validation.IsQualifiedName(c.SignerName); len(errs) > 0 || !strings.Contains(c.SignerName, "/") {
		return fmt.Errorf("kube: signer name %q must be a qualified name with a domain, like %s",
			c.SignerName, DefaultSignerName)
	}
	if c.RequesterPrefix == "" {
		c.RequesterPrefix = DefaultRequesterPrefix
	}
	if c.CNFrom == "" {
		c.CNFrom = CNFromChassisID
	}
	if _, err := ParseCNFrom(string(c.CNFrom)); err != nil {
		return err
	}
	if c.CABundleConfigMap == "" {
		c.CABundleConfigMap = DefaultCABundleConfigMap
	}
	if _, _, err := SplitNamespacedName(c.CABundleConfigMap); err != nil {
		return err
	}
	if c.Mode == "" {
		c.Mode = ModeFull
	}
	if _, err := ParseMode(string(c.Mode)); err != nil {
		return err
	}
	if ns := c.LeaderElection.Namespace; ns != "" && len(validation.IsDNS1123Label(ns)) > 0 {
		return fmt.Errorf("kube: lease namespace %q is not a valid namespace name (a DNS label)", ns)
	}
	if n := c.LeaderElection.Name; n != "" && len(validation.IsDNS1123Subdomain(n)) > 0 {
		return fmt.Errorf("kube: lease name %q is not a valid object name (a DNS subdomain)", n)
	}
	return nil
}

// setTunables defaults the election and the workers' settings.
func (c *Config) setTunables() error {
	le := &c.LeaderElection
	if le.Namespace == "" {
		le.Namespace = InClusterNamespace()
	}
	if le.Name == "" {
		le.Name = DefaultLeaseName
	}
	if le.Identity == "" {
		le.Identity = DefaultIdentity()
	}
	if le.LeaseDuration == 0 {
		le.LeaseDuration = 15 * time.Second
	}
	if le.RenewDeadline == 0 {
		le.RenewDeadline = 10 * time.Second
	}
	if le.RetryPeriod == 0 {
		le.RetryPeriod = 2 * time.Second
	}
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	if c.PerNodeRate <= 0 {
		c.PerNodeRate = 1
	}
	if c.PerNodeBurst <= 0 {
		c.PerNodeBurst = 5
	}
	if c.ChassisIDWait == 0 {
		c.ChassisIDWait = 30 * time.Second
	}
	if c.IssuedTTL == 0 {
		c.IssuedTTL = IssuedTTL
	}
	if c.PendingTTL == 0 {
		c.PendingTTL = PendingTTL
	}
	if c.Resync <= 0 {
		c.Resync = 30 * time.Second
	}
	if c.Clock == nil {
		c.Clock = ca.ClockFunc(time.Now)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Client-side request limits of the signer's client. client-go's default
// (5 requests/s, bursts of 10) would hold a flood of node CSRs to about one
// a second (each takes a few requests); the API server's own flow control
// (APF) protects it, and these only bound a runaway loop.
const (
	ClientQPS   = 500
	ClientBurst = 1000
)

// NewClient returns the signer's client for rc: rc with the user agent
// ipsecca-signer and the limits ClientQPS and ClientBurst, unless rc sets
// its own, and without gzip: the API server would compress every watch
// event for the signer alone (CPU on both sides, per CSR) to save bytes
// on what is a cluster-local connection.
func NewClient(rc *rest.Config) (kubernetes.Interface, error) {
	rc = rest.CopyConfig(rc)
	rc.DisableCompression = true
	if rc.UserAgent == "" {
		rc.UserAgent = "ipsecca-signer"
	}
	if rc.QPS == 0 && rc.RateLimiter == nil {
		rc.QPS, rc.Burst = ClientQPS, ClientBurst
	}
	return kubernetes.NewForConfig(rc)
}

// SplitNamespacedName splits "namespace/name".
func SplitNamespacedName(s string) (namespace, name string, err error) {
	ns, n, ok := strings.Cut(s, "/")
	if !ok || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(n)) > 0 {
		return "", "", fmt.Errorf("kube: %q: want namespace/name", s)
	}
	return ns, n, nil
}

// InClusterNamespace is the namespace this pod runs in (its service
// account's), else DefaultNamespace.
func InClusterNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
		if ns := strings.TrimSpace(string(b)); ns != "" {
			return ns
		}
	}
	return DefaultNamespace
}

// DefaultIdentity is a replica identity: the host (pod) name and a random
// suffix, so a restarted pod is a new candidate.
func DefaultIdentity() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "ipsecca"
	}
	var b [4]byte
	rand.Read(b[:])
	return host + "_" + hex.EncodeToString(b[:])
}
