package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/kube/deploy"
	"github.com/ipsecca/ipsecca/kube/kubetest"
)

// TestKubernetesModeEndToEnd: the real `ipsecca serve --kube` signs, under
// the RBAC `ipsecca manifests` prints, the CSR objects the real
// `ipsecca sidecar --kube` creates as the node's own identity, exactly as
// OpenShift's node script would; the node's NSS database then holds its
// certificate for its chassis-id and the CA from the ConfigMap.
func TestKubernetesModeEndToEnd(t *testing.T) {
	const nodeUser = "system:ovn-node:node-a"
	srv := kubetest.Start(
		t,
		kubetest.Options{Users: []kubetest.User{{Name: nodeUser, Groups: []string{"system:ovn-nodes"}}}},
	)
	admin := kubetest.Client(t, srv.Admin)
	ctx := context.Background()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "openshift-ovn-kubernetes"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	objs, err := deploy.Manifests(deploy.ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kubetest.Create(t, srv, objs)
	chassis := "6a3c8c41-4f5e-4a8e-9e0c-3b7d2f1e9a10"
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a",
		Annotations: map[string]string{"k8s.ovn.org/node-chassis-id": chassis}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The signer, as the CA's service account.
	saKubeconfig := srv.KubeconfigFile(t, srv.ServiceAccountConfig(t, kube.DefaultNamespace, deploy.NameCA))
	ca := startServer(t, "", "--kube", "--kubeconfig", saKubeconfig)
	// The node, as itself.
	nodeKubeconfig := srv.KubeconfigFile(t, srv.ConfigFor(nodeUser))
	dir := t.TempDir()
	nss, state := filepath.Join(dir, "nss"), filepath.Join(dir, "state")
	args := []string{
		"sidecar",
		"--once",
		"--kube",
		"--kubeconfig",
		nodeKubeconfig,
		"--node",
		"node-a",
		"--nss-dir",
		nss,
		"--state-dir",
		state,
		"--csr-wait",
		"30s",
	}
	r := run(t, nil, args...)
	if r.Code != 0 {
		t.Fatalf("sidecar --kube: %+v\nserver log:\n%s", r, ca.Log.String())
	}
	nick := "ovs_certkey_" + chassis
	if got := certutilL(t, nss); len(got) != 2 || got["ovs_cert_cacert"] != "CT,," || got[nick] != "u,u,u" {
		t.Fatalf("certutil -L: %v", got)
	}
	if out := sh(t, "certutil", "-V", "-d", "sql:"+nss, "-n", nick, "-u", "C"); !strings.Contains(
		out,
		"certificate is valid",
	) {
		t.Fatal(out)
	}
	// The CSR object has OpenShift's node script's shape.
	csrs, err := admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil || len(csrs.Items) != 1 {
		t.Fatalf("CSRs: %v %v", csrs, err)
	}
	c := csrs.Items[0]
	if !strings.HasPrefix(c.Name, "ipsec-csr-node-a-") || c.Labels["k8s.ovn.org/ipsec-csr"] != "node-a" || c.Spec.SignerName != "network.openshift.io/signer" ||
		len(c.Spec.Usages) != 1 ||
		c.Spec.Usages[0] != certificatesv1.UsageIPsecTunnel ||
		c.Spec.Username != nodeUser {
		t.Fatalf(
			"CSR %s: labels %v signer %s usages %v user %s",
			c.Name,
			c.Labels,
			c.Spec.SignerName,
			c.Spec.Usages,
			c.Spec.Username,
		)
	}
	// The same certificate is in the CA's store and listing.
	if out := mustRun(t, ca.Env(), "certs", "list", "--node", "node-a"); !strings.Contains(out, chassis) {
		t.Fatalf("certs list:\n%s", out)
	}
	// A second pass changes nothing and creates no CSR.
	if r := run(t, nil, args...); r.Code != 0 {
		t.Fatalf("second pass: %+v", r)
	}
	if csrs, _ := admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{}); len(
		csrs.Items,
	) != 1 {
		t.Fatalf("a second pass created another CSR (%d)", len(csrs.Items))
	}
	// A long-running kube-mode sidecar stops cleanly.
	cmd := exec.Command(binary, append(args[:1], args[2:]...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sidecar --kube did not stop cleanly: %v", err)
	}
}
