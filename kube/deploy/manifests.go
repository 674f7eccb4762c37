package deploy

import (
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/ipsecca/ipsecca/internal/flagnames"
	"github.com/ipsecca/ipsecca/kube"
)

// Manifest defaults.
const (
	DefaultImage   = "ghcr.io/ipsecca/ipsecca:latest"
	DefaultNSSDir  = "/var/lib/ipsec/nss"
	DefaultGRPC    = 8443
	DefaultMetrics = 9090
	// VolumeDir is where the data volume is mounted in the CA's container:
	// a PVC with the bolt store, an emptyDir with the etcd store (the
	// replica's own service certificates and the public bundle; the state
	// is in etcd).
	VolumeDir = "/var/lib/ipsecca"
	// DataDir is the CA's data directory, which the CA creates inside the
	// volume (mode 0700, its own user): the volume's root belongs to root
	// with group fsGroup, and the CA, refusing a data directory others
	// can read, could not tighten a directory it does not own.
	DataDir = VolumeDir + "/ca"
	// DefaultReplicas is the CA's replica count with the etcd store.
	DefaultReplicas = 3
	// DefaultEtcdPrefix is the CA's key prefix in etcd (store/etcd's default).
	DefaultEtcdPrefix = "/ipsecca"
	// KEKDir holds, in the CA's container, the key-encryption key from the
	// Secret NameKEK (etcd store): file KEKDir/KEKKey.
	KEKDir = "/etc/ipsecca/kek"
	// KEKKey is the KEK's key in the Secret NameKEK.
	KEKKey = "kek"
	// EtcdTLSDir holds, in the CA's container, the etcd client TLS Secret
	// (ca.crt, tls.crt, tls.key) when ManifestOptions.EtcdTLSSecret is set.
	EtcdTLSDir = "/etc/ipsecca/etcd"
	// SidecarCommand is the small node agent in the image (cmd/ipsecca-sidecar),
	// which the DaemonSet runs: the same command line as `ipsecca sidecar`
	// (its arguments start with the word sidecar, so they run on either
	// binary) without the CA's code, which would cost every node memory.
	SidecarCommand = "/usr/local/bin/ipsecca-sidecar"
	// SidecarStateDir is the sidecar's private state on the host.
	SidecarStateDir = "/var/lib/ipsecca-sidecar"
	// NodeCredentialsDir is mounted (read-only) into the sidecar: the
	// node's own Kubernetes credentials (system:ovn-node:<node>), with
	// which it creates its CSRs.
	NodeCredentialsDir = "/etc/ovn"

	// Object names.
	NameCA      = "ipsecca"
	NameSidecar = "ipsecca-sidecar"
	NameSigner  = "ipsecca-signer"
	NameNodeCSR = "ipsecca-node-csr"
	NameBundle  = "ipsecca-ca-bundle"
	NameLeader  = "ipsecca-leader-election"
	// NameKEK is the Secret holding the key-encryption key of the etcd
	// store's replicas: created by the operator, never printed.
	NameKEK = "ipsecca-kek"
)

// Store backends of the CA (serve's --store).
const (
	StoreBolt = "bolt"
	StoreEtcd = "etcd"
)

// DisabledNote says why --mode Disabled prints nothing.
const DisabledNote = "the cluster's IPsec mode is Disabled: nothing to apply (no CA, no signer, no sidecar); " +
	"choose --mode External (bundle validation for external endpoints) or Full (node certificates too)"

