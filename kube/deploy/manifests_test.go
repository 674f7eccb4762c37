package deploy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ipsecca/ipsecca/internal/flagnames"
	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/kube/deploy"
	"github.com/ipsecca/ipsecca/kube/kubetest"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// flagArg is a flag name as a container argument.
func flagArg(name string) string { return flagnames.Flag(name) }

func kinds(objs []runtime.Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetObjectKind().GroupVersionKind().Kind)
	}
	return out
}

// The printed set per mode, without an API server: Disabled prints
// nothing, External has no signer RBAC and no sidecar, and the YAML
// carries no empty status or null timestamps.
func TestManifestSets(t *testing.T) {
	objs, err := deploy.Manifests(deploy.ManifestOptions{Mode: kube.ModeDisabled})
	if err != nil || len(objs) != 0 {
		t.Fatalf("Disabled: %d objects, %v; want none", len(objs), err)
	}
	full, err := deploy.Manifests(deploy.ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"Namespace",
		"ServiceAccount",
		"ServiceAccount",
		"ClusterRole",
		"ClusterRoleBinding",
		"Role",
		"RoleBinding",
		"Role",
		"RoleBinding",
		"ClusterRole",
		"ClusterRoleBinding",
		"Role",
		"RoleBinding",
		"Service",
		"StatefulSet",
		"DaemonSet",
	}
	if got := kinds(full); !slices.Equal(got, want) {
		t.Fatalf("Full: %v\nwant %v", got, want)
	}
	ext, err := deploy.Manifests(deploy.ManifestOptions{Mode: kube.ModeExternal})
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(ext); !slices.Equal(got, []string{"Namespace", "ServiceAccount", "Service", "StatefulSet"}) {
		t.Fatalf("External: %v", got)
	}
	for _, o := range ext {
		if ss, ok := o.(*appsv1.StatefulSet); ok &&
			slices.Contains(ss.Spec.Template.Spec.Containers[0].Args, flagArg(flagnames.Kube)) {
			t.Fatal("External runs the Kubernetes signer")
		}
	}
	var buf bytes.Buffer
	if err := deploy.WriteYAML(&buf, full); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"creationTimestamp", "status:", "spec: {}", "resources: {}", "updateStrategy: {}"} {
		if strings.Contains(buf.String(), bad) {
			t.Fatalf("the YAML holds %q:\n%s", bad, buf.String())
		}
	}
	// The probes ask the gRPC health service about the real service names.
	for _, o := range full {
		if ss, ok := o.(*appsv1.StatefulSet); ok {
			c := ss.Spec.Template.Spec.Containers[0]
			if cmd := c.ReadinessProbe.Exec.Command; cmd[len(cmd)-1] != ipseccav1.NodeService_ServiceDesc.ServiceName ||
				cmd[1] != flagnames.CmdHealth {
				t.Fatalf("readiness probe %v", cmd)
			}
			if c.LivenessProbe.Exec.Command[1] != "health" {
				t.Fatalf("liveness probe %v", c.LivenessProbe.Exec.Command)
			}
			if len(ss.Spec.VolumeClaimTemplates) != 1 ||
				c.VolumeMounts[0].Name != ss.Spec.VolumeClaimTemplates[0].Name {
				t.Fatal("the data directory is not on the PersistentVolumeClaim")
			}
		}
		if ds, ok := o.(*appsv1.DaemonSet); ok {
			p := ds.Spec.Template.Spec
			if !p.HostNetwork || len(p.Tolerations) == 0 || p.Containers[0].Resources.Requests.Cpu().IsZero() ||
				p.Volumes[0].HostPath.Path != deploy.DefaultNSSDir {
				t.Fatalf("sidecar DaemonSet: %+v", p)
			}
			// The small agent, not the CA's binary, runs on every node.
			if c := p.Containers[0]; !slices.Equal(c.Command, []string{deploy.SidecarCommand}) ||
				c.Args[0] != flagnames.CmdSidecar {
				t.Fatalf("sidecar container runs %v %v, want %s %s ...", c.Command, c.Args, deploy.SidecarCommand,
					flagnames.CmdSidecar)
			}
		}
	}
	for _, bad := range []deploy.ManifestOptions{{Mode: "Partial"}, {Namespace: "Bad_NS"},
		{NSSDir: "relative"}, {CABundleConfigMap: "no-namespace"}} {
		if _, err := deploy.Manifests(bad); err == nil {
			t.Errorf("Manifests(%+v) accepted", bad)
		}
	}
}

