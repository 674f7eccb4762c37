package kube_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/kube"
)

// Pure decisions of the Kubernetes checks (no API server needed).
func TestKubePolicy(t *testing.T) {
	node := func(name, id string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if id != "" {
			n.Annotations = map[string]string{kube.AnnotationChassisID: id}
		}
		return n
	}
	csr := func(user string, labels map[string]string,
		usages ...certificatesv1.KeyUsage) *certificatesv1.CertificateSigningRequest {
		return &certificatesv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: certificatesv1.CertificateSigningRequestSpec{Username: user, Usages: usages}}
	}
	holders := map[string][]string{"id-a": {"a"}, "id-dup": {"b", "c"}}
	cases := []struct {
		name string
		req  kube.Request
		want kube.Reason // "" = allowed
		cn   string
	}{
		{"ok", kube.Request{CSR: csr("system:ovn-node:a", map[string]string{kube.LabelIPsecCSR: "a"},
			certificatesv1.UsageIPsecTunnel), NodeName: "a", Node: node("a", "id-a")}, "", "id-a"},
		{"ok without label, all usages",
			kube.Request{CSR: csr("system:ovn-node:a", nil, kube.AllowedUsages...), NodeName: "a", Node: node("a", "id-a")},
			"", "id-a"},
		{"node-name CN",
			kube.Request{CSR: csr("system:ovn-node:a", nil), NodeName: "a", Node: node("a", ""), CNFrom: kube.CNFromNodeName},
			"", "a"},
		{"not a node", kube.Request{CSR: csr("alice", nil)}, kube.ReasonRequesterNotNode, ""},
		{"no such node", kube.Request{CSR: csr("system:ovn-node:z", nil), NodeName: "z"}, kube.ReasonNodeNotFound, ""},
		{"label",
			kube.Request{CSR: csr("system:ovn-node:a", map[string]string{kube.LabelIPsecCSR: "b"}), NodeName: "a",
				Node: node("a", "id-a")}, kube.ReasonLabelNotRequester, ""},
		{"usage",
			kube.Request{CSR: csr("system:ovn-node:a", nil, certificatesv1.UsageCertSign), NodeName: "a",
				Node: node("a", "id-a")}, kube.ReasonUsageNotAllowed, ""},
		{"no chassis-id", kube.Request{CSR: csr("system:ovn-node:a", nil), NodeName: "a", Node: node("a", "")},
			kube.ReasonNodeHasNoChassisID, ""},
		{"duplicate chassis-id", kube.Request{CSR: csr("system:ovn-node:b", nil), NodeName: "b", Node: node("b", "id-dup")},
			kube.ReasonCNHeldByOtherNode, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.req
			r.Prefix = kube.DefaultRequesterPrefix
			if r.CNFrom == "" {
				r.CNFrom = kube.CNFromChassisID
			}
			r.NodesWithCN = func(id string) []string { return holders[id] }
			err := ca.Evaluate(kube.KubePolicy, &r)
			if c.want == "" {
				if err != nil || r.Identity != (ca.Identity{Node: r.NodeName, CN: c.cn}) {
					t.Fatalf("err %v identity %+v, want allowed with CN %s", err, r.Identity, c.cn)
				}
				return
			}
			de := kube.DenyReason(err)
			if de == nil || kube.ConditionReason(de.Reason, r.CNFrom) != c.want || de.Detail == "" {
				t.Fatalf("got %v, want %s", err, c.want)
			}
		})
	}
}

func TestConditionReasons(t *testing.T) {
	for r, want := range map[ca.Reason]kube.Reason{
		ca.ReasonKeyWeak: kube.ReasonWeakKey, ca.ReasonCNForbiddenOVS: kube.ReasonForbiddenCNPrefix,
		ca.ReasonSANNotAllowed: kube.ReasonSANNotAllowed, ca.ReasonNameHeld: kube.ReasonCNHeldByOtherNode,
		ca.ReasonCNNotCallersNode: kube.ReasonCNNotNodeChassisID, ca.ReasonLifetimeTooShort: kube.ReasonLifetimeTooShort,
		ca.ReasonKeyUnsupported: kube.ReasonUnsupportedKey, ca.ReasonCARequested: kube.ReasonCARequested,
		ca.ReasonCNInvalid: kube.ReasonCNInvalid, ca.ReasonCSRMalformed: kube.ReasonCSRMalformed,
		ca.ReasonCSRSignature: kube.ReasonCSRSignatureInvalid, ca.ReasonCSRTooLarge: kube.ReasonCSRTooLarge,
		ca.ReasonNodeRevoked: kube.ReasonNodeRevoked, "some-new-reason": kube.ReasonPolicyDenied,
	} {
		if got := kube.ConditionReason(r, kube.CNFromChassisID); got != want {
			t.Errorf("%s -> %s, want %s", r, got, want)
		}
	}
	if got := kube.ConditionReason(ca.ReasonCNNotCallersNode, kube.CNFromNodeName); got != kube.ReasonCNNotNodeName {
		t.Errorf("CN mismatch with --cn-from node-name -> %s", got)
	}
}

