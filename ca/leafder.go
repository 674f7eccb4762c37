package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// createLeaf signs tmpl, a leaf of leafTemplate's profile, under issuer
// with key and returns its DER.
//
// For an in-memory ECDSA key it encodes the certificate itself: the bytes
// x509.CreateCertificate would produce for the same template (a test
// compares them field by field and byte by byte), without that function's
// reflection-based encoding and without its verification of the signature
// it has just made. That check guards against faulty signers: an RSA-CRT
// fault leaks the key, and a hardware or remote signer may return garbage.
// Go's own ECDSA over a key in memory is neither, so re-verifying it would
// only double the cost of every certificate. Every other key, and any
// template outside the profile, goes through x509.CreateCertificate.
func createLeaf(rand io.Reader, tmpl, issuer *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) ([]byte,
	error) {
	ecKey, ok := key.(*ecdsa.PrivateKey)
	if !ok || !leafProfileOnly(tmpl) {
		return x509.CreateCertificate(rand, tmpl, issuer, pub, key)
	}
	if issuer.PublicKey != nil && !ecKey.PublicKey.Equal(issuer.PublicKey) {
		return nil, errors.New("x509: provided PrivateKey doesn't match parent's PublicKey")
	}
	var sigAlg []byte
	var hash crypto.Hash
	switch tmpl.SignatureAlgorithm {
	case x509.ECDSAWithSHA256:
		sigAlg, hash = derECDSAWithSHA256, crypto.SHA256
	case x509.ECDSAWithSHA384:
		sigAlg, hash = derECDSAWithSHA384, crypto.SHA384
	default:
		return x509.CreateCertificate(rand, tmpl, issuer, pub, key)
	}
	tbs, err := leafTBS(tmpl, issuer, pub, sigAlg)
	if err != nil {
		return nil, err
	}
	h := hash.New()
	h.Write(tbs)
	sig, err := ecKey.Sign(rand, h.Sum(nil), hash)
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(sigAlg)
		b.AddASN1BitString(sig)
	})
	return b.Bytes()
}

// leafProfileOnly reports whether tmpl sets nothing beyond what
// leafTemplate and sign set, the fields leafTBS encodes.
func leafProfileOnly(t *x509.Certificate) bool {
	return t.BasicConstraintsValid && !t.IsCA && t.MaxPathLen == 0 && !t.MaxPathLenZero && len(t.RawSubject) == 0 &&
		len(t.ExtraExtensions) == 0 && len(t.Subject.ExtraNames) == 0 && len(t.EmailAddresses) == 0 &&
		len(t.URIs) == 0 && len(t.OCSPServer) == 0 && len(t.IssuingCertificateURL) == 0 &&
		len(t.CRLDistributionPoints) == 0 && len(t.PolicyIdentifiers) == 0 && len(t.Policies) == 0 &&
		len(t.PermittedDNSDomains) == 0 && len(t.ExcludedDNSDomains) == 0 && len(t.PermittedIPRanges) == 0 &&
		len(t.ExcludedIPRanges) == 0 && len(t.PermittedEmailAddresses) == 0 &&
		len(t.ExcludedEmailAddresses) == 0 && len(t.PermittedURIDomains) == 0 && len(t.ExcludedURIDomains) == 0 &&
		len(t.SubjectKeyId) > 0 && t.KeyUsage > 0 && t.KeyUsage < 1<<8 && t.SerialNumber != nil &&
		t.SerialNumber.Sign() > 0
}

// DER AlgorithmIdentifiers of the ECDSA signatures (RFC 5758: no parameters).
var (
	derECDSAWithSHA256 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}
	derECDSAWithSHA384 = []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03}
)