// argValue is the value following flag in args ("" when absent).
func argValue(args []string, flag string) string {
	if v := argValues(args, flag); len(v) > 0 {
		return v[0]
	}
	return ""
}

// argValues is every value of a repeated flag in args.
func argValues(args []string, flag string) []string {
	var out []string
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			out = append(out, args[i+1])
		}
	}
	return out
}

// secretData matches a Secret's or ConfigMap's data in printed YAML.
var secretData = regexp.MustCompile(`(?m)^\s*(data|stringData|binaryData):`)

// The etcd store: a Deployment of interchangeable replicas on emptyDirs
// (no StatefulSet, no PVC) with the store's flags, a PodDisruptionBudget,
// the KEK from the operator's Secret and no key material printed; the
// bolt store (the default) keeps the single-replica StatefulSet.
func TestManifestsEtcdStore(t *testing.T) {
	endpoints := []string{"https://h1:2379", "https://h2:2379", "https://h3:2379"}
	for _, tc := range []struct {
		name         string
		o            deploy.ManifestOptions
		replicas     int32
		minAvailable int32
		prefix       string
		tls          bool
	}{
		{"defaults", deploy.ManifestOptions{Store: deploy.StoreEtcd, EtcdEndpoints: endpoints}, 3, 2, "/ipsecca",
			false},
		{"five replicas with TLS", deploy.ManifestOptions{Store: deploy.StoreEtcd, EtcdEndpoints: endpoints,
			Replicas: 5, EtcdPrefix: "/clusters/a", EtcdTLSSecret: "etcd-client"}, 5, 4, "/clusters/a", true},
		{"two replicas", deploy.ManifestOptions{Store: deploy.StoreEtcd, EtcdEndpoints: endpoints[:1], Replicas: 2}, 2,
			1, "/ipsecca", false},
		{"one replica", deploy.ManifestOptions{Store: deploy.StoreEtcd, EtcdEndpoints: []string{"h1:2379"},
			Replicas: 1}, 1, 1, "/ipsecca", false},
		{"External", deploy.ManifestOptions{Store: deploy.StoreEtcd, EtcdEndpoints: endpoints, Mode: kube.ModeExternal},
			3, 2, "/ipsecca", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := deploy.Manifests(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"Namespace", "ServiceAccount", "Service", "Deployment", "PodDisruptionBudget"}
			if tc.o.Mode != kube.ModeExternal {
				want = []string{
					"Namespace",
					"ServiceAccount",
					"ServiceAccount",
					"ClusterRole",
					"ClusterRoleBinding",
					"Role",
					"RoleBinding",
					"Role",
					"RoleBinding",
					"ClusterRole",
					"ClusterRoleBinding",
					"Role",
					"RoleBinding",
					"Service",
					"Deployment",
					"PodDisruptionBudget",
					"DaemonSet",
				}
			}
			if got := kinds(objs); !slices.Equal(got, want) {
				t.Fatalf("%v\nwant %v", got, want)
			}
			var dep *appsv1.Deployment
			var pdb *policyv1.PodDisruptionBudget
			for _, o := range objs {
				switch o := o.(type) {
				case *appsv1.Deployment:
					dep = o
				case *policyv1.PodDisruptionBudget:
					pdb = o
				}
			}
			if *dep.Spec.Replicas != tc.replicas {
				t.Errorf("%d replicas, want %d", *dep.Spec.Replicas, tc.replicas)
			}
			if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntVal != tc.minAvailable ||
				pdb.Spec.MaxUnavailable != nil {
				t.Errorf("PodDisruptionBudget %+v, want minAvailable %d", pdb.Spec, tc.minAvailable)
			}
			if ca := dep.Spec.Template.Labels; ca["app.kubernetes.io/component"] != "ca" ||
				!maps.Equal(pdb.Spec.Selector.MatchLabels, ca) {
				t.Errorf("the PodDisruptionBudget selects %v, the CA pods are %v", pdb.Spec.Selector.MatchLabels, ca)
			}
			p := dep.Spec.Template.Spec
			c := p.Containers[0]
			flags := map[string]string{
				flagArg(flagnames.Store): "etcd", flagArg(flagnames.EtcdEndpoints): strings.Join(tc.o.EtcdEndpoints,
					","), flagArg(flagnames.EtcdPrefix): tc.prefix,
				flagArg(flagnames.KEKFile): deploy.KEKDir + "/" + deploy.KEKKey, flagArg(flagnames.ReplicaID): "$(POD_NAME)",
				flagArg(flagnames.Advertise): "$(POD_IP):8443", flagArg(flagnames.Listen): "0.0.0.0:8443",
				flagArg(flagnames.MetricsListen): "0.0.0.0:9090", flagArg(flagnames.DataDir): deploy.DataDir,
				flagArg(flagnames.LogFormat): "json", flagArg(flagnames.Mode): string(kube.ModeFull),
			}
			if tc.o.Mode == kube.ModeExternal {
				flags[flagArg(flagnames.Mode)] = string(kube.ModeExternal)
			}
			if tc.tls {
				flags[flagArg(flagnames.EtcdCACert)] = "/etc/ipsecca/etcd/ca.crt"
				flags[flagArg(flagnames.EtcdCert)] = "/etc/ipsecca/etcd/tls.crt"
				flags[flagArg(flagnames.EtcdKey)] = "/etc/ipsecca/etcd/tls.key"
			}
			for f, v := range flags {
				if got := argValue(c.Args, f); got != v {
					t.Errorf("%s %q, want %q in %v", f, got, v, c.Args)
				}
			}
			for _, f := range []string{flagArg(flagnames.EtcdCACert), flagArg(flagnames.EtcdCert),
				flagArg(flagnames.EtcdKey)} {
				if !tc.tls && slices.Contains(c.Args, f) {
					t.Errorf("%s without an etcd TLS secret", f)
				}
			}
			if got := argValues(c.Args, flagArg(flagnames.ServerName)); !slices.Equal(
				got,
				[]string{"ipsecca.ipsecca.svc", "ipsecca.ipsecca.svc.cluster.local", "$(POD_IP)"},
			) {
				t.Errorf("server names %v", got)
			}
			if kubeArgs := slices.Contains(c.Args,
				flagArg(flagnames.Kube)); kubeArgs != (tc.o.Mode != kube.ModeExternal) {
				t.Errorf("--kube %v in mode %q", kubeArgs, tc.o.Mode)
			}
			env := map[string]string{}
			for _, e := range c.Env {
				if e.ValueFrom != nil {
					env[e.Name] = e.ValueFrom.FieldRef.FieldPath
				}
			}
			if env["POD_NAME"] != "metadata.name" || env["POD_IP"] != "status.podIP" {
				t.Errorf("downward API env %v", env)
			}
			if cmd := c.ReadinessProbe.Exec.Command; cmd[1] != flagnames.CmdHealth ||
				!slices.Contains(cmd, flagArg(flagnames.Service)) {
				t.Errorf("readiness probe %v", cmd)
			}
			if a := p.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution; len(a) != 1 ||
				a[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" ||
				a[0].PodAffinityTerm.LabelSelector.MatchLabels["app.kubernetes.io/component"] != "ca" ||
				p.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
				t.Errorf("anti-affinity %+v", p.Affinity)
			}
			// Volumes: the data dir an emptyDir, the KEK (and the etcd
			// client TLS) from Secrets, read-only.
			vols := map[string]corev1.Volume{}
			for _, v := range p.Volumes {
				if v.PersistentVolumeClaim != nil {
					t.Errorf("volume %s is a PersistentVolumeClaim", v.Name)
				}
				vols[v.Name] = v
			}
			mounts := map[string]corev1.VolumeMount{}
			for _, m := range c.VolumeMounts {
				mounts[m.Name] = m
			}
			if vols["data"].EmptyDir == nil || mounts["data"].MountPath != deploy.VolumeDir {
				t.Errorf("data volume %+v mounted %+v", vols["data"], mounts["data"])
			}
			if s := vols["kek"].Secret; s == nil || s.SecretName != deploy.NameKEK || len(s.Items) != 1 ||
				s.Items[0].Key != deploy.KEKKey ||
				s.Items[0].Path != deploy.KEKKey ||
				mounts["kek"].MountPath != deploy.KEKDir ||
				!mounts["kek"].ReadOnly {
				t.Errorf("KEK volume %+v mounted %+v", vols["kek"], mounts["kek"])
			}
			if s := vols["etcd-tls"].Secret; tc.tls != (s != nil) ||
				tc.tls && (s.SecretName != tc.o.EtcdTLSSecret || len(s.Items) != 3 ||
					mounts["etcd-tls"].MountPath != deploy.EtcdTLSDir || !mounts["etcd-tls"].ReadOnly) {
				t.Errorf("etcd TLS volume %+v mounted %+v", vols["etcd-tls"], mounts["etcd-tls"])
			}
			// No key material anywhere: no Secret, no data.
			var buf bytes.Buffer
			if err := deploy.WriteYAML(&buf, objs); err != nil {
				t.Fatal(err)
			}
			y := buf.String()
			for _, bad := range []string{"StatefulSet", "PersistentVolumeClaim", "volumeClaimTemplates", "kind: Secret",
				"creationTimestamp", "status:", "spec: {}", "resources: {}", "strategy: {}"} {
				if strings.Contains(y, bad) {
					t.Errorf("the YAML holds %q", bad)
				}
			}
			if m := secretData.FindString(y); m != "" {
				t.Errorf("the YAML holds data: %q", m)
			}
		})
	}

	// The bolt store, named or by default, prints the same single-replica
	// StatefulSet as ever.
	def, err := deploy.Manifests(deploy.ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := deploy.WriteYAML(&want, def); err != nil {
		t.Fatal(err)
	}
	for _, o := range []deploy.ManifestOptions{{Store: deploy.StoreBolt}, {Store: deploy.StoreBolt, Replicas: 1},
		{Replicas: 1}} {
		objs, err := deploy.Manifests(o)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := deploy.WriteYAML(&got, objs); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("Manifests(%+v) differs from the default", o)
		}
	}
	if y := want.String(); strings.Contains(y, "Deployment") || strings.Contains(y, "PodDisruptionBudget") ||
		strings.Contains(y, flagArg(flagnames.Store)) ||
		strings.Contains(y, "etcd") ||
		strings.Contains(y, deploy.NameKEK) ||
		!strings.Contains(y, "volumeClaimTemplates") {
		t.Error("the default (bolt) manifests changed")
	}

	for _, tc := range []struct {
		o    deploy.ManifestOptions
		want string
	}{
		{deploy.ManifestOptions{Store: deploy.StoreEtcd}, "kube: the etcd store needs etcd endpoints"},
		{deploy.ManifestOptions{Store: "Etcd", EtcdEndpoints: endpoints}, `kube: store "Etcd": want bolt or etcd`},
		{deploy.ManifestOptions{Store: "sqlite"}, `kube: store "sqlite": want bolt or etcd`},
		{deploy.ManifestOptions{Replicas: 3}, "kube: 3 replicas need the etcd store"},
		{deploy.ManifestOptions{Store: deploy.StoreBolt, Replicas: 2}, "kube: 2 replicas need the etcd store"},
		{deploy.ManifestOptions{Store: deploy.StoreEtcd, EtcdEndpoints: endpoints, Replicas: -1},
			"kube: -1 replicas: want at least 1"},
		{deploy.ManifestOptions{EtcdEndpoints: endpoints},
			"kube: etcd endpoints, prefix and TLS secret are for the etcd store"},
		{deploy.ManifestOptions{EtcdTLSSecret: "etcd-client"},
			"kube: etcd endpoints, prefix and TLS secret are for the etcd store"},
		{deploy.ManifestOptions{Store: deploy.StoreEtcd, EtcdEndpoints: []string{"unix:///run/etcd.sock"}},
			`kube: etcd endpoint "unix:///run/etcd.sock": want host:port`},
		{deploy.ManifestOptions{Store: deploy.StoreEtcd, EtcdEndpoints: []string{""}},
			`kube: etcd endpoint "": want host:port`},
		{deploy.ManifestOptions{Store: deploy.StoreEtcd, EtcdEndpoints: []string{"https://h1:2379,https://h2:2379"}},
			`kube: etcd endpoint "https://h1:2379,https://h2:2379"`},
		{deploy.ManifestOptions{Store: deploy.StoreEtcd, EtcdEndpoints: endpoints, EtcdPrefix: "ipsecca"},
			`kube: etcd prefix "ipsecca" must start with /`},
		{deploy.ManifestOptions{Store: deploy.StoreEtcd, EtcdEndpoints: endpoints, EtcdTLSSecret: "Bad_Name"},
			`kube: etcd TLS secret "Bad_Name"`},
		{deploy.ManifestOptions{Store: deploy.StoreEtcd, EtcdEndpoints: endpoints, StorageClass: "fast"},
			`kube: storage class "fast": the etcd store's replicas keep no volume`},
	} {
		if _, err := deploy.Manifests(tc.o); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Manifests(%+v): %v; want %q", tc.o, err, tc.want)
		}
	}
}

