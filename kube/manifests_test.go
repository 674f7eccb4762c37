package kube_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/kube/kubetest"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

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
	objs, err := kube.Manifests(kube.ManifestOptions{Mode: kube.ModeDisabled})
	if err != nil || len(objs) != 0 {
		t.Fatalf("Disabled: %d objects, %v; want none", len(objs), err)
	}
	full, err := kube.Manifests(kube.ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Namespace", "ServiceAccount", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
		"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service", "StatefulSet", "DaemonSet"}
	if got := kinds(full); !slices.Equal(got, want) {
		t.Fatalf("Full: %v\nwant %v", got, want)
	}
	ext, err := kube.Manifests(kube.ManifestOptions{Mode: kube.ModeExternal})
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(ext); !slices.Equal(got, []string{"Namespace", "ServiceAccount", "Service", "StatefulSet"}) {
		t.Fatalf("External: %v", got)
	}
	for _, o := range ext {
		if ss, ok := o.(*appsv1.StatefulSet); ok && slices.Contains(ss.Spec.Template.Spec.Containers[0].Args, "--kube") {
			t.Fatal("External runs the Kubernetes signer")
		}
	}
	var buf bytes.Buffer
	if err := kube.WriteYAML(&buf, full); err != nil {
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
			if cmd := c.ReadinessProbe.Exec.Command; cmd[len(cmd)-1] != ipseccav1.NodeService_ServiceDesc.ServiceName || cmd[1] != "health" {
				t.Fatalf("readiness probe %v", cmd)
			}
			if c.LivenessProbe.Exec.Command[1] != "health" {
				t.Fatalf("liveness probe %v", c.LivenessProbe.Exec.Command)
			}
			if len(ss.Spec.VolumeClaimTemplates) != 1 || c.VolumeMounts[0].Name != ss.Spec.VolumeClaimTemplates[0].Name {
				t.Fatal("the data directory is not on the PersistentVolumeClaim")
			}
		}
		if ds, ok := o.(*appsv1.DaemonSet); ok {
			p := ds.Spec.Template.Spec
			if !p.HostNetwork || len(p.Tolerations) == 0 || p.Containers[0].Resources.Requests.Cpu().IsZero() || p.Volumes[0].HostPath.Path != kube.DefaultNSSDir {
				t.Fatalf("sidecar DaemonSet: %+v", p)
			}
		}
	}
	for _, bad := range []kube.ManifestOptions{{Mode: "Partial"}, {Encapsulation: "Never"}, {Namespace: "Bad_NS"}, {NSSDir: "relative"}, {CABundleConfigMap: "no-namespace"}} {
		if _, err := kube.Manifests(bad); err == nil {
			t.Errorf("Manifests(%+v) accepted", bad)
		}
	}
}

