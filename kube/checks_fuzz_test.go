package kube_test

import (
	"slices"
	"strings"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/kube"
)

// Real CSRs, made with openssl: OVN-Kubernetes' node script (RSA 2048, its
// subject, the chassis-id as CN and SAN) and an ECDSA one for a node name.
const (
	seedChassisID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
	seedOVNCSR    = "-----BEGIN CERTIFICATE REQUEST-----\n" +
		"MIIC6jCCAdICAQAwYzELMAkGA1UEBhMCVVMxFjAUBgNVBAoMDW92bmt1YmVybmV0\n" +
		"ZXMxDTALBgNVBAsMBGtpbmQxLTArBgNVBAMMJDBhMWIyYzNkLTRlNWYtNGE2Yi04\n" +
		"YzdkLTllMGYxYTJiM2M0ZDCCASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEB\n" +
		"AKg5Ce6/M04EaO+A9BsS2AjDnNKkoCzbvpGxyOahhUgmhWLipaUhmzrgfKJa6sco\n" +
		"9MiPa3qbQB2WQRQKsqlRcu3zIFiZ9YEjnRQ6IdiL5F4ZGfnfeJfSme1758AMDvRO\n" +
		"UHpNCuKZg5ndmSP8w8K/S8/+OZZrqiMPvNW/TrGx1ltFP8cjrZOiKyK2XX7yctEX\n" +
		"vJ4cQf4w4faOtGBALX76rYmqjeVWr4oRoa2DMlpRoxnMoj/1xpYhKEOu7NaxXuUf\n" +
		"uxXHcm8ml8gAfCliIS+jM2W9Iu4SE7YJslEcup+Uk9lhl3VElQ7rgMPN1Yv4xTkA\n" +
		"/w4dblt/rfjWo3/OWw8yJ+0CAwEAAaBCMEAGCSqGSIb3DQEJDjEzMDEwLwYDVR0R\n" +
		"BCgwJoIkMGExYjJjM2QtNGU1Zi00YTZiLThjN2QtOWUwZjFhMmIzYzRkMA0GCSqG\n" +
		"SIb3DQEBCwUAA4IBAQAHW1zzJT+5wL/jSWjca6pK7ZNahIZn5keqkwz5uf1iXezC\n" +
		"q3fqEO/vBFrkLty4qMW2kcQabHKSI6qlvFrH/kbMWIU75/Ifyrxdg38DZBs52MAS\n" +
		"xVgjsaKeDzz9bBkEVNtR8VXueRwLF6FmRAHlunFvteM+It9FD9kAh4u8GIQPOw23\n" +
		"zqf9pO2jqnFsdQSMSQCXtbxhEGiIeXhEoVd18KUkjBXfBjEyW2zm363WNhhPdouz\n" +
		"XsTUodkWaffmshkSwXsofrSGQsLFQ7yiplADy74GWVlvWmJJYJzQ4Sn3LH2nn0xF\n" +
		"rC5TBsVg82i0EbvuC9OA5qSttqCztAV+ztTEqPCG\n" +
		"-----END CERTIFICATE REQUEST-----\n"
	seedECCSR = "-----BEGIN CERTIFICATE REQUEST-----\n" +
		"MIHzMIGbAgEAMBMxETAPBgNVBAMMCHdvcmtlci0xMFkwEwYHKoZIzj0CAQYIKoZI\n" +
		"zj0DAQcDQgAEU1s0wDB2K/uT3HDxuGWW/ui+w+gQar8mFhebMUpS5OXWcTuYyh3B\n" +
		"keWV6Io2iTJStXk05Np6z6tUAMZc4nQou6AmMCQGCSqGSIb3DQEJDjEXMBUwEwYD\n" +
		"VR0RBAwwCoIId29ya2VyLTEwCgYIKoZIzj0EAwIDRwAwRAIgVJR0qOHU//NxiYeR\n" +
		"s5PoD7o8O76LzA2KxinUWjE2xUcCIEAggB2DtE9GokWDCwnmFvhmyt7WjbT4BQDR\n" +
		"IOerhGm0\n" +
		"-----END CERTIFICATE REQUEST-----\n"
)