// ManifestOptions are the knobs of the printed manifests.
type ManifestOptions struct {
	Namespace string    // DefaultNamespace when empty
	Image     string    // DefaultImage when empty
	NSSDir    string    // DefaultNSSDir when empty
	Mode      kube.Mode // ModeFull when empty
	// No encapsulation knob: ovs-monitor-ipsec writes libreswan's conns
	// from OVN's ipsec_encapsulation option, which the sidecar never sees.

	SignerName        string      // DefaultSignerName when empty
	RequesterPrefix   string      // DefaultRequesterPrefix when empty
	NodeGroup         string      // DefaultNodeGroup when empty: the nodes' identities' group
	CNFrom            kube.CNFrom // CNFromChassisID when empty
	CABundleConfigMap string      // DefaultCABundleConfigMap when empty
	LeaseName         string      // DefaultLeaseName when empty
	StorageSize       string      // "1Gi" when empty; bolt store only
	StorageClass      string      // the cluster's default when empty; bolt store only

	// Store is the CA's backend: StoreBolt (the default when empty) runs
	// one replica as a StatefulSet with its data on a PersistentVolumeClaim;
	// StoreEtcd runs Replicas of them as a Deployment sharing an etcd
	// cluster, with a PodDisruptionBudget and the key-encryption key from
	// the Secret NameKEK (which the operator creates: it is never printed).
	Store string
	// EtcdEndpoints are the etcd client URLs (https://host:port,
	// http://host:port or host:port); required with StoreEtcd, none
	// otherwise.
	EtcdEndpoints []string
	// EtcdPrefix is the CA's key prefix in etcd; DefaultEtcdPrefix when
	// empty. StoreEtcd only.
	EtcdPrefix string
	// EtcdTLSSecret names a Secret in Namespace with the etcd client TLS
	// files (ca.crt, tls.crt, tls.key), mounted at EtcdTLSDir; none (no
	// client TLS) when empty. StoreEtcd only.
	EtcdTLSSecret string
	// Replicas is the CA's replica count: DefaultReplicas with StoreEtcd
	// when 0; with StoreBolt 0 or 1 (one replica: the store is a file).
	Replicas int32

	// Monitoring adds the monitoring pack (Prometheus Operator and Grafana
	// objects: see monitoringObjects) and the sidecar's metrics listener.
	Monitoring bool

	// SidecarArgs replaces the sidecar container's arguments to
	// SidecarCommand (the default is `sidecar --kube`, as this node with its
	// own credentials).
	SidecarArgs []string
}

func (o *ManifestOptions) setDefaults() error {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&o.Namespace, kube.DefaultNamespace)
	def(&o.Image, DefaultImage)
	def(&o.NSSDir, DefaultNSSDir)
	def(&o.SignerName, kube.DefaultSignerName)
	def(&o.RequesterPrefix, kube.DefaultRequesterPrefix)
	def(&o.NodeGroup, kube.DefaultNodeGroup)
	def(&o.CABundleConfigMap, kube.DefaultCABundleConfigMap)
	def(&o.LeaseName, kube.DefaultLeaseName)
	def(&o.StorageSize, "1Gi")
	if o.Mode == "" {
		o.Mode = kube.ModeFull
	}
	m, err := kube.ParseMode(string(o.Mode))
	if err != nil {
		return err
	}
	o.Mode = m
	if o.CNFrom == "" {
		o.CNFrom = kube.CNFromChassisID
	}
	if _, err := kube.ParseCNFrom(string(o.CNFrom)); err != nil {
		return err
	}
	if errs := validation.IsDNS1123Label(o.Namespace); len(errs) > 0 {
		return fmt.Errorf("kube: namespace %q: %s", o.Namespace, strings.Join(errs, "; "))
	}
	if !strings.HasPrefix(o.NSSDir, "/") {
		return fmt.Errorf("kube: the NSS directory %q must be an absolute path", o.NSSDir)
	}
	if _, _, err := kube.SplitNamespacedName(o.CABundleConfigMap); err != nil {
		return err
	}
	if _, err := resource.ParseQuantity(o.StorageSize); err != nil {
		return fmt.Errorf("kube: storage size %q: %v", o.StorageSize, err)
	}
	return o.setStoreDefaults()
}

