package ca

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"time"

	"github.com/ipsecca/ipsecca/ca/nodecert"
)

// Profile constants of node certificates.
const (
	// NodeYears is a node certificate's lifetime: exactly 5 calendar years
	// from NotBefore (capped at the root's NotAfter).
	NodeYears = 5
	// Backdate is how far NotBefore is set before the moment of issue, so
	// a peer whose clock runs a little behind still accepts a fresh cert.
	Backdate = 5 * time.Minute
	// RotateFraction is the part of a certificate's lifetime after which
	// it is due for rotation: 90%, so 4.5 years of 5 (nodecert's rule).
	RotateFraction = nodecert.RotateFraction
)

// OIDExtKeyUsageIPSecIKE is id-kp-ipsecIKE (RFC 4945).
var OIDExtKeyUsageIPSecIKE = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 17}

// RotateAfter returns NotBefore + RotateFraction of the lifetime. It is
// nodecert.RotateAfter, which the node sidecar applies too.
func RotateAfter(notBefore, notAfter time.Time) time.Time {
	return nodecert.RotateAfter(notBefore, notAfter)
}

// newSerial returns a 20-byte serial: the issue time in Unix nanoseconds
// (8 bytes, big-endian) followed by 96 bits from rand. The random part is
// what makes serials unpredictable (CA/Browser Forum asks for 64 bits);
// the time prefix makes serials, and so the store's certificate keys,
// ascend, so a batch of new certificates lands in the last pages of the
// store's B-tree instead of dirtying one random page each (measured: 27
// KB written per enrolment with random serials, 18 KB with these).
func newSerial(rand io.Reader, now time.Time) (*big.Int, error) {
	var b [20]byte
	binary.BigEndian.PutUint64(b[:8], uint64(max(now.UnixNano(), 0)))
	for {
		if _, err := io.ReadFull(rand, b[8:]); err != nil {
			return nil, fmt.Errorf("ca: read serial randomness: %w", err)
		}
		n := new(big.Int).SetBytes(b[:])
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// SerialString formats a serial as stored and shown: lower-case hex.
func SerialString(n *big.Int) string { return n.Text(16) }

// subjectKeyID is the RFC 7093 method-1 key identifier (the leftmost 160
// bits of the SHA-256 of the subjectPublicKey bit string), as Go makes for
// CA certificates since Go 1.25: RFC 5280's SHA-1 is not approved in FIPS
// 140-3 mode (GODEBUG=fips140=only panics on it). Only new certificates get
// it; an identifier only has to be unique, so old and new ones mix.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(spki.PublicKey.Bytes)
	return sum[:20], nil
}

// leafTemplate is the profile shared by node, server and admin
// certificates: subject built by the CA (O=<org>, CN=<cn>: CN is the last
// RDN, so the RFC 2253 form is "CN=<cn>,O=<org>" and ovs-monitor-ipsec's
// `CN=(.+?),` finds it), KU digitalSignature (+keyEncipherment for RSA),
// EKU serverAuth, clientAuth and ipsecIKE, validity from now-Backdate for
// the given years, capped at the root's NotAfter.
func leafTemplate(
	serial *big.Int,
	org, ou, cn string,
	pub crypto.PublicKey,
	now time.Time,
	years int,
	root *x509.Certificate,
) (*x509.Certificate, error) {
	skid, err := subjectKeyID(pub)
	if err != nil {
		return nil, fmt.Errorf("ca: public key: %w", err)
	}
	notBefore := now.UTC().Truncate(time.Second).Add(-Backdate)
	notAfter := notBefore.AddDate(years, 0, 0)
	if notAfter.After(root.NotAfter) {
		notAfter = root.NotAfter
	}
	ku := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		ku |= x509.KeyUsageKeyEncipherment
	}
	subject := pkix.Name{Organization: []string{org}, CommonName: cn}
	if ou != "" {
		subject.OrganizationalUnit = []string{ou}
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              ku,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{OIDExtKeyUsageIPSecIKE},
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          skid,
		AuthorityKeyId:        root.SubjectKeyId,
	}, nil
}

// signatureAlgorithm picks the signature for certificates signed by key:
// SHA-256 for RSA and P-256, SHA-384 for P-384.
func signatureAlgorithm(key crypto.Signer) x509.SignatureAlgorithm {
	if _, ok := key.Public().(*rsa.PublicKey); ok {
		return x509.SHA256WithRSA
	}
	if curveBits(key.Public()) == 384 {
		return x509.ECDSAWithSHA384
	}
	return x509.ECDSAWithSHA256
}
