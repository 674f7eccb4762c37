package kube

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/ipsecca/ipsecca/ca"
)

// Denial reasons of the Kubernetes-only checks, as recorded in the audit
// log (the ca package's style); Reason gives the CSR condition's reason.
const (
	auditRequesterNotNode ca.Reason = "requester-not-node"
	auditNodeNotFound     ca.Reason = "node-not-found"
	auditLabelNotNode     ca.Reason = "label-not-requester"
	auditUsageNotAllowed  ca.Reason = "usage-not-allowed"
	auditNoChassisID      ca.Reason = "node-chassis-id-missing"
	auditSuperseded       ca.Reason = "superseded"
)

// Reason is the stable reason of a CSR condition this signer writes.
type Reason string

// Condition reasons. Denied (or, on a CSR someone else approved, Failed)
// conditions carry one of the denial reasons; Approved ones ReasonApproved.
const (
	ReasonApproved Reason = "AutoApproved"

	// Kubernetes-only checks.
	ReasonRequesterNotNode   Reason = "RequesterNotNode"   // spec.username is not <prefix><node name>
	ReasonNodeNotFound       Reason = "NodeNotFound"       // no Node of that name
	ReasonLabelNotRequester  Reason = "LabelNotRequester"  // k8s.ovn.org/ipsec-csr names another node
	ReasonUsageNotAllowed    Reason = "UsageNotAllowed"    // a usage outside the IPsec set
	ReasonNodeHasNoChassisID Reason = "NodeHasNoChassisID" // the Node lacks k8s.ovn.org/node-chassis-id
	ReasonSuperseded         Reason = "Superseded"         // a newer CSR of the same node is the one signed
	ReasonNodeRevoked        Reason = "NodeRevoked"        // revoked (ipsecca nodes revoke) and not re-admitted

	// The node policy shared with the gRPC path (ca.NodePolicy).
	ReasonCNNotNodeChassisID  Reason = "CNNotNodeChassisID" // CN is not the node's chassis-id
	ReasonCNNotNodeName       Reason = "CNNotNodeName"      // CN is not the node's name (--cn-from node-name)
	ReasonCNHeldByOtherNode   Reason = "CNHeldByOtherNode"
	ReasonForbiddenCNPrefix   Reason = "ForbiddenCNPrefix" // CN starts with ovs_
	ReasonCNInvalid           Reason = "CNInvalid"
	ReasonWeakKey             Reason = "WeakKey"
	ReasonUnsupportedKey      Reason = "UnsupportedKey"
	ReasonSANNotAllowed       Reason = "SANNotAllowed"
	ReasonCARequested         Reason = "CARequested"
	ReasonCSRMalformed        Reason = "CSRMalformed"
	ReasonCSRTooLarge         Reason = "CSRTooLarge"
	ReasonCSRSignatureInvalid Reason = "CSRSignatureInvalid"
	ReasonLifetimeTooShort    Reason = "LifetimeTooShort"
	// ReasonPolicyDenied stands for a ca reason this table does not know yet.
	ReasonPolicyDenied Reason = "PolicyDenied"
)