var (
	oidExtKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtExtendedKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidExtBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtSubjectKeyID     = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidExtAuthorityKeyID   = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidEKUServerAuth       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidEKUClientAuth       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

// leafTBS encodes the TBSCertificate of RFC 5280 section 4.1 for tmpl,
// with the extensions in x509.CreateCertificate's order.
func leafTBS(tmpl, issuer *x509.Certificate, pub crypto.PublicKey, sigAlg []byte) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("x509: %w", err)
	}
	issuerDER := issuer.RawSubject
	if len(issuerDER) == 0 {
		return nil, errors.New("ca: the issuer certificate has no raw subject")
	}
	subjectDER, err := asn1.Marshal(tmpl.Subject.ToRDNSequence())
	if err != nil {
		return nil, err
	}
	akid := tmpl.AuthorityKeyId
	if !bytes.Equal(issuerDER, subjectDER) && len(issuer.SubjectKeyId) > 0 {
		akid = issuer.SubjectKeyId
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1Int64(2) // v3
		})
		b.AddASN1BigInt(tmpl.SerialNumber)
		b.AddBytes(sigAlg)
		b.AddBytes(issuerDER)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addTime(b, tmpl.NotBefore)
			addTime(b, tmpl.NotAfter)
		})
		b.AddBytes(subjectDER)
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(3).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				addLeafExtensions(b, tmpl, akid, bytes.Equal(subjectDER, []byte{0x30, 0}))
			})
		})
	})
	return b.Bytes()
}

func addLeafExtensions(b *cryptobyte.Builder, t *x509.Certificate, akid []byte, emptySubject bool) {
	addExtension(b, oidExtKeyUsage, true, func(b *cryptobyte.Builder) {
		// A named bit list: bit 0 is the most significant, trailing zero bits are dropped.
		bits := reverseByte(byte(t.KeyUsage))
		unused := 0
		for bits&(1<<unused) == 0 {
			unused++
		}
		b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) {
			b.AddUint8(uint8(unused))
			b.AddUint8(bits)
		})
	})
	if len(t.ExtKeyUsage) > 0 || len(t.UnknownExtKeyUsage) > 0 {
		addExtension(b, oidExtExtendedKeyUsage, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, u := range t.ExtKeyUsage {
					switch u {
					case x509.ExtKeyUsageServerAuth:
						b.AddASN1ObjectIdentifier(oidEKUServerAuth)
					case x509.ExtKeyUsageClientAuth:
						b.AddASN1ObjectIdentifier(oidEKUClientAuth)
					default:
						b.SetError(fmt.Errorf("ca: extended key usage %d is not in the leaf profile", u))
					}
				}
				for _, oid := range t.UnknownExtKeyUsage {
					b.AddASN1ObjectIdentifier(oid)
				}
			})
		})
	}
	addExtension(b, oidExtBasicConstraints, true, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {}) // cA FALSE is the default, so empty
	})
	addExtension(b, oidExtSubjectKeyID, false, func(b *cryptobyte.Builder) {
		b.AddASN1OctetString(t.SubjectKeyId)
	})
	if len(akid) > 0 {
		addExtension(b, oidExtAuthorityKeyID, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(akid) })
			})
		})
	}
	if len(t.DNSNames) > 0 || len(t.IPAddresses) > 0 {
		addExtension(b, oidExtSubjectAltName, emptySubject, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, name := range t.DNSNames {
					if !isIA5(name) {
						b.SetError(fmt.Errorf("x509: %q cannot be encoded as an IA5String", name))
						return
					}
					b.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(b *cryptobyte.Builder) {
						b.AddBytes([]byte(name))
					})
				}
				for _, ip := range t.IPAddresses {
					b.AddASN1(cbasn1.Tag(7).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(ipBytes(ip)) })
				}
			})
		})
	}
}

// addExtension adds an Extension whose extnValue holds what value adds.
func addExtension(
	b *cryptobyte.Builder, id asn1.ObjectIdentifier, critical bool, value cryptobyte.BuilderContinuation,
) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(id)
		if critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1(cbasn1.OCTET_STRING, value)
	})
}

// addTime adds t as encoding/asn1 does: UTCTime from 1950 to 2049,
// GeneralizedTime otherwise (RFC 5280 section 4.1.2.5).
func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC()
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1UTCTime(t)
		return
	}
	b.AddASN1GeneralizedTime(t)
}

func ipBytes(ip net.IP) []byte {
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}

func isIA5(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func reverseByte(v byte) byte {
	var r byte
	for i := 0; i < 8; i++ {
		r = r<<1 | v&1
		v >>= 1
	}
	return r
}