// setStoreDefaults validates the store options and fills their defaults.
func (o *ManifestOptions) setStoreDefaults() error {
	if o.Replicas < 0 {
		return fmt.Errorf("kube: %d replicas: want at least 1", o.Replicas)
	}
	switch o.Store {
	case "", StoreBolt:
		o.Store = StoreBolt
		switch {
		case o.Replicas > 1:
			return fmt.Errorf(
				"kube: %d replicas need the etcd store: the bolt store is a file on one replica's volume",
				o.Replicas,
			)
		case len(o.EtcdEndpoints) > 0 || o.EtcdPrefix != "" || o.EtcdTLSSecret != "":
			return fmt.Errorf("kube: etcd endpoints, prefix and TLS secret are for the etcd store, not bolt")
		}
		o.Replicas = 1
		return nil
	case StoreEtcd:
	default:
		return fmt.Errorf("kube: store %q: want %s or %s", o.Store, StoreBolt, StoreEtcd)
	}
	if o.Replicas == 0 {
		o.Replicas = DefaultReplicas
	}
	if len(o.EtcdEndpoints) == 0 {
		return fmt.Errorf("kube: the etcd store needs etcd endpoints")
	}
	for _, e := range o.EtcdEndpoints {
		scheme, rest, found := strings.Cut(e, "://")
		if !found {
			scheme, rest = "", e
		}
		if rest == "" || strings.ContainsAny(rest, ", \t\n/") || (found && scheme != "http" && scheme != "https") {
			return fmt.Errorf("kube: etcd endpoint %q: want host:port, http://host:port or https://host:port", e)
		}
	}
	if o.EtcdPrefix == "" {
		o.EtcdPrefix = DefaultEtcdPrefix
	}
	if !strings.HasPrefix(o.EtcdPrefix, "/") || strings.ContainsAny(o.EtcdPrefix, " \t\n") {
		return fmt.Errorf("kube: etcd prefix %q must start with / and hold no spaces", o.EtcdPrefix)
	}
	if o.EtcdTLSSecret != "" {
		if errs := validation.IsDNS1123Subdomain(o.EtcdTLSSecret); len(errs) > 0 {
			return fmt.Errorf("kube: etcd TLS secret %q: %s", o.EtcdTLSSecret, strings.Join(errs, "; "))
		}
	}
	if o.StorageClass != "" {
		return fmt.Errorf("kube: storage class %q: the etcd store's replicas keep no volume", o.StorageClass)
	}
	return nil
}

