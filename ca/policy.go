package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/ipsecca/ipsecca/ca/nodecert"
	"github.com/ipsecca/ipsecca/internal/ovsname"
	"github.com/ipsecca/ipsecca/store"
)

// Error classes. A DenyError unwraps to one of them; the gRPC layer maps
// each class to one status code.
var (
	ErrInvalidRequest   = errors.New("ca: invalid request")
	ErrUnauthenticated  = errors.New("ca: unauthenticated")
	ErrPermissionDenied = errors.New("ca: permission denied")
	ErrConflict         = errors.New("ca: conflict")
)

// Reason is a stable, machine-readable denial reason.
type Reason string

// Denial reasons.
const (
	ReasonTokenInvalid     Reason = "token-invalid"
	ReasonTokenExpired     Reason = "token-expired"
	ReasonTokenUsed        Reason = "token-used"
	ReasonCallerUnknown    Reason = "caller-unknown"
	ReasonCallerRevoked    Reason = "caller-revoked"
	ReasonCallerExpired    Reason = "caller-expired"
	ReasonCallerNotNode    Reason = "caller-not-node"
	ReasonCSRMalformed     Reason = "csr-malformed"
	ReasonCSRTooLarge      Reason = "csr-too-large"
	ReasonCSRSignature     Reason = "csr-signature-invalid"
	ReasonKeyWeak          Reason = "key-weak"
	ReasonKeyUnsupported   Reason = "key-unsupported"
	ReasonCARequested      Reason = "ca-requested"
	ReasonCNForbiddenOVS   Reason = "cn-ovs-prefix"
	ReasonCNInvalid        Reason = "cn-invalid"
	ReasonCNNotCallersNode Reason = "cn-not-callers-node"
	ReasonSANNotAllowed    Reason = "san-not-allowed"
	ReasonNameHeld         Reason = "name-held-by-other-node"
	ReasonNodeNameInvalid  Reason = "node-name-invalid"
	ReasonLifetimeTooShort Reason = "lifetime-too-short"
	// ReasonNodeRevoked: the node was revoked (ipsecca nodes revoke) and
	// gets no certificate, by any door, until an admin re-admits it.
	ReasonNodeRevoked Reason = "node-revoked"
	// ReasonCallerSuperseded: the client certificate is no longer the
	// node's (or admin's) active one; only the active certificate
	// authenticates.
	ReasonCallerSuperseded Reason = "certificate-superseded"
	// ReasonTokenVoided: the token was created before its node was
	// revoked; revocation voids a node's unused tokens.
	ReasonTokenVoided Reason = "token-voided"
)

// DenyError is a policy denial: a stable reason and a sentence for people.
type DenyError struct {
	Reason Reason
	Detail string
	class  error
}

func (e *DenyError) Error() string { return fmt.Sprintf("ca: denied (%s): %s", e.Reason, e.Detail) }

// Unwrap returns the error class (ErrInvalidRequest, ...).
func (e *DenyError) Unwrap() error { return e.class }

func deny(class error, r Reason, format string, a ...any) *DenyError {
	return &DenyError{Reason: r, Detail: fmt.Sprintf(format, a...), class: class}
}

// MaxCSRBytes is the largest CSR accepted (PEM or DER).
const MaxCSRBytes = 16 << 10

// ParseCSR parses a PEM (or raw DER) certificate request, bounded in size.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	if len(data) > MaxCSRBytes {
		return nil, deny(ErrInvalidRequest, ReasonCSRTooLarge, "the CSR is %d bytes; the limit is %d", len(data), MaxCSRBytes)
	}
	der := data
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
			return nil, deny(ErrInvalidRequest, ReasonCSRMalformed,
				"expected a PEM CERTIFICATE REQUEST block, got %q", block.Type)
		}
		der = block.Bytes
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, deny(ErrInvalidRequest, ReasonCSRMalformed, "the CSR does not parse: %v", err)
	}
	return csr, nil
}

// Identity is who a request is for, as proven by its credential: the node
// identity and the certificate name (CN) it may hold.
type Identity struct {
	Node string
	CN   string
}

// Request is a certificate request under policy.
type Request struct {
	CSR      *x509.CertificateRequest
	Identity Identity
}

// Check is one named step of the approval policy (Evaluate runs them).
type Check = Step[*Request]

// NodePolicy is the auto-approval chain for node certificates, in order.
// Each check returns a *DenyError or nil. The key is judged before the CSR's
// signature: it costs nothing, and FIPS 140-3 mode refuses to verify with a
// key it does not approve, which would otherwise read as a bad signature.
var NodePolicy = []Check{
	{"key", CheckKey},
	{"csr-signature", CheckSignature},
	{"not-ca", CheckNotCA},
	{"cn-ovs-prefix", CheckOVSPrefix},
	{"cn-syntax", CheckCNSyntax},
	{"cn-is-callers", CheckCNIsCallers},
	{"sans", CheckSANs},
}

// CheckSignature denies a CSR whose self-signature does not verify.
func CheckSignature(r *Request) error {
	if err := r.CSR.CheckSignature(); err != nil {
		return deny(ErrInvalidRequest, ReasonCSRSignature,
			"the CSR signature does not verify with its own public key: %v", err)
	}
	return nil
}