// The strict decoder the manifests are held to does reject unknown fields.
func TestStrictDecoderRejectsUnknownFields(t *testing.T) {
	doc := "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\nautomountServiceAcountToken: false\n"
	if _, err := kubetest.DecodeStrict([]byte(doc)); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Fatalf("a misspelt field decoded: %v", err)
	}
}

// Every printed manifest (Full and External) decodes strictly and is
// created on a real API server, and the RBAC grants what each part uses
// and nothing around it.
func TestManifestsOnAPIServer(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	admin := kubetest.Client(t, srv.Admin)
	ctx := context.Background()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cmNS}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.ApplyManifests(
		t,
		srv,
		deploy.ManifestOptions{
			Image:  "registry.example/ipsecca:v1",
			NSSDir: "/var/lib/ipsec/nss",
		},
	)
	kubetest.ApplyManifests(t, srv, deploy.ManifestOptions{Namespace: "ipsecca-external", Mode: kube.ModeExternal})
	if _, err := admin.AppsV1().DaemonSets("ipsecca-external").Get(ctx, deploy.NameSidecar,
		metav1.GetOptions{}); err == nil {
		t.Fatal("External created a sidecar DaemonSet")
	}
	// The etcd store (External: Full's cluster-wide objects exist already).
	// The operator creates the KEK Secret in the namespace first; the
	// manifests never hold it.
	const haNS = "ipsecca-ha"
	ha, err := deploy.Manifests(
		deploy.ManifestOptions{Namespace: haNS, Mode: kube.ModeExternal, Store: deploy.StoreEtcd,
			EtcdEndpoints: []string{
				"https://h1:2379",
				"https://h2:2379",
				"https://h3:2379",
			}, EtcdTLSSecret: "etcd-client", Replicas: 3},
	)
	if err != nil {
		t.Fatal(err)
	}
	var haYAML bytes.Buffer
	if err := deploy.WriteYAML(&haYAML, ha); err != nil {
		t.Fatal(err)
	}
	decoded, err := kubetest.DecodeStrict(haYAML.Bytes())
	if err != nil || len(decoded) != len(ha) || kinds(decoded)[0] != "Namespace" {
		t.Fatalf(
			"strict decoding of the etcd store's manifests: %d objects, %v\n%s",
			len(decoded),
			err,
			haYAML.String(),
		)
	}
	kubetest.Create(t, srv, decoded[:1])
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		t.Fatal(err)
	}
	kekText := base64.StdEncoding.EncodeToString(kek)
	if _, err := admin.CoreV1().Secrets(haNS).Create(ctx,
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: deploy.NameKEK},
			Data: map[string][]byte{deploy.KEKKey: []byte(kekText)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Create(t, srv, decoded[1:])
	if strings.Contains(haYAML.String(), kekText) {
		t.Fatal("the manifests hold the KEK")
	}
	if _, err := admin.AppsV1().StatefulSets(haNS).Get(ctx, deploy.NameCA, metav1.GetOptions{}); err == nil {
		t.Fatal("the etcd store created a StatefulSet")
	}
	dep, err := admin.AppsV1().Deployments(haNS).Get(ctx, deploy.NameCA, metav1.GetOptions{})
	if err != nil || *dep.Spec.Replicas != 3 || dep.Spec.Template.Spec.Volumes[1].Secret.SecretName != deploy.NameKEK {
		t.Fatalf("Deployment %+v: %v", dep, err)
	}
	pdb, err := admin.PolicyV1().PodDisruptionBudgets(haNS).Get(ctx, deploy.NameCA, metav1.GetOptions{})
	if err != nil || pdb.Spec.MinAvailable.IntValue() != 2 {
		t.Fatalf("PodDisruptionBudget %+v: %v", pdb, err)
	}

	type access struct {
		ns, verb, group, resource, sub, name string
	}
	check := func(user string, groups []string, allowed bool, as []access) {
		t.Helper()
		for _, a := range as {
			r, err := admin.AuthorizationV1().
				SubjectAccessReviews().
				Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
					User: user, Groups: groups,
					ResourceAttributes: &authorizationv1.ResourceAttributes{
						Namespace:   a.ns,
						Verb:        a.verb,
						Group:       a.group,
						Resource:    a.resource,
						Subresource: a.sub,
						Name:        a.name,
					},
				}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if r.Status.Allowed != allowed {
				t.Errorf(
					"%s may %s %s/%s %s in %q: %v, want %v",
					user,
					a.verb,
					a.resource,
					a.sub,
					a.name,
					a.ns,
					r.Status.Allowed,
					allowed,
				)
			}
		}
	}
	const cert = "certificates.k8s.io"
	sa, saGroups := "system:serviceaccount:ipsecca:ipsecca", []string{
		"system:serviceaccounts",
		"system:serviceaccounts:ipsecca",
		"system:authenticated",
	}
	check(sa, saGroups, true, []access{
		{
			"",
			"get",
			cert,
			"certificatesigningrequests",
			"",
			"",
		}, {"", "list", cert, "certificatesigningrequests", "", ""},
		{
			"",
			"watch",
			cert,
			"certificatesigningrequests",
			"",
			"",
		}, {"", "delete", cert, "certificatesigningrequests", "", "x"},
		{
			"",
			"update",
			cert,
			"certificatesigningrequests",
			"approval",
			"x",
		}, {"", "update", cert, "certificatesigningrequests", "status", "x"},
		{
			"",
			"approve",
			cert,
			"signers",
			"",
			kube.DefaultSignerName,
		}, {"", "sign", cert, "signers", "", kube.DefaultSignerName},
		{"", "get", "", "nodes", "", "n"}, {"", "list", "", "nodes", "", ""}, {"", "watch", "", "nodes", "", ""},
		{
			cmNS,
			"get",
			"",
			"configmaps",
			"",
			cmName,
		}, {cmNS, "update", "", "configmaps", "", cmName}, {cmNS, "create", "", "configmaps", "", ""},
		{cmNS, "list", "", "configmaps", "", cmName}, {cmNS, "watch", "", "configmaps", "", cmName},
		{
			"ipsecca",
			"get",
			"coordination.k8s.io",
			"leases",
			"",
			kube.DefaultLeaseName,
		}, {"ipsecca", "update", "coordination.k8s.io", "leases", "", kube.DefaultLeaseName},
		{"ipsecca", "create", "coordination.k8s.io", "leases", "", ""},
	})
	check(sa, saGroups, false, []access{
		{
			"",
			"create",
			cert,
			"certificatesigningrequests",
			"",
			"",
		}, {"", "update", cert, "certificatesigningrequests", "", "x"},
		{
			"",
			"approve",
			cert,
			"signers",
			"",
			"kubernetes.io/kube-apiserver-client",
		}, {"", "sign", cert, "signers", "", "kubernetes.io/kubelet-serving"},
		{"", "approve", cert, "signers", "", "network.openshift.io/*"},
		{"", "update", "", "nodes", "", "n"}, {"", "patch", "", "nodes", "", "n"},
		{
			cmNS,
			"get",
			"",
			"configmaps",
			"",
			"other",
		}, {cmNS, "update", "", "configmaps", "", "other"}, {cmNS, "delete", "", "configmaps", "", cmName},
		{
			"kube-system",
			"get",
			"",
			"configmaps",
			"",
			cmName,
		}, {cmNS, "get", "", "secrets", "", "signer-ca"}, {"ipsecca", "get", "", "secrets", "", "x"},
		{
			"ipsecca",
			"update",
			"coordination.k8s.io",
			"leases",
			"",
			"other",
		}, {"ipsecca", "delete", "coordination.k8s.io", "leases", "", kube.DefaultLeaseName},
		{"kube-system", "update", "coordination.k8s.io", "leases", "", kube.DefaultLeaseName},
	})
	node, nodeGroups := nodePrefix+"node-a", []string{nodeGroup, "system:authenticated"}
	check(node, nodeGroups, true, []access{
		{
			"",
			"create",
			cert,
			"certificatesigningrequests",
			"",
			"",
		}, {"", "get", cert, "certificatesigningrequests", "", "x"},
		{"", "watch", cert, "certificatesigningrequests", "", "x"}, {cmNS, "get", "", "configmaps", "", cmName},
		{"", "get", "", "nodes", "", "n"},
	})
	check(node, nodeGroups, false, []access{
		{
			"",
			"list",
			cert,
			"certificatesigningrequests",
			"",
			"",
		}, {"", "delete", cert, "certificatesigningrequests", "", "x"},
		{
			"",
			"update",
			cert,
			"certificatesigningrequests",
			"approval",
			"x",
		}, {"", "update", cert, "certificatesigningrequests", "status", "x"},
		{
			"",
			"approve",
			cert,
			"signers",
			"",
			kube.DefaultSignerName,
		}, {"", "sign", cert, "signers", "", kube.DefaultSignerName},
		{
			"",
			"list",
			"",
			"nodes",
			"",
			"",
		}, {cmNS, "update", "", "configmaps", "", cmName}, {cmNS, "get", "", "configmaps", "", "other"},
	})
	// The etcd store's replicas read no Secret through the API (the KEK is
	// mounted) and elect their leader in etcd: no RBAC beyond External's.
	check(
		"system:serviceaccount:ipsecca-ha:ipsecca",
		[]string{"system:serviceaccounts", "system:serviceaccounts:ipsecca-ha", "system:authenticated"},
		false,
		[]access{
			{"ipsecca-ha", "get", "", "secrets", "", deploy.NameKEK}, {"ipsecca-ha", "list", "", "secrets", "", ""},
			{
				"ipsecca-ha",
				"get",
				"coordination.k8s.io",
				"leases",
				"",
				kube.DefaultLeaseName,
			}, {"ipsecca-ha", "create", "coordination.k8s.io", "leases", "", ""},
		},
	)
	// The sidecar's own service account has no rights at all.
	check(
		"system:serviceaccount:ipsecca:ipsecca-sidecar",
		[]string{"system:serviceaccounts", "system:serviceaccounts:ipsecca", "system:authenticated"},
		false,
		[]access{
			{
				"",
				"create",
				cert,
				"certificatesigningrequests",
				"",
				"",
			}, {cmNS, "get", "", "configmaps", "", cmName}, {"", "get", "", "nodes", "", "n"},
		},
	)
}