// Manifests builds the objects that deploy ipsecca, in apply order:
// Namespace, ServiceAccounts, RBAC, Service, the CA (a StatefulSet with
// the bolt store; a Deployment and its PodDisruptionBudget with the etcd
// store) and (Full only) the sidecar DaemonSet. Disabled returns none (see
// DisabledNote); External has no signer, no node RBAC and no sidecar. No
// object holds key material: with the etcd store the replicas read the
// KEK from the Secret NameKEK, which the operator creates.
func Manifests(o ManifestOptions) ([]runtime.Object, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	if o.Mode == kube.ModeDisabled {
		return nil, nil
	}
	full := o.Mode == kube.ModeFull
	labels := func(component string) map[string]string {
		return map[string]string{
			"app.kubernetes.io/name":      "ipsecca",
			"app.kubernetes.io/component": component,
			kube.LabelManagedBy:           "ipsecca",
		}
	}
	meta := func(name, namespace, component string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels(component)}
	}
	ns := o.Namespace
	sa := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: NameCA, Namespace: ns}
	cmNS, cmName, _ := kube.SplitNamespacedName(o.CABundleConfigMap)

	objs := []runtime.Object{
		&corev1.Namespace{
			TypeMeta: typeMeta("v1", "Namespace"),
			ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{
				"app.kubernetes.io/name": "ipsecca", kube.LabelManagedBy: "ipsecca",
				// The sidecar needs host paths and the host network.
				"pod-security.kubernetes.io/enforce": "privileged",
			}},
		},
		&corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: meta(NameCA, ns, "ca")},
	}
	if full {
		objs = append(
			objs,
			// The sidecar acts with the node's own credentials (so the
			// signer sees system:ovn-node:<node>); its service account
			// has no rights and no token.
			&corev1.ServiceAccount{
				TypeMeta:                     typeMeta("v1", "ServiceAccount"),
				ObjectMeta:                   meta(NameSidecar, ns, "sidecar"),
				AutomountServiceAccountToken: ptr.To(false),
			},
			// The signer: watch its CSRs, approve/deny and publish for
			// its signer name only, read Nodes, delete old CSRs.
			&rbacv1.ClusterRole{
				TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
				ObjectMeta: meta(NameSigner, "", "ca"),
				Rules: []rbacv1.PolicyRule{
					{
						APIGroups: []string{"certificates.k8s.io"},
						Resources: []string{"certificatesigningrequests"},
						Verbs:     []string{"get", "list", "watch", "delete"},
					},
					{
						APIGroups: []string{"certificates.k8s.io"},
						Resources: []string{"certificatesigningrequests/approval", "certificatesigningrequests/status"},
						Verbs:     []string{"update"},
					},
					{
						APIGroups:     []string{"certificates.k8s.io"},
						Resources:     []string{"signers"},
						ResourceNames: []string{o.SignerName},
						Verbs:         []string{"approve", "sign"},
					},
					{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
				},
			},
			&rbacv1.ClusterRoleBinding{
				TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
				ObjectMeta: meta(NameSigner, "", "ca"),
				RoleRef: rbacv1.RoleRef{
					APIGroup: rbacv1.GroupName,
					Kind:     "ClusterRole",
					Name:     NameSigner,
				},
				Subjects: []rbacv1.Subject{sa},
			},
			// The CA bundle ConfigMap: created if absent, then only this one.
			&rbacv1.Role{
				TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "Role"),
				ObjectMeta: meta(NameBundle, cmNS, "ca"),
				Rules: []rbacv1.PolicyRule{
					{
						APIGroups:     []string{""},
						Resources:     []string{"configmaps"},
						ResourceNames: []string{cmName},
						Verbs:         []string{"get", "list", "watch", "update"},
					},
					{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}},
				},
			},
			&rbacv1.RoleBinding{
				TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"),
				ObjectMeta: meta(NameBundle, cmNS, "ca"),
				RoleRef: rbacv1.RoleRef{
					APIGroup: rbacv1.GroupName,
					Kind:     "Role",
					Name:     NameBundle,
				},
				Subjects: []rbacv1.Subject{sa},
			},
			// Leader election among the CA's replicas.
			&rbacv1.Role{
				TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "Role"),
				ObjectMeta: meta(NameLeader, ns, "ca"),
				Rules: []rbacv1.PolicyRule{
					{
						APIGroups:     []string{"coordination.k8s.io"},
						Resources:     []string{"leases"},
						ResourceNames: []string{o.LeaseName},
						Verbs:         []string{"get", "update"},
					},
					{
						APIGroups: []string{"coordination.k8s.io"},
						Resources: []string{"leases"},
						Verbs:     []string{"create"},
					},
				},
			},
			&rbacv1.RoleBinding{
				TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"),
				ObjectMeta: meta(NameLeader, ns, "ca"),
				RoleRef: rbacv1.RoleRef{
					APIGroup: rbacv1.GroupName,
					Kind:     "Role",
					Name:     NameLeader,
				},
				Subjects: []rbacv1.Subject{sa},
			},
			// The nodes: create their CSRs and wait for the certificate,
			// read their Node's chassis-id annotation (the CN), read the CA
			// bundle.
			&rbacv1.ClusterRole{
				TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
				ObjectMeta: meta(NameNodeCSR, "", "sidecar"),
				Rules: []rbacv1.PolicyRule{
					{
						APIGroups: []string{"certificates.k8s.io"},
						Resources: []string{"certificatesigningrequests"},
						Verbs:     []string{"create", "get", "watch"},
					},
					{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get"}},
				},
			},
			&rbacv1.ClusterRoleBinding{
				TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
				ObjectMeta: meta(NameNodeCSR, "", "sidecar"),
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: NameNodeCSR},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: o.NodeGroup}},
			},
			&rbacv1.Role{
				TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "Role"),
				ObjectMeta: meta(NameNodeCSR, cmNS, "sidecar"),
				Rules: []rbacv1.PolicyRule{
					{
						APIGroups:     []string{""},
						Resources:     []string{"configmaps"},
						ResourceNames: []string{cmName},
						Verbs:         []string{"get"},
					},
				},
			},
			&rbacv1.RoleBinding{
				TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"),
				ObjectMeta: meta(NameNodeCSR, cmNS, "sidecar"),
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: NameNodeCSR},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: o.NodeGroup}},
			},
		)
	}
	objs = append(objs, caService(o, meta, labels))
	if o.Store == StoreEtcd {
		objs = append(objs, caDeployment(o, meta, labels), caDisruptionBudget(o, meta, labels))
	} else {
		objs = append(objs, caStatefulSet(o, meta, labels))
	}
	if full {
		objs = append(objs, sidecarDaemonSet(o, meta, labels))
	}
	if o.Monitoring {
		mon, err := monitoringObjects(o, meta, labels)
		if err != nil {
			return nil, err
		}
		objs = append(objs, mon...)
	}
	return objs, nil
}

