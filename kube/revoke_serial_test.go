package kube_test

import (
	"context"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/store"
)

// Revoking a node's current certificate by serial (ipsecca certs revoke)
// reaches the Kubernetes door as a node revocation does: the ConfigMap's
// CRL lists the serial with its RFC 5280 reason code, and the node's next
// CSR is denied until it is re-admitted. A superseded certificate revoked
// by serial is listed too, with its own reason, and revokes nothing else.
func TestRevokedSerialPublished(t *testing.T) {
	e := newEnv(t)
	ids := map[string]string{"node-a": chassisID(), "node-b": chassisID()}
	for n, id := range ids {
		e.addNode(n, id)
	}
	s := e.start(e.config("replica-1"), true)
	ctx := context.Background()
	oldA := e.issue("node-a", ids["node-a"])
	curA := e.issue("node-a", ids["node-a"])
	curB := e.issue("node-b", ids["node-b"])
	admin := ca.Caller{Kind: store.KindAdmin, Node: "admin", Serial: "ad"}

	for _, tc := range []struct {
		serial, reason string
		code           int
		nodeRevoked    bool
	}{
		{oldA, "superseded", 4, false},
		{curA, "keyCompromise", 1, true},
	} {
		res, err := e.auth.RevokeCertificate(ctx, admin, tc.serial, tc.reason)
		if err != nil || res.NodeRevoked != tc.nodeRevoked || res.Already {
			t.Fatalf("revoke %s: %+v %v", tc.serial, res, err)
		}
		node := ""
		if res.NodeRevoked {
			node = res.Cert.Node
		}
		s.Revoked(node, tc.reason) // what the gRPC door's notifier does
		eventually(t, 30*time.Second, "serial "+tc.serial+" in the published CRL",
			func() bool { return lists(e.publishedCRL(), tc.serial) })
		for _, entry := range e.publishedCRL().RevokedCertificateEntries {
			if ca.SerialString(entry.SerialNumber) == tc.serial && entry.ReasonCode != tc.code {
				t.Fatalf("CRL entry of %s: reason code %d, want %d (%s)", tc.serial, entry.ReasonCode, tc.code,
					tc.reason)
			}
		}
	}
	if lists(e.publishedCRL(), curB) {
		t.Fatal("the CRL lists node-b, which was not revoked")
	}
	csr := e.createCSR(e.node("node-a"), makeCSR(t, ecKey(t), ids["node-a"], []string{ids["node-a"]}),
		csrSpec{node: "node-a"})
	got := e.waitDecided(csr.Name, 10*time.Second)
	d := condition(got, certificatesv1.CertificateDenied)
	if d == nil || d.Reason != string(kube.ReasonNodeRevoked) || !strings.Contains(d.Message, "readmit") {
		t.Fatalf("node-a's CSR after its current certificate was revoked: %+v; want Denied %s", got.Status,
			kube.ReasonNodeRevoked)
	}
}