// CheckKey admits RSA 2048–8192 and ECDSA P-256/P-384 keys only; nodes
// authenticate IKE with RSA or ECDSA, so Ed25519, DSA and other curves are
// refused.
func CheckKey(r *Request) error {
	switch k := r.CSR.PublicKey.(type) {
	case *rsa.PublicKey:
		bits := k.N.BitLen()
		if bits < 2048 {
			return deny(ErrInvalidRequest, ReasonKeyWeak, "RSA key of %d bits is too weak; use at least 2048", bits)
		}
		if bits > 8192 {
			return deny(ErrInvalidRequest, ReasonKeyUnsupported, "RSA key of %d bits is larger than the 8192 supported", bits)
		}
		return nil
	case *ecdsa.PublicKey:
		if b := curveBits(k); b == 256 || b == 384 {
			return nil
		}
		return deny(ErrInvalidRequest, ReasonKeyUnsupported,
			"ECDSA curve %s is not supported; use P-256 or P-384", k.Curve.Params().Name)
	}
	return deny(ErrInvalidRequest, ReasonKeyUnsupported,
		"%s keys are not supported; use RSA (2048-8192 bits) or ECDSA P-256/P-384", r.CSR.PublicKeyAlgorithm)
}

func curveBits(pub any) int {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return 0
	}
	switch k.Curve {
	case elliptic.P256():
		return 256
	case elliptic.P384():
		return 384
	}
	return -1
}

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
)

// CheckNotCA denies a CSR that asks for CA powers (basicConstraints CA=true
// or keyUsage certSign/cRLSign among its requested extensions).
func CheckNotCA(r *Request) error {
	for _, ext := range r.CSR.Extensions {
		switch {
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			if _, err := asn1.Unmarshal(ext.Value, &bc); err != nil {
				return deny(ErrInvalidRequest, ReasonCSRMalformed, "the CSR's basicConstraints extension does not parse")
			}
			if bc.IsCA {
				return deny(ErrInvalidRequest, ReasonCARequested,
					"the CSR asks for a CA certificate (basicConstraints CA=true); nodes get end-entity certificates only")
			}
		case ext.Id.Equal(oidKeyUsage):
			var bits asn1.BitString
			if _, err := asn1.Unmarshal(ext.Value, &bits); err != nil {
				return deny(ErrInvalidRequest, ReasonCSRMalformed, "the CSR's keyUsage extension does not parse")
			}
			// keyCertSign is bit 5, cRLSign bit 6.
			if bits.At(5) == 1 || bits.At(6) == 1 {
				return deny(ErrInvalidRequest, ReasonCARequested,
					"the CSR asks for certificate or CRL signing key usage; nodes get end-entity certificates only")
			}
		}
	}
	return nil
}

// CheckOVSPrefix denies names starting with "ovs_" in any case:
// ovs-monitor-ipsec owns that NSS nickname namespace and deletes every
// entry in it when it restarts.
func CheckOVSPrefix(r *Request) error {
	for _, name := range []string{r.CSR.Subject.CommonName, r.Identity.CN} {
		if HasOVSPrefix(name) {
			return deny(ErrInvalidRequest, ReasonCNForbiddenOVS,
				"the name %q starts with \"ovs_\": ovs-monitor-ipsec owns and deletes NSS entries in that namespace", name)
		}
	}
	return nil
}

// HasOVSPrefix reports whether s starts with "ovs_" in any case. It is
// ovsname.HasPrefix, which bundle uses too (bundle may not import ca).
func HasOVSPrefix(s string) bool { return ovsname.HasPrefix(s) }

// MaxNameLength bounds node names and CNs (the X.520 CN upper bound).
const MaxNameLength = nodecert.MaxNameLength

// ValidName reports why s is not a valid node name or CN: a DNS-1123
// subdomain or a UUID (OVN's chassis system-id); nil means valid. It is
// nodecert.ValidName, which the node sidecar applies too.
func ValidName(s string) error { return nodecert.ValidName(s) }

// CheckCNSyntax denies CNs that are not valid node names.
func CheckCNSyntax(r *Request) error {
	if err := ValidName(store.CanonicalName(r.CSR.Subject.CommonName)); err != nil {
		return deny(ErrInvalidRequest, ReasonCNInvalid, "CSR common name: %v", err)
	}
	return nil
}

// CheckCNIsCallers denies a CN other than the one the caller's credential
// was issued for. Names compare without regard to case, as libreswan's do.
func CheckCNIsCallers(r *Request) error {
	if store.CanonicalName(r.CSR.Subject.CommonName) != store.CanonicalName(r.Identity.CN) {
		return deny(ErrPermissionDenied, ReasonCNNotCallersNode,
			"the CSR asks for %q but the credential is for %q (node %q)",
			r.CSR.Subject.CommonName, r.Identity.CN, r.Identity.Node)
	}
	return nil
}

// CheckSANs admits no SANs but DNS:<CN> (which the CA adds anyway).
func CheckSANs(r *Request) error {
	c := r.CSR
	if n := len(c.IPAddresses) + len(c.EmailAddresses) + len(c.URIs); n > 0 {
		return deny(ErrInvalidRequest, ReasonSANNotAllowed,
			"the CSR requests %d IP, e-mail or URI SANs; only DNS:%s is allowed", n, c.Subject.CommonName)
	}
	for _, d := range c.DNSNames {
		if !strings.EqualFold(d, c.Subject.CommonName) {
			return deny(ErrInvalidRequest, ReasonSANNotAllowed,
				"the CSR requests SAN DNS:%.80q; only DNS:%s (the node's own name) is allowed", d, c.Subject.CommonName)
		}
	}
	return nil
}