// flagArg is a flag name as a container argument: "--" + name.
func flagArg(name string) string { return flagnames.Flag(name) }

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

type metaFunc func(name, namespace, component string) metav1.ObjectMeta

func caService(o ManifestOptions, meta metaFunc, labels func(string) map[string]string) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   typeMeta("v1", "Service"),
		ObjectMeta: meta(NameCA, o.Namespace, "ca"),
		Spec: corev1.ServiceSpec{
			Selector: labels("ca"),
			Ports: []corev1.ServicePort{
				{
					Name:        "grpc",
					Port:        DefaultGRPC,
					TargetPort:  intstr.FromString("grpc"),
					Protocol:    corev1.ProtocolTCP,
					AppProtocol: ptr.To("grpc"),
				},
				{
					Name:       "metrics",
					Port:       DefaultMetrics,
					TargetPort: intstr.FromString("metrics"),
					Protocol:   corev1.ProtocolTCP,
				},
			},
		},
	}
}

// caPodTemplate is the CA's pod, the same for the bolt StatefulSet and
// the etcd Deployment but for the store's flags and volumes.
func caPodTemplate(o ManifestOptions, labels func(string) map[string]string) corev1.PodTemplateSpec {
	etcd := o.Store == StoreEtcd
	svc := fmt.Sprintf("%s.%s.svc", NameCA, o.Namespace)
	args := []string{flagnames.CmdServe, flagArg(flagnames.DataDir), DataDir}
	if etcd {
		args = append(args, flagArg(flagnames.Store), StoreEtcd,
			flagArg(flagnames.EtcdEndpoints), strings.Join(o.EtcdEndpoints, ","),
			flagArg(flagnames.EtcdPrefix), o.EtcdPrefix)
		if o.EtcdTLSSecret != "" {
			args = append(args,
				flagArg(flagnames.EtcdCACert), EtcdTLSDir+"/ca.crt",
				flagArg(flagnames.EtcdCert), EtcdTLSDir+"/tls.crt",
				flagArg(flagnames.EtcdKey), EtcdTLSDir+"/tls.key")
		}
		args = append(args, flagArg(flagnames.KEKFile), KEKDir+"/"+KEKKey,
			flagArg(flagnames.ReplicaID), "$(POD_NAME)",
			flagArg(flagnames.Advertise), fmt.Sprintf("$(POD_IP):%d", DefaultGRPC))
	}
	args = append(args,
		flagArg(flagnames.Listen), fmt.Sprintf("0.0.0.0:%d", DefaultGRPC),
		flagArg(flagnames.MetricsListen), fmt.Sprintf("0.0.0.0:%d", DefaultMetrics),
		flagArg(flagnames.Mode), string(o.Mode),
		flagArg(flagnames.ServerName), svc, flagArg(flagnames.ServerName), svc+".cluster.local")
	if etcd {
		// The advertised address is in the replica's certificate too.
		args = append(args, flagArg(flagnames.ServerName), "$(POD_IP)")
	}
	args = append(args, flagArg(flagnames.LogFormat), "json")
	if o.Mode == kube.ModeFull {
		args = append(args, flagArg(flagnames.Kube),
			flagArg(flagnames.SignerName), o.SignerName,
			flagArg(flagnames.RequesterPrefix), o.RequesterPrefix,
			flagArg(flagnames.CNFrom), string(o.CNFrom),
			flagArg(flagnames.CABundleConfigMap), o.CABundleConfigMap)
	}
	// The gRPC service is TLS-only, which kubelet's gRPC probe does not
	// speak: the probes run the standard health check with the binary.
	health := func(service string) *corev1.Probe {
		cmd := []string{"/usr/local/bin/ipsecca", flagnames.CmdHealth,
			flagArg(flagnames.Server), fmt.Sprintf("127.0.0.1:%d", DefaultGRPC),
			flagArg(flagnames.CAFile), DataDir + "/ca.pem"}
		if service != "" {
			cmd = append(cmd, flagArg(flagnames.Service), service)
		}
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: cmd}},
			PeriodSeconds: 10, TimeoutSeconds: 5, FailureThreshold: 3}
	}
	liveness := health("")
	liveness.InitialDelaySeconds = 10
	readiness := health("ipsecca.v1.NodeService")
	if o.Mode != kube.ModeFull {
		readiness = health("ipsecca.v1.AdminService")
	}
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{
			Name:      name,
			ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}},
		}
	}
	env := []corev1.EnvVar{
		fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		{Name: flagnames.EnvDataDir, Value: DataDir},
	}
	mounts := []corev1.VolumeMount{{Name: "data", MountPath: VolumeDir}}
	var volumes []corev1.Volume
	var affinity *corev1.Affinity
	if etcd {
		env = append(env, fieldEnv("POD_NAME", "metadata.name"), fieldEnv("POD_IP", "status.podIP"))
		// The replica's own service certificates and bundle; the CA's
		// state is in etcd. The Secrets are readable by fsGroup only.
		secret := func(name, secretName string, keys ...string) corev1.Volume {
			v := corev1.Volume{
				Name: name,
				VolumeSource: corev1.VolumeSource{
					Secret: &corev1.SecretVolumeSource{SecretName: secretName, DefaultMode: ptr.To[int32](0o440)},
				},
			}
			for _, k := range keys {
				v.Secret.Items = append(v.Secret.Items, corev1.KeyToPath{Key: k, Path: k})
			}
			return v
		}
		volumes = []corev1.Volume{
			{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			secret("kek", NameKEK, KEKKey),
		}
		mounts = append(mounts, corev1.VolumeMount{Name: "kek", MountPath: KEKDir, ReadOnly: true})
		if o.EtcdTLSSecret != "" {
			volumes = append(volumes, secret("etcd-tls", o.EtcdTLSSecret, "ca.crt", "tls.crt", "tls.key"))
			mounts = append(mounts, corev1.VolumeMount{Name: "etcd-tls", MountPath: EtcdTLSDir, ReadOnly: true})
		}
		// Spread the replicas over the nodes when there are enough.
		affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{
				{Weight: 100, PodAffinityTerm: corev1.PodAffinityTerm{
					LabelSelector: &metav1.LabelSelector{MatchLabels: labels("ca")},
					TopologyKey:   "kubernetes.io/hostname",
				}},
			},
		}}
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels("ca")},
		Spec: corev1.PodSpec{
			ServiceAccountName: NameCA,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: ptr.To(
					true,
				), RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](65532), FSGroup: ptr.To[int64](65532),
				// Otherwise the kubelet adds group read and write to every
				// file of the volume at each mount: the CA key would become
				// 0660, and the CA refuses to start with key material others
				// can read.
				FSGroupChangePolicy: ptr.To(corev1.FSGroupChangeOnRootMismatch),
				SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Affinity: affinity,
			Containers: []corev1.Container{{
				Name:  "ca",
				Image: o.Image,
				Args:  args,
				Env:   env,
				Ports: []corev1.ContainerPort{
					{Name: "grpc", ContainerPort: DefaultGRPC, Protocol: corev1.ProtocolTCP},
					{Name: "metrics", ContainerPort: DefaultMetrics, Protocol: corev1.ProtocolTCP},
				},
				VolumeMounts:   mounts,
				LivenessProbe:  liveness,
				ReadinessProbe: readiness,
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
			Volumes: volumes,
		},
	}
}