// FuzzKubePolicy runs the Kubernetes checks, then the node policy the
// signer applies after them, on arbitrary CSR bytes, requester names,
// labels, usages and Node annotations: they never panic, every refusal is
// a reasoned denial, and an approval holds only for a node asking for its
// own name.
func FuzzKubePolicy(f *testing.F) {
	const prefix = kube.DefaultRequesterPrefix
	f.Add([]byte(seedOVNCSR), prefix+"worker-1", "worker-1", true, string(certificatesv1.UsageIPsecTunnel), seedChassisID,
		true, false)
	f.Add([]byte(seedOVNCSR), prefix+"worker-1", "", false, "", " "+strings.ToUpper(seedChassisID)+" ", true, false)
	f.Add([]byte(seedECCSR), prefix+"worker-1", "worker-1", true, string(certificatesv1.UsageServerAuth), "", true, true)
	f.Add([]byte(seedECCSR), prefix+"worker-2", "worker-1", true, string(certificatesv1.UsageCertSign), "", true, true)
	f.Add([]byte(seedOVNCSR), "system:node:worker-1", "", false, "", seedChassisID, true, false)
	f.Add([]byte(seedOVNCSR), prefix+"worker-1", "", false, "", "dup", true, false)
	f.Add([]byte(seedOVNCSR), prefix+"gone", "", false, "", seedChassisID, false, false)
	f.Add([]byte(seedOVNCSR[:len(seedOVNCSR)/2]), prefix, "", false, "", "", true, false)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMII=\n-----END CERTIFICATE REQUEST-----\n"),
		prefix+"a", "a", true, "", "x", true, true)
	f.Fuzz(func(t *testing.T, csrPEM []byte, user, label string, hasLabel bool, usage, chassisID string,
		nodeExists, fromName bool) {
		from := kube.CNFromChassisID
		if fromName {
			from = kube.CNFromNodeName
		}
		csr := &certificatesv1.CertificateSigningRequest{
			Spec: certificatesv1.CertificateSigningRequestSpec{Request: csrPEM, Username: user,
				SignerName: "network.openshift.io/signer"},
		}
		if hasLabel {
			csr.Labels = map[string]string{kube.LabelIPsecCSR: label}
		}
		if usage != "" {
			csr.Spec.Usages = []certificatesv1.KeyUsage{certificatesv1.KeyUsage(usage)}
		}
		r := &kube.Request{CSR: csr, Prefix: prefix, CNFrom: from, NodeName: kube.RequesterNode(user, prefix)}
		if r.NodeName != "" && nodeExists {
			r.Node = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: r.NodeName,
				Annotations: map[string]string{kube.AnnotationChassisID: chassisID}}}
		}
		r.NodesWithCN = func(id string) []string {
			if id == "dup" {
				return []string{r.NodeName, "other-node"}
			}
			return []string{r.NodeName}
		}
		err := ca.Evaluate(kube.KubePolicy, r)
		if err != nil {
			de := kube.DenyReason(err)
			if de == nil || de.Reason == "" || de.Detail == "" || kube.ConditionReason(de.Reason, from) == "" {
				t.Fatalf("refusal without a reason: %v", err)
			}
			return
		}
		switch {
		case r.NodeName == "" || user != prefix+r.NodeName || r.Node == nil:
			t.Fatalf("approved requester %q (node %q)", user, r.NodeName)
		case hasLabel && label != r.NodeName:
			t.Fatalf("approved label %q for node %q", label, r.NodeName)
		case usage != "" && !slices.Contains(kube.AllowedUsages, certificatesv1.KeyUsage(usage)):
			t.Fatalf("approved usage %q", usage)
		case r.Identity.Node != r.NodeName || r.Identity.CN == "" || r.Identity.CN != kube.NodeCN(r.Node, from):
			t.Fatalf("identity %+v for node %q", r.Identity, r.NodeName)
		case !fromName && chassisID == "dup":
			t.Fatal("approved a chassis-id two nodes carry")
		}
		// The node policy runs next (IssueForNode) on the same CSR.
		parsed, err := ca.ParseCSR(csrPEM)
		if err != nil {
			return
		}
		err = ca.Evaluate(ca.NodePolicy, &ca.Request{CSR: parsed, Identity: r.Identity})
		if err == nil && !strings.EqualFold(parsed.Subject.CommonName, r.Identity.CN) {
			t.Fatalf("CN %q approved for node %q, which may hold only %q", parsed.Subject.CommonName, r.NodeName, r.Identity.CN)
		}
	})
}