var conditionReasons = map[ca.Reason]Reason{
	auditRequesterNotNode:     ReasonRequesterNotNode,
	auditNodeNotFound:         ReasonNodeNotFound,
	auditLabelNotNode:         ReasonLabelNotRequester,
	auditUsageNotAllowed:      ReasonUsageNotAllowed,
	auditNoChassisID:          ReasonNodeHasNoChassisID,
	auditSuperseded:           ReasonSuperseded,
	ca.ReasonNameHeld:         ReasonCNHeldByOtherNode,
	ca.ReasonCNForbiddenOVS:   ReasonForbiddenCNPrefix,
	ca.ReasonCNInvalid:        ReasonCNInvalid,
	ca.ReasonNodeNameInvalid:  ReasonRequesterNotNode,
	ca.ReasonKeyWeak:          ReasonWeakKey,
	ca.ReasonKeyUnsupported:   ReasonUnsupportedKey,
	ca.ReasonSANNotAllowed:    ReasonSANNotAllowed,
	ca.ReasonCARequested:      ReasonCARequested,
	ca.ReasonCSRMalformed:     ReasonCSRMalformed,
	ca.ReasonCSRTooLarge:      ReasonCSRTooLarge,
	ca.ReasonCSRSignature:     ReasonCSRSignatureInvalid,
	ca.ReasonLifetimeTooShort: ReasonLifetimeTooShort,
	ca.ReasonCNNotCallersNode: ReasonCNNotNodeChassisID, // or CNNotNodeName: see ConditionReason
	ca.ReasonCallerNotNode:    ReasonRequesterNotNode,
	ca.ReasonCallerRevoked:    ReasonPolicyDenied,
	ca.ReasonTokenInvalid:     ReasonPolicyDenied,
	ca.ReasonCallerUnknown:    ReasonPolicyDenied,
	ca.ReasonCallerExpired:    ReasonPolicyDenied,
	ca.ReasonTokenExpired:     ReasonPolicyDenied,
	ca.ReasonTokenUsed:        ReasonPolicyDenied,
	ca.ReasonNodeRevoked:      ReasonNodeRevoked,
	ca.ReasonCallerSuperseded: ReasonPolicyDenied,
	ca.ReasonTokenVoided:      ReasonPolicyDenied,
}

// ConditionReason is the CSR condition reason for a denial reason.
func ConditionReason(r ca.Reason, from CNFrom) Reason {
	if r == ca.ReasonCNNotCallersNode && from == CNFromNodeName {
		return ReasonCNNotNodeName
	}
	if cr, ok := conditionReasons[r]; ok {
		return cr
	}
	return ReasonPolicyDenied
}

func denial(r ca.Reason, format string, a ...any) *ca.DenyError {
	return &ca.DenyError{Reason: r, Detail: fmt.Sprintf(format, a...)}
}

// Request is a CSR under the Kubernetes checks. The caller resolves the
// requester's Node; the checks fill Identity, what the node may hold.
type Request struct {
	CSR    *certificatesv1.CertificateSigningRequest
	Prefix string // requester prefix, e.g. system:ovn-node:
	CNFrom CNFrom
	// NodeName is the node the requester names ("" when it names none).
	NodeName string
	// Node is that Node; nil when it does not exist.
	Node *corev1.Node
	// NodesWithCN lists the Nodes whose CN (chassis-id) is id.
	NodesWithCN func(id string) []string

	Identity ca.Identity
}

// Check is one named step of the Kubernetes policy; Fn returns a
// *ca.DenyError or nil. ca.Evaluate runs them, as it runs ca.NodePolicy.
type Check = ca.Step[*Request]

// KubePolicy runs before ca.NodePolicy (which IssueForNode applies): what
// only the Kubernetes API can prove about a CSR.
var KubePolicy = []Check{
	{Name: "requester-is-node", Fn: CheckRequester},
	{Name: "label-names-requester", Fn: CheckLabel},
	{Name: "usages", Fn: CheckUsages},
	{Name: "node-cn", Fn: CheckNodeCN},
	{Name: "cn-unique-among-nodes", Fn: CheckCNUnique},
	{Name: "csr-names-node", Fn: CheckCSRNames},
}

// RequesterNode returns the node a requester user name stands for:
// <prefix><node>, with a valid node name; "" otherwise.
func RequesterNode(username, prefix string) string {
	node, ok := strings.CutPrefix(username, prefix)
	if !ok || ca.ValidName(node) != nil {
		return ""
	}
	return node
}

// CheckRequester denies a CSR whose requester is not <prefix><node> for a
// Node that exists. spec.username is set by the API server from the
// authenticated requester; nobody can choose it.
func CheckRequester(r *Request) error {
	user := r.CSR.Spec.Username
	if r.NodeName == "" {
		return denial(auditRequesterNotNode,
			"the requester %q is not a node identity: only %s<node name> may ask this signer for a certificate", user, r.Prefix)
	}
	if r.Node == nil {
		return denial(auditNodeNotFound, "the requester %q names node %q, but no such Node exists", user, r.NodeName)
	}
	return nil
}