// caStatefulSet is the CA with the bolt store: one replica, its data on a
// PersistentVolumeClaim.
func caStatefulSet(o ManifestOptions, meta metaFunc, labels func(string) map[string]string) *appsv1.StatefulSet {
	pvc := corev1.PersistentVolumeClaim{
		TypeMeta:   typeMeta("v1", "PersistentVolumeClaim"),
		ObjectMeta: metav1.ObjectMeta{Name: "data", Labels: labels("ca")},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(o.StorageSize)},
			},
		},
	}
	if o.StorageClass != "" {
		pvc.Spec.StorageClassName = ptr.To(o.StorageClass)
	}
	return &appsv1.StatefulSet{
		TypeMeta:   typeMeta("apps/v1", "StatefulSet"),
		ObjectMeta: meta(NameCA, o.Namespace, "ca"),
		Spec: appsv1.StatefulSetSpec{
			// One replica: the embedded store lives on its volume. More
			// replicas take the shared (etcd) store: see caDeployment.
			Replicas:             ptr.To[int32](1),
			ServiceName:          NameCA,
			Selector:             &metav1.LabelSelector{MatchLabels: labels("ca")},
			Template:             caPodTemplate(o, labels),
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{pvc},
		},
	}
}

// caDeployment is the CA with the etcd store: o.Replicas interchangeable
// replicas, no volume of their own. They elect the leader that runs the
// scheduler through etcd; the Kubernetes signer's Lease keeps one of them
// signing CSRs.
func caDeployment(o ManifestOptions, meta metaFunc, labels func(string) map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{
		TypeMeta:   typeMeta("apps/v1", "Deployment"),
		ObjectMeta: meta(NameCA, o.Namespace, "ca"),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(o.Replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels("ca")},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(1)), MaxSurge: ptr.To(intstr.FromInt32(1))},
			},
			Template: caPodTemplate(o, labels),
		},
	}
}