// The bundle ConfigMap the RBAC cases name, and the node identities.
var cmNS, cmName, _ = kube.SplitNamespacedName(kube.DefaultCABundleConfigMap)

const (
	nodeGroup  = kube.DefaultNodeGroup
	nodePrefix = kube.DefaultRequesterPrefix
)

// Every environment variable the manifests set is one the binary reads:
// an IPSECCA_* variable a flag falls back to (internal/flagnames), a
// downward-API value an argument names as $(VAR), or POD_NAMESPACE (the
// signer's Lease namespace). IPSECCA_ENCAPSULATION and IPSECCA_NSS_DIR,
// which nothing read, are gone.
func TestManifestsEnvIsRead(t *testing.T) {
	read := map[string]bool{flagnames.EnvServer: true, flagnames.EnvDataDir: true, "POD_NAMESPACE": true}
	endpoints := []string{"https://h1:2379"}
	for _, o := range []deploy.ManifestOptions{
		{},
		{Mode: kube.ModeExternal},
		{Store: deploy.StoreEtcd, EtcdEndpoints: endpoints, EtcdTLSSecret: "etcd-client"},
		{NSSDir: "/etc/ipsec.d"},
		{Monitoring: true},
	} {
		objs, err := deploy.Manifests(o)
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, obj := range objs {
			var pod corev1.PodSpec
			switch w := obj.(type) {
			case *appsv1.StatefulSet:
				pod = w.Spec.Template.Spec
			case *appsv1.Deployment:
				pod = w.Spec.Template.Spec
			case *appsv1.DaemonSet:
				pod = w.Spec.Template.Spec
				if got := argValue(pod.Containers[0].Args, flagArg(flagnames.NSSDir)); o.NSSDir != "" && got != o.NSSDir {
					t.Errorf("sidecar --nss-dir %q, want %q", got, o.NSSDir)
				}
			default:
				continue
			}
			for _, c := range pod.Containers {
				args := strings.Join(c.Args, " ")
				for _, e := range c.Env {
					seen++
					if !read[e.Name] && !strings.Contains(args, "$("+e.Name+")") {
						t.Errorf("%+v: container %s sets %s, which nothing reads", o, c.Name, e.Name)
					}
				}
			}
		}
		if seen == 0 {
			t.Fatalf("%+v: no environment at all", o)
		}
	}
}

