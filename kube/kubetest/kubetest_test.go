package kubetest_test

import (
	"context"
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