// caDisruptionBudget keeps all but one of the CA's replicas (at least one)
// up through voluntary disruptions such as node drains.
func caDisruptionBudget(
	o ManifestOptions,
	meta metaFunc,
	labels func(string) map[string]string,
) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   typeMeta("policy/v1", "PodDisruptionBudget"),
		ObjectMeta: meta(NameCA, o.Namespace, "ca"),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: ptr.To(intstr.FromInt32(max(o.Replicas-1, 1))),
			Selector:     &metav1.LabelSelector{MatchLabels: labels("ca")},
		},
	}
}

func sidecarDaemonSet(o ManifestOptions, meta metaFunc, labels func(string) map[string]string) *appsv1.DaemonSet {
	args := o.SidecarArgs
	if args == nil {
		args = []string{flagnames.CmdSidecar, flagArg(flagnames.Kube),
			flagArg(flagnames.Node), "$(NODE_NAME)",
			flagArg(flagnames.Kubeconfig), NodeCredentialsDir + "/kubeconfig",
			flagArg(flagnames.SignerName), o.SignerName,
			flagArg(flagnames.CABundleConfigMap), o.CABundleConfigMap,
			flagArg(flagnames.NSSDir), o.NSSDir,
			flagArg(flagnames.StateDir), SidecarStateDir,
			flagArg(flagnames.LogFormat), "json"}
	}
	var ports []corev1.ContainerPort
	if o.Monitoring {
		// The host's network: the port is the node's.
		args = append(slices.Clone(args),
			flagArg(flagnames.MetricsListen), fmt.Sprintf("0.0.0.0:%d", DefaultSidecarMetrics))
		ports = []corev1.ContainerPort{{Name: "metrics", ContainerPort: DefaultSidecarMetrics,
			HostPort: DefaultSidecarMetrics, Protocol: corev1.ProtocolTCP}}
	}
	hostPath := func(name, path string, t corev1.HostPathType) corev1.Volume {
		return corev1.Volume{
			Name:         name,
			VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: ptr.To(t)}},
		}
	}
	return &appsv1.DaemonSet{
		TypeMeta:   typeMeta("apps/v1", "DaemonSet"),
		ObjectMeta: meta(NameSidecar, o.Namespace, "sidecar"),
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels("sidecar")},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type:          appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromString("10%"))},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels("sidecar")},
				Spec: corev1.PodSpec{
					ServiceAccountName:           NameSidecar,
					AutomountServiceAccountToken: ptr.To(false),
					HostNetwork:                  true,
					DNSPolicy:                    corev1.DNSClusterFirstWithHostNet,
					PriorityClassName:            "system-node-critical",
					NodeSelector:                 map[string]string{"kubernetes.io/os": "linux"},
					Tolerations: []corev1.Toleration{
						{
							Key:      "node-role.kubernetes.io/control-plane",
							Operator: corev1.TolerationOpExists,
							Effect:   corev1.TaintEffectNoSchedule,
						},
						{
							Key:      "node-role.kubernetes.io/master",
							Operator: corev1.TolerationOpExists,
							Effect:   corev1.TaintEffectNoSchedule,
						},
						{
							Key:      "node.kubernetes.io/not-ready",
							Operator: corev1.TolerationOpExists,
							Effect:   corev1.TaintEffectNoSchedule,
						},
					},
					Containers: []corev1.Container{{
						Name:    "sidecar",
						Image:   o.Image,
						Command: []string{SidecarCommand},
						Args:    args,
						Ports:   ports,
						Env: []corev1.EnvVar{
							{
								Name: "NODE_NAME",
								ValueFrom: &corev1.EnvVarSource{
									FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"},
								},
							},
							{
								Name:  flagnames.EnvServer,
								Value: fmt.Sprintf("%s.%s.svc:%d", NameCA, o.Namespace, DefaultGRPC),
							},
						},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "nss", MountPath: o.NSSDir},
							{Name: "state", MountPath: SidecarStateDir},
							{Name: "node-credentials", MountPath: NodeCredentialsDir, ReadOnly: true},
							// certutil and pk12util work on copies in a temporary directory
							// (a PKCS#12 holds the node's key): the root filesystem is
							// read-only, and the key should never reach a disk.
							{Name: "tmp", MountPath: "/tmp"},
						},
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse(
								"10m",
							), corev1.ResourceMemory: resource.MustParse("32Mi")}},
						// Root to write the host's NSS database; nothing more.
						SecurityContext: &corev1.SecurityContext{
							RunAsUser: ptr.To[int64](
								0,
							), AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
							Capabilities: &corev1.Capabilities{
								Drop: []corev1.Capability{"ALL"},
								Add:  []corev1.Capability{"DAC_OVERRIDE", "CHOWN", "FOWNER"},
							},
						},
					}},
					Volumes: []corev1.Volume{
						hostPath("nss", o.NSSDir, corev1.HostPathDirectoryOrCreate),
						hostPath("state", SidecarStateDir, corev1.HostPathDirectoryOrCreate),
						hostPath("node-credentials", NodeCredentialsDir, corev1.HostPathDirectory),
						{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
							Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("16Mi")),
						}}},
					},
				},
			},
		},
	}
}