// Names are one whatever their case (libreswan compares IDs without
// regard to case): the node's CN is its chassis-id (or name) in lower
// case, and the CSR's CN and DNS SANs are compared with it without regard
// to case; any other name is still refused.
func TestCaseInsensitiveNames(t *testing.T) {
	const upper, lower = "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
	const other = "11111111-2222-4333-8444-555555555555"
	key := ecKey(t)
	cases := []struct {
		name       string
		annotation string // the Node's chassis-id
		nodeName   string
		from       kube.CNFrom
		cn         string
		sans       []string
		want       kube.Reason // "" = allowed
	}{
		{"upper-case annotation, lower-case CSR", upper, "a", kube.CNFromChassisID, lower, []string{lower}, ""},
		{"upper-case annotation, upper-case CSR", upper, "a", kube.CNFromChassisID, upper, []string{upper}, ""},
		{"lower-case annotation, upper-case CSR", lower, "a", kube.CNFromChassisID, upper, []string{upper}, ""},
		{"mixed-case CN and SAN", lower, "a", kube.CNFromChassisID,
			"0A1b2C3d-4e5F-4a6B-8c7D-9e0F1a2B3c4D", []string{"0a1B2c3D-4E5f-4A6b-8C7d-9E0f1A2b3C4d"}, ""},
		{"no SAN", upper, "a", kube.CNFromChassisID, upper, nil, ""},
		{"annotation with spaces", "  " + upper + " ", "a", kube.CNFromChassisID, upper, []string{lower}, ""},
		{"node name, upper-case CSR", "", "worker-1", kube.CNFromNodeName, "WORKER-1", []string{"Worker-1"}, ""},
		{"another chassis-id", upper, "a", kube.CNFromChassisID, other, []string{other}, kube.ReasonCNNotNodeChassisID},
		{"another node's name", "", "worker-1", kube.CNFromNodeName, "WORKER-2", nil, kube.ReasonCNNotNodeName},
		{"CN a prefix of the chassis-id", upper, "a", kube.CNFromChassisID, upper[:8], nil, kube.ReasonCNNotNodeChassisID},
		{"second SAN of another name", upper, "a", kube.CNFromChassisID, upper, []string{lower, other},
			kube.ReasonSANNotAllowed},
		{"SAN of another name in upper case", lower, "a", kube.CNFromChassisID, lower,
			[]string{strings.ToUpper("evil.example.com")}, kube.ReasonSANNotAllowed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: c.nodeName}}
			if c.annotation != "" {
				n.Annotations = map[string]string{kube.AnnotationChassisID: c.annotation}
			}
			r := kube.Request{
				CSR: &certificatesv1.CertificateSigningRequest{Spec: certificatesv1.CertificateSigningRequestSpec{
					Username: kube.DefaultRequesterPrefix + c.nodeName, Request: makeCSR(t, key, c.cn, c.sans),
					Usages: []certificatesv1.KeyUsage{certificatesv1.UsageIPsecTunnel}}},
				Prefix: kube.DefaultRequesterPrefix, CNFrom: c.from, NodeName: c.nodeName, Node: n,
				NodesWithCN: func(id string) []string { return []string{c.nodeName} },
			}
			err := ca.Evaluate(kube.KubePolicy, &r)
			if c.want == "" {
				want := lower
				if c.from == kube.CNFromNodeName {
					want = c.nodeName
				}
				if err != nil || r.Identity.CN != want {
					t.Fatalf("err %v, identity %+v; want allowed with CN %s (lower case)", err, r.Identity, want)
				}
				return
			}
			de := kube.DenyReason(err)
			if de == nil || kube.ConditionReason(de.Reason, c.from) != c.want {
				t.Fatalf("got %v, want %s", err, c.want)
			}
		})
	}
	// Two Nodes whose chassis-ids differ only in case claim one name.
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a",
		Annotations: map[string]string{kube.AnnotationChassisID: upper}}}
	if got := kube.NodeCN(n, kube.CNFromChassisID); got != lower {
		t.Fatalf("NodeCN = %q, want %q", got, lower)
	}
}