// The strict decoder the manifests are held to does reject unknown fields.
func TestStrictDecoderRejectsUnknownFields(t *testing.T) {
	doc := "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\nautomountServiceAcountToken: false\n"
	if _, err := decodeStrict([]byte(doc)); err == nil || !strings.Contains(err.Error(), "unknown field") {
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
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cmNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	applyManifests(t, srv, kube.ManifestOptions{Image: "registry.example/ipsecca:v1", Encapsulation: "Always", NSSDir: "/var/lib/ipsec/nss"})
	applyManifests(t, srv, kube.ManifestOptions{Namespace: "ipsecca-external", Mode: kube.ModeExternal})
	if _, err := admin.AppsV1().DaemonSets("ipsecca-external").Get(ctx, kube.NameSidecar, metav1.GetOptions{}); err == nil {
		t.Fatal("External created a sidecar DaemonSet")
	}

	type access struct {
		ns, verb, group, resource, sub, name string
	}
	check := func(user string, groups []string, allowed bool, as []access) {
		t.Helper()
		for _, a := range as {
			r, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: user, Groups: groups,
				ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: a.ns, Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.sub, Name: a.name},
			}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if r.Status.Allowed != allowed {
				t.Errorf("%s may %s %s/%s %s in %q: %v, want %v", user, a.verb, a.resource, a.sub, a.name, a.ns, r.Status.Allowed, allowed)
			}
		}
	}
	const cert = "certificates.k8s.io"
	sa, saGroups := "system:serviceaccount:ipsecca:ipsecca", []string{"system:serviceaccounts", "system:serviceaccounts:ipsecca", "system:authenticated"}
	check(sa, saGroups, true, []access{
		{"", "get", cert, "certificatesigningrequests", "", ""}, {"", "list", cert, "certificatesigningrequests", "", ""},
		{"", "watch", cert, "certificatesigningrequests", "", ""}, {"", "delete", cert, "certificatesigningrequests", "", "x"},
		{"", "update", cert, "certificatesigningrequests", "approval", "x"}, {"", "update", cert, "certificatesigningrequests", "status", "x"},
		{"", "approve", cert, "signers", "", kube.DefaultSignerName}, {"", "sign", cert, "signers", "", kube.DefaultSignerName},
		{"", "get", "", "nodes", "", "n"}, {"", "list", "", "nodes", "", ""}, {"", "watch", "", "nodes", "", ""},
		{cmNS, "get", "", "configmaps", "", cmName}, {cmNS, "update", "", "configmaps", "", cmName}, {cmNS, "create", "", "configmaps", "", ""},
		{cmNS, "list", "", "configmaps", "", cmName}, {cmNS, "watch", "", "configmaps", "", cmName},
		{"ipsecca", "get", "coordination.k8s.io", "leases", "", kube.DefaultLeaseName}, {"ipsecca", "update", "coordination.k8s.io", "leases", "", kube.DefaultLeaseName},
		{"ipsecca", "create", "coordination.k8s.io", "leases", "", ""},
	})
	check(sa, saGroups, false, []access{
		{"", "create", cert, "certificatesigningrequests", "", ""}, {"", "update", cert, "certificatesigningrequests", "", "x"},
		{"", "approve", cert, "signers", "", "kubernetes.io/kube-apiserver-client"}, {"", "sign", cert, "signers", "", "kubernetes.io/kubelet-serving"},
		{"", "approve", cert, "signers", "", "network.openshift.io/*"},
		{"", "update", "", "nodes", "", "n"}, {"", "patch", "", "nodes", "", "n"},
		{cmNS, "get", "", "configmaps", "", "other"}, {cmNS, "update", "", "configmaps", "", "other"}, {cmNS, "delete", "", "configmaps", "", cmName},
		{"kube-system", "get", "", "configmaps", "", cmName}, {cmNS, "get", "", "secrets", "", "signer-ca"}, {"ipsecca", "get", "", "secrets", "", "x"},
		{"ipsecca", "update", "coordination.k8s.io", "leases", "", "other"}, {"ipsecca", "delete", "coordination.k8s.io", "leases", "", kube.DefaultLeaseName},
		{"kube-system", "update", "coordination.k8s.io", "leases", "", kube.DefaultLeaseName},
	})
	node, nodeGroups := nodePrefix+"node-a", []string{nodeGroup, "system:authenticated"}
	check(node, nodeGroups, true, []access{
		{"", "create", cert, "certificatesigningrequests", "", ""}, {"", "get", cert, "certificatesigningrequests", "", "x"},
		{"", "watch", cert, "certificatesigningrequests", "", "x"}, {cmNS, "get", "", "configmaps", "", cmName},
		{"", "get", "", "nodes", "", "n"},
	})
	check(node, nodeGroups, false, []access{
		{"", "list", cert, "certificatesigningrequests", "", ""}, {"", "delete", cert, "certificatesigningrequests", "", "x"},
		{"", "update", cert, "certificatesigningrequests", "approval", "x"}, {"", "update", cert, "certificatesigningrequests", "status", "x"},
		{"", "approve", cert, "signers", "", kube.DefaultSignerName}, {"", "sign", cert, "signers", "", kube.DefaultSignerName},
		{"", "list", "", "nodes", "", ""}, {cmNS, "update", "", "configmaps", "", cmName}, {cmNS, "get", "", "configmaps", "", "other"},
	})
	// The sidecar's own service account has no rights at all.
	check("system:serviceaccount:ipsecca:ipsecca-sidecar", []string{"system:serviceaccounts", "system:serviceaccounts:ipsecca", "system:authenticated"}, false, []access{
		{"", "create", cert, "certificatesigningrequests", "", ""}, {cmNS, "get", "", "configmaps", "", cmName}, {"", "get", "", "nodes", "", "n"},
	})
}