// The sidecar's NSS tools work on copies in a temporary directory, some of
// them PKCS#12 files holding the node's key: with a read-only root filesystem
// the container needs a writable /tmp, and it must be memory, not disk.
func TestSidecarHasMemoryTmp(t *testing.T) {
	objs, err := deploy.Manifests(deploy.ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range objs {
		ds, ok := obj.(*appsv1.DaemonSet)
		if !ok {
			continue
		}
		pod := ds.Spec.Template.Spec
		c := pod.Containers[0]
		if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Fatalf("sidecar: root filesystem not read-only (%+v): this test assumes it is", sc)
		}
		var vol string
		for _, m := range c.VolumeMounts {
			if m.MountPath == "/tmp" && !m.ReadOnly {
				vol = m.Name
			}
		}
		if vol == "" {
			t.Fatalf("sidecar mounts nothing writable at /tmp: certutil and pk12util fail on a read-only root")
		}
		for _, v := range pod.Volumes {
			if v.Name == vol {
				if v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
					t.Errorf("sidecar /tmp volume %q is %+v, want an emptyDir in memory", vol, v.VolumeSource)
				}
				return
			}
		}
		t.Fatalf("sidecar mounts volume %q at /tmp, which the pod does not declare", vol)
	}
	t.Fatal("no sidecar DaemonSet in the default manifests")
}
