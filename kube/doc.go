// Package kube is ipsecca's Kubernetes front door: a signer for
// certificates.k8s.io/v1 CertificateSigningRequests that serves
// OVN-Kubernetes' IPsec node flow unchanged (the flow OpenShift's network
// operator signs today), the CA-bundle ConfigMap the nodes trust, and the
// manifests that deploy ipsecca, built from k8s.io/api types.
//
// The Signer is the second door to the same ca.Authority the gRPC server
// uses: every certificate goes through Authority.IssueForNode (the one
// node policy: key rules, the ovs_ rule, CN syntax, CN == the proven
// identity, SANs only DNS:<CN>, the name held by one node), is stored
// before it is published, and is keyed by the CSR's UID. What only
// Kubernetes can prove is checked here first, as small named checks
// (KubePolicy): the requester is system:ovn-node:<node> for a Node that
// exists, the k8s.ovn.org/ipsec-csr label names that node, the usages are
// IPsec ones, and the CN the node may hold is its
// k8s.ovn.org/node-chassis-id annotation (or its name), in lower case, to
// which the CSR's CN and DNS SANs are compared without regard to case. A
// revoked node is denied (NodeRevoked) until an admin re-admits it.
//
// Decisions appear on the CSR as conditions with stable reasons (see
// Reason), as audit events in the store and as metrics; denials of
// requesters that are not existing nodes are counted and logged sampled,
// not audited one by one. The ConfigMap carries the CA's CRL next to the
// bundle (ca-crl.pem), rewritten when the revocations change and before
// its NextUpdate nears. The Signer is
// safe under restarts and replicas: one leader (a coordination.k8s.io
// Lease) decides; a CSR with a certificate is never signed again; a
// certificate stored but not yet published (a crash in between, or
// another replica) is found by the CSR's UID and published as is.
package kube
