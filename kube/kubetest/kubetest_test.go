package kubetest_test

import (
	"context"
	"os"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ipsecca/ipsecca/kube/kubetest"
)

// The harness serves a real API server: the admin may do anything, a
// static-token node identity is held to RBAC.
func TestStart(t *testing.T) {
	srv := kubetest.Start(
		t,
		kubetest.Options{
			Users: []kubetest.User{{Name: "system:ovn-node:node-a", Groups: []string{"system:ovn-nodes"}}},
		},
	)
	ctx := context.Background()
	admin := kubetest.Client(t, srv.Admin)
	if _, err := admin.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("admin: %v", err)
	}
	node := kubetest.Client(t, srv.ConfigFor("system:ovn-node:node-a"))
	_, err := node.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("node identity listing nodes: got %v, want Forbidden", err)
	}
}

// Run serves outside a test (the benchmark) and Stop leaves nothing
// behind: the processes are gone and so is the directory.
func TestRun(t *testing.T) {
	srv, err := kubetest.Run(kubetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pid := srv.PID("kube-apiserver")
	admin := kubetest.Client(t, srv.Admin)
	if _, err := admin.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
		srv.Stop()
		t.Fatalf("admin: %v", err)
	}
	srv.Stop()
	if _, err := os.Stat(srv.Dir); !os.IsNotExist(err) {
		t.Fatalf("%s after Stop: %v, want it removed", srv.Dir, err)
	}
	if pid == 0 || syscall.Kill(pid, 0) == nil {
		t.Fatalf("kube-apiserver (pid %d) still runs after Stop", pid)
	}
}