func TestRequesterNode(t *testing.T) {
	for user, want := range map[string]string{
		"system:ovn-node:worker-1": "worker-1", "system:ovn-node:": "", "system:ovn-node:Bad_Name": "",
		"system:node:worker-1": "", "worker-1": "", "system:ovn-node:ovs_x": "",
	} {
		if got := kube.RequesterNode(user, kube.DefaultRequesterPrefix); got != want {
			t.Errorf("RequesterNode(%q) = %q, want %q", user, got, want)
		}
	}
}

func TestExpired(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(cert bool, conds ...certificatesv1.RequestConditionType) *certificatesv1.CertificateSigningRequest {
		c := &certificatesv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(t0)}}
		for _, ct := range conds {
			c.Status.Conditions = append(c.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
				Type: ct, Status: corev1.ConditionTrue, LastUpdateTime: metav1.NewTime(t0.Add(10 * time.Minute))})
		}
		if cert {
			c.Status.Certificate = []byte("x")
		}
		return c
	}
	for _, c := range []struct {
		name  string
		csr   *certificatesv1.CertificateSigningRequest
		after time.Duration
		want  bool
		state string
	}{
		{"issued, 59m after approval", mk(true, certificatesv1.CertificateApproved), 69 * time.Minute, false, "issued"},
		{"issued, 1h after approval", mk(true, certificatesv1.CertificateApproved), 70 * time.Minute, true, "issued"},
		{"denied, 1h after", mk(false, certificatesv1.CertificateDenied), 70 * time.Minute, true, "denied"},
		{"failed, 1h after", mk(false, certificatesv1.CertificateApproved, certificatesv1.CertificateFailed),
			70 * time.Minute, true, "denied"},
		{"pending, 23h", mk(false), 23 * time.Hour, false, "pending"},
		{"approved by someone, no certificate: unanswered", mk(false, certificatesv1.CertificateApproved), 2 * time.Hour,
			false, "pending"},
		{"pending, 24h", mk(false), 24 * time.Hour, true, "pending"},
	} {
		got, state := kube.Expired(c.csr, t0.Add(c.after), kube.IssuedTTL, kube.PendingTTL)
		if got != c.want || state != c.state {
			t.Errorf("%s: %v %s, want %v %s", c.name, got, state, c.want, c.state)
		}
	}
}

func TestParsing(t *testing.T) {
	if m, err := kube.ParseMode("external"); err != nil || m != kube.ModeExternal {
		t.Fatal(m, err)
	}
	if _, err := kube.ParseMode("on"); err == nil {
		t.Fatal("mode on accepted")
	}
	if c, err := kube.ParseCNFrom("Node-Name"); err != nil || c != kube.CNFromNodeName {
		t.Fatal(c, err)
	}
	if _, err := kube.ParseCNFrom("uuid"); err == nil {
		t.Fatal("cn-from uuid accepted")
	}
	if ns, n, err := kube.SplitNamespacedName(kube.DefaultCABundleConfigMap); err != nil ||
		ns != "openshift-ovn-kubernetes" || n != "signer-ca" {
		t.Fatal(ns, n, err)
	}
	for _, bad := range []string{"signer-ca", "/x", "x/", "A/b"} {
		if _, _, err := kube.SplitNamespacedName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := kube.New(kube.Config{}); err == nil {
		t.Fatal("a Config without a client accepted")
	}
}

// The published bundle keeps the current root and the unexpired previous
// ones, in order, and drops a previous root that expired.
func TestBundle(t *testing.T) {
	now := time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(n int64, notAfter time.Time) ([]byte, *x509.Certificate) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(n), Subject: pkix.Name{CommonName: "root"},
			NotBefore: notAfter.AddDate(-10, 0, 0), NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), c
	}
	cur, _ := mk(1, now.AddDate(9, 0, 0))
	prev, _ := mk(2, now.AddDate(1, 0, 0))
	old, _ := mk(3, now.AddDate(0, 0, -1))
	in := append(append(append([]byte{}, cur...), prev...), old...)
	if got, want := kube.Bundle(in, now), append(append([]byte{}, cur...), prev...); !bytes.Equal(got, want) {
		t.Fatalf("bundle:\n%s\nwant:\n%s", got, want)
	}
	// The current root stays even when expired: better a clear error on the node than no CA.
	if got := kube.Bundle(old, now); !bytes.Equal(got, old) {
		t.Fatal("the current root was dropped")
	}
}