// CheckLabel denies a CSR whose k8s.ovn.org/ipsec-csr label, when
// present, names another node than the requester.
func CheckLabel(r *Request) error {
	if v, ok := r.CSR.Labels[LabelIPsecCSR]; ok && v != r.NodeName {
		return denial(auditLabelNotNode,
			"the %s label says %q but the requester is node %q; a node asks only for itself", LabelIPsecCSR, v, r.NodeName)
	}
	return nil
}

// AllowedUsages are the key usages a node certificate may ask for; the
// certificate gets the CA's fixed profile (digital signature, key
// encipherment for RSA, server and client auth, IPsec IKE) whatever it asks.
var AllowedUsages = []certificatesv1.KeyUsage{
	certificatesv1.UsageIPsecTunnel,
	certificatesv1.UsageDigitalSignature,
	certificatesv1.UsageKeyEncipherment,
	certificatesv1.UsageServerAuth,
	certificatesv1.UsageClientAuth,
}

// CheckUsages denies usages outside AllowedUsages.
func CheckUsages(r *Request) error {
	for _, u := range r.CSR.Spec.Usages {
		if !slices.Contains(AllowedUsages, u) {
			return denial(auditUsageNotAllowed,
				"usage %q is not allowed; a node certificate may ask only for %s", u, usageList())
		}
	}
	return nil
}

func usageList() string {
	s := make([]string, len(AllowedUsages))
	for i, u := range AllowedUsages {
		s[i] = string(u)
	}
	return strings.Join(s, ", ")
}

// NodeCN returns the CN a Node may hold: its chassis-id annotation or its
// name, in lower case (libreswan compares IDs without regard to case, so
// 0A1B… and 0a1b… are one name, and the CA issues it in lower case); ""
// when the annotation is missing.
func NodeCN(n *corev1.Node, from CNFrom) string {
	if from == CNFromNodeName {
		return strings.ToLower(n.Name)
	}
	return strings.ToLower(strings.TrimSpace(n.Annotations[AnnotationChassisID]))
}

// CheckNodeCN fills the identity the node may ask for, and denies when
// the Node has no chassis-id to bind the CN to.
func CheckNodeCN(r *Request) error {
	cn := NodeCN(r.Node, r.CNFrom)
	if cn == "" {
		return denial(auditNoChassisID, "node %q has no %s annotation, so its certificate name cannot be checked; "+
			"OVN-Kubernetes sets it when ovnkube-node starts: ask again once it is there", r.NodeName, AnnotationChassisID)
	}
	r.Identity = ca.Identity{Node: r.NodeName, CN: cn}
	return nil
}

// CheckCNUnique denies when another Node claims the same chassis-id: the
// certificate name must belong to one node. (The store enforces the same
// for names already issued.)
func CheckCNUnique(r *Request) error {
	if r.NodesWithCN == nil || r.CNFrom == CNFromNodeName {
		return nil
	}
	for _, other := range r.NodesWithCN(r.Identity.CN) {
		if other != r.NodeName {
			return denial(ca.ReasonNameHeld,
				"node %q also carries %s %q; a certificate name belongs to one node: fix the annotations",
				other, AnnotationChassisID, r.Identity.CN)
		}
	}
	return nil
}

// CheckCSRNames denies a CSR whose CN or a DNS SAN is not the node's CN,
// compared without regard to case (the certificate gets the CN in lower
// case). A CSR that does not parse is the node policy's to deny.
func CheckCSRNames(r *Request) error {
	csr, err := ca.ParseCSR(r.CSR.Spec.Request)
	if err != nil {
		return nil
	}
	if cn := csr.Subject.CommonName; !strings.EqualFold(cn, r.Identity.CN) {
		return denial(ca.ReasonCNNotCallersNode,
			"the CSR asks for CN %.80q, but node %q may hold only %q", cn, r.NodeName, r.Identity.CN)
	}
	for _, d := range csr.DNSNames {
		if !strings.EqualFold(d, r.Identity.CN) {
			return denial(ca.ReasonSANNotAllowed,
				"the CSR requests SAN DNS:%.80q; only DNS:%s (the node's own name) is allowed", d, r.Identity.CN)
		}
	}
	return nil
}

// DenyReason extracts the denial of err (nil when err is not a denial).
func DenyReason(err error) *ca.DenyError {
	var de *ca.DenyError
	if errors.As(err, &de) {
		return de
	}
	return nil
}
