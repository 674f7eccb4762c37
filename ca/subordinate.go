package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/cloudflare/cfssl/helpers"

	"github.com/ipsecca/ipsecca/internal/pemutil"
	"github.com/ipsecca/ipsecca/store"
)

// A subordinate CA issues under an organisation's root instead of its own
// self-signed one. Its life:
//
//  1. InitSubordinate (ipsecca init --subordinate) makes the CA key and a
//     request for a CA certificate (O=<org>, CN=<name>, CA:TRUE pathlen 0,
//     keyCertSign and cRLSign). The record holds the key and the request,
//     no certificate: Bootstrap answers ErrAwaitingCertificate, so nothing
//     (no service certificate, no admin credential) is issued before it.
//  2. The organisation signs the request with its own tools.
//  3. ImportSubordinate (ipsecca ca import, or AdminService.ImportCA) runs
//     SubordinateChecks on the certificate and its chain and stores both
//     in one read-modify-write of the record.
//  4. Before RenewBy, the organisation signs a new certificate for the same
//     key and subject, imported the same way. The old certificate is not
//     kept: every certificate the CA issued names the same issuer subject
//     and was signed by the same key, so it verifies against the new one;
//     nodes need nothing but the new chain.
//
// Every certificate the CA issues ends at the latest at NodeNotAfterCap:
// the earliest end of its own certificate and of the chain above it.

// DefaultSubordinateName is a subordinate CA's subject CN when none is given.
const DefaultSubordinateName = "ipsecca subordinate CA"

// renewMarginMonths is the rotation margin of a node certificate: the part of its
// life after the due point (10% of 5 years). A subordinate whose certificate
// ends within a node lifetime plus this margin is warned about.
const renewMarginMonths = 6

// Reasons of the subordinate CA's refusals: the failed import check's name
// follows ReasonImportPrefix (e.g. "ca-import-key").
const (
	ReasonImportPrefix          = "ca-import-"
	ReasonNotSubordinate Reason = "ca-not-subordinate"
	ReasonCAExpired      Reason = "ca-expired"
)

// ErrNotSubordinate refuses a subordinate's operation on a self-signed root.
var ErrNotSubordinate error = deny(ErrFailedPrecondition, ReasonNotSubordinate,
	"this CA is a self-signed root, not a subordinate CA: a subordinate starts in a new data directory "+
		"(or etcd prefix) with ipsecca init --subordinate")

// SubordinateState says where InitSubordinate found (or left) the CA.
type SubordinateState string

// States of a subordinate CA's request.
const (
	// SubordinateCreated: the key and the request were made now.
	SubordinateCreated SubordinateState = "created"
	// SubordinateAwaiting: they were made before; the certificate is still
	// awaited. The request is the stored one, unchanged.
	SubordinateAwaiting SubordinateState = "awaiting"
	// SubordinateRenewal: the CA has its certificate; the request is a new
	// one for the same key and subject, for the organisation to renew it.
	SubordinateRenewal SubordinateState = "renewal"
)

// SubordinateRequest is the request InitSubordinate leaves for the
// organisation's root to sign.
type SubordinateRequest struct {
	CSRPEM  []byte
	Subject string
	Key     string // e.g. "ECDSA P-256"
	State   SubordinateState
	// Cert is the CA's current certificate (SubordinateRenewal only).
	Cert *x509.Certificate
}

// InitSubordinate makes a subordinate CA in st: a key of cfg.KeyType
// (sealed under cfg.KEK when set) and a request for a CA certificate with
// the subject O=<Organization>, CN=<CommonName>, stored with no
// certificate. Run again it returns the stored request unchanged; on a
// subordinate that has its certificate it makes a new request for the same
// key and subject (a renewal; cfg.KEK must open a sealed key). A
// self-signed root is refused (ErrNotSubordinate).
func InitSubordinate(
	ctx context.Context,
	st RootStore,
	cfg RootConfig,
	clock Clock,
	rnd io.Reader,
) (*SubordinateRequest, error) {
	m, err := st.CA(ctx)
	switch {
	case err == nil:
		return existingSubordinate(m, cfg.KEK, rnd)
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	if cfg.Organization == "" {
		cfg.Organization = DefaultOrganization
	}
	if cfg.CommonName == "" {
		cfg.CommonName = DefaultSubordinateName
	}
	if cfg.KeyType == "" {
		cfg.KeyType = DefaultCAKeyType
	}
	key, err := cfg.KeyType.GenerateKey(rnd)
	if err != nil {
		return nil, fmt.Errorf("ca: generate the subordinate CA key: %w", err)
	}
	subject := pkix.Name{Organization: []string{cfg.Organization}, CommonName: cfg.CommonName}
	csrPEM, err := subordinateCSR(rnd, key, &x509.CertificateRequest{Subject: subject})
	if err != nil {
		return nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ca: encode the subordinate CA key: %w", err)
	}
	m = &store.CA{KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), CSRPEM: csrPEM}
	if cfg.KEK != nil {
		if m, err = sealCA(m, cfg.KEK); err != nil {
			return nil, err
		}
	}
	sum := sha256.Sum256(csrPEM)
	ev := store.Event{
		Time:  clock.Now().UTC(),
		Type:  store.EventCACreated,
		Actor: "init",
		Detail: map[string]string{
			"subject":    subject.String(),
			"role":       "subordinate",
			"state":      "awaiting its certificate",
			"key":        describeKey(key.Public()),
			"csr_sha256": hex.EncodeToString(sum[:]),
		},
	}
	if err := st.CreateCA(ctx, m, ev); err != nil {
		if errors.Is(err, store.ErrExists) { // another init won: take its request
			return InitSubordinate(ctx, st, cfg, clock, rnd)
		}
		return nil, err
	}
	return &SubordinateRequest{CSRPEM: csrPEM, Subject: subject.String(), Key: describeKey(key.Public()),
		State: SubordinateCreated}, nil
}

// existingSubordinate is InitSubordinate on a stored CA.
func existingSubordinate(m *store.CA, kek KEK, rnd io.Reader) (*SubordinateRequest, error) {
	switch {
	case len(m.CertPEM) == 0 && len(m.CSRPEM) > 0:
		csr, err := ParseCSR(m.CSRPEM)
		if err != nil {
			return nil, fmt.Errorf("ca: the stored subordinate CA request: %w", err)
		}
		return &SubordinateRequest{CSRPEM: m.CSRPEM, Subject: csr.Subject.String(),
			Key: describeKey(csr.PublicKey), State: SubordinateAwaiting}, nil
	case len(m.Chain) == 0:
		return nil, ErrNotSubordinate
	}
	cert, err := helpers.ParseCertificatePEM(m.CertPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: stored CA certificate: %w", err)
	}
	key, err := storedKey(m, kek)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("ca: stored CA key does not match the CA certificate")
	}
	csrPEM, err := subordinateCSR(rnd, key, &x509.CertificateRequest{RawSubject: cert.RawSubject})
	if err != nil {
		return nil, err
	}
	return &SubordinateRequest{CSRPEM: csrPEM, Subject: cert.Subject.String(), Key: describeKey(cert.PublicKey),
		State: SubordinateRenewal, Cert: cert}, nil
}

// storedKey opens and parses m's key.
func storedKey(m *store.CA, kek KEK) (crypto.Signer, error) {
	keyPEM, err := openKey(m, kek)
	if err != nil {
		return nil, err
	}
	key, err := helpers.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, errors.New("ca: stored CA key does not parse")
	}
	return key, nil
}

// subordinateCSR signs tmpl (its subject) with key, asking for a CA
// certificate that may sign only end-entity certificates and CRLs:
// basicConstraints critical CA:TRUE, pathlen 0; keyUsage critical
// keyCertSign, cRLSign.
func subordinateCSR(rnd io.Reader, key crypto.Signer, tmpl *x509.CertificateRequest) ([]byte, error) {
	bc, err := asn1.Marshal(struct {
		IsCA       bool
		MaxPathLen int
	}{true, 0})
	if err != nil {
		return nil, err
	}
	// keyCertSign is bit 5 and cRLSign bit 6 of the KeyUsage bit string.
	ku, err := asn1.Marshal(asn1.BitString{Bytes: []byte{0x06}, BitLength: 7})
	if err != nil {
		return nil, err
	}
	tmpl.SignatureAlgorithm = signatureAlgorithm(key)
	tmpl.ExtraExtensions = []pkix.Extension{
		{Id: oidBasicConstraints, Critical: true, Value: bc},
		{Id: oidKeyUsage, Critical: true, Value: ku},
	}
	der, err := x509.CreateCertificateRequest(rnd, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("ca: make the subordinate CA request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// describeKey names a public key for people: "ECDSA P-256", "RSA 3072".
func describeKey(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	}
	return fmt.Sprintf("%T", pub)
}

// SubordinateImport is a subordinate CA's certificate under the import
// checks: what CheckSubordinate found, and what the checks concluded.
type SubordinateImport struct {
	// Cert is the certificate to import; Given the other certificates
	// supplied with it (the chain, any order).
	Cert  *x509.Certificate
	Given []*x509.Certificate
	// Key is the public half of the stored CA key.
	Key crypto.PublicKey
	// Requested is the stored request (a first import); Current the
	// certificate the import replaces (a renewal). One of them is set.
	Requested *x509.CertificateRequest
	Current   *x509.Certificate
	Now       time.Time

	// Chain is the verified path above Cert: its issuer first, the
	// organisation's root last (set by the chain checks).
	Chain []*x509.Certificate
	// Warnings the import goes on with.
	Warnings []string
}

// SubordinateChecks are the checks of an imported subordinate CA
// certificate, in order; the first refusal ends the import. Each refusal
// is a *DenyError (class ErrInvalidRequest) whose reason is
// ReasonImportPrefix + the check's name.
var SubordinateChecks = []Step[*SubordinateImport]{
	importCheck("key", checkImportKey),
	importCheck("not-ca", checkImportIsCA),
	importCheck("key-usage", checkImportKeyUsage),
	importCheck("ext-key-usage", checkImportExtKeyUsage),
	importCheck("subject", checkImportSubject),
	importCheck("key-id", checkImportKeyID),
	importCheck("validity", checkImportValidNow),
	importCheck("chain-root", checkImportChainRoot),
	importCheck("path-length", checkImportPathLen),
	importCheck("chain", checkImportChainVerifies),
	importCheck("lifetime", checkImportLifetime),
}

// importCheck names fn's refusal: a denial with the check's reason.
func importCheck(name string, fn func(*SubordinateImport) error) Step[*SubordinateImport] {
	return Step[*SubordinateImport]{Name: name, Fn: func(s *SubordinateImport) error {
		if err := fn(s); err != nil {
			return deny(ErrInvalidRequest, Reason(ReasonImportPrefix+name), "%v", err)
		}
		return nil
	}}
}

func checkImportKey(s *SubordinateImport) error {
	if !publicKeysEqual(s.Cert.PublicKey, s.Key) {
		return fmt.Errorf("the certificate's key (%s) does not match the subordinate CA's key (%s, the one "+
			"ca.csr was made with)", describeKey(s.Cert.PublicKey), describeKey(s.Key))
	}
	return nil
}

func checkImportIsCA(s *SubordinateImport) error {
	if !s.Cert.BasicConstraintsValid || !s.Cert.IsCA {
		return errors.New("the certificate is not a CA certificate (no basicConstraints CA:TRUE): have it " +
			"signed with basicConstraints=critical,CA:TRUE,pathlen:0")
	}
	return nil
}

func checkImportKeyUsage(s *SubordinateImport) error {
	ku := s.Cert.KeyUsage
	if ku&x509.KeyUsageCertSign == 0 {
		return errors.New("the certificate's key usage lacks keyCertSign: it may not sign node certificates; " +
			"have it signed with keyUsage=critical,keyCertSign,cRLSign")
	}
	if w := crlSignWarning(s.Cert); w != "" {
		s.Warnings = append(s.Warnings, w)
	}
	return nil
}

func crlSignWarning(c *x509.Certificate) string {
	if c.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return "the subordinate CA's key usage lacks cRLSign: the CRLs it signs (revoked nodes) will not verify " +
			"in NSS or openssl; ask for keyUsage=critical,keyCertSign,cRLSign at its next renewal"
	}
	return ""
}

// checkImportExtKeyUsage: crypto/x509 (the CA's own mTLS, its clients)
// requires every CA above a certificate to allow the usage it is verified
// for; node and service certificates are verified for serverAuth and
// clientAuth.
func checkImportExtKeyUsage(s *SubordinateImport) error {
	c := s.Cert
	if (len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0) || slices.Contains(c.ExtKeyUsage,
		x509.ExtKeyUsageAny) {
		return nil
	}
	for _, need := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if !slices.Contains(c.ExtKeyUsage, need) {
			return errors.New("the certificate restricts extended key usage without serverAuth and clientAuth: " +
				"node and service certificates need both under it (leave extendedKeyUsage out of the CA " +
				"certificate, or include serverAuth, clientAuth)")
		}
	}
	return nil
}

// checkImportSubject: node certificates name the CA's subject as their
// issuer, and libreswan's rightca=%same compares the peer certificate's
// issuer with our own certificate's. On a first import a subject other
// than the requested one is taken (nothing was issued) with a warning; a
// renewal must keep it byte for byte, or the certificates already issued
// no longer chain to it (crypto/x509 matches issuers by the encoded name).
func checkImportSubject(s *SubordinateImport) error {
	c := s.Cert
	switch {
	case s.Current != nil && !bytes.Equal(c.RawSubject, s.Current.RawSubject):
		how := ""
		if c.Subject.String() == s.Current.Subject.String() {
			how = " (the same names, encoded differently)"
		}
		return fmt.Errorf("the certificate's subject %q differs from the subordinate CA's %q%s: the "+
			"certificates it issued name that subject as their issuer, and libreswan's rightca=%%same compares "+
			"it; a renewal must keep the subject exactly", c.Subject.String(), s.Current.Subject.String(), how)
	case s.Requested != nil && !bytes.Equal(c.RawSubject, s.Requested.RawSubject):
		s.Warnings = append(s.Warnings, fmt.Sprintf("the certificate's subject %q is not the requested %q: "+
			"the CA takes the certificate's; node certificates name it as their issuer and libreswan's "+
			"rightca=%%same compares it, so every renewal of this CA must keep it unchanged",
			c.Subject.String(), s.Requested.Subject.String()))
	}
	return nil
}

// checkImportKeyID warns when a renewal changes the subject key
// identifier: the certificates already issued carry the old one as their
// authority key identifier, which NSS uses to find their issuer.
func checkImportKeyID(s *SubordinateImport) error {
	if s.Current != nil && len(s.Current.SubjectKeyId) > 0 &&
		!bytes.Equal(s.Current.SubjectKeyId, s.Cert.SubjectKeyId) {
		s.Warnings = append(s.Warnings, fmt.Sprintf("the certificate's subject key identifier (%X) differs "+
			"from the current one (%X): the certificates already issued name the old one as their authority "+
			"key identifier; rotate the nodes (ipsecca rotate --all) so none depends on it",
			s.Cert.SubjectKeyId, s.Current.SubjectKeyId))
	}
	return nil
}

func checkImportValidNow(s *SubordinateImport) error {
	c := s.Cert
	switch {
	case s.Now.Before(c.NotBefore):
		return fmt.Errorf("the certificate is not valid before %s (now %s)", c.NotBefore.UTC().Format(time.RFC3339),
			s.Now.UTC().Format(time.RFC3339))
	case !s.Now.Before(c.NotAfter):
		return fmt.Errorf("the certificate expired at %s", c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkImportChainRoot follows the issuers from the certificate through
// the given ones (by subject and signature) to a self-signed root, and
// keeps that path in s.Chain.
func checkImportChainRoot(s *SubordinateImport) error {
	if selfSigned(s.Cert) {
		return errors.New("the certificate is self-signed: ca import takes the certificate your organisation's " +
			"CA signed for ca.csr")
	}
	var path []*x509.Certificate
	for cur := s.Cert; !selfSigned(cur); {
		var parent, namesake *x509.Certificate
		for _, c := range s.Given {
			if !bytes.Equal(c.RawSubject, cur.RawIssuer) || slices.Contains(path, c) {
				continue
			}
			namesake = c
			if cur.CheckSignatureFrom(c) == nil {
				parent = c
				break
			}
		}
		switch {
		case parent == nil && namesake != nil:
			return fmt.Errorf("the chain's %q did not sign %q (another key of that name): give the chain "+
				"of the CA that signed it", namesake.Subject.String(), cur.Subject.String())
		case parent == nil && len(path) == 0:
			return fmt.Errorf("the chain holds no issuer of the certificate (issuer %q): give the issuing CA "+
				"and every certificate above it, up to your organisation's root (--chain)",
				s.Cert.Issuer.String())
		case parent == nil:
			return fmt.Errorf("the chain does not end in a self-signed root: it stops at %q, issued by %q, "+
				"which it does not hold; add every certificate up to your organisation's root",
				cur.Subject.String(), cur.Issuer.String())
		}
		path = append(path, parent)
		cur = parent
	}
	for _, c := range s.Given {
		if !slices.Contains(path, c) {
			s.Warnings = append(s.Warnings, fmt.Sprintf("ignored %q from the chain: it is not on the path from "+
				"the certificate to its root", c.Subject.String()))
		}
	}
	s.Chain = path
	return nil
}

// selfSigned reports whether c names and verifies itself as its issuer.
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

// checkImportPathLen: a CA's pathlen bounds the CAs below it (here the
// subordinate and the intermediates between). The subordinate's own
// pathlen (0, as requested, or any) never limits the end-entity
// certificates it signs.
func checkImportPathLen(s *SubordinateImport) error {
	for i, c := range s.Chain {
		below := i + 1
		if limit := c.MaxPathLen; (limit > 0 || (limit == 0 && c.MaxPathLenZero)) && limit < below {
			return fmt.Errorf("%q allows %d CA certificate(s) below it (pathlen %d), and the subordinate CA is "+
				"%d below it: it must be signed by a CA whose path length allows it", c.Subject.String(), limit,
				limit, below)
		}
	}
	return nil
}

// checkImportChainVerifies verifies the path with crypto/x509 at now,
// with its root as the only trust anchor: the dates of every certificate,
// and every constraint the steps above did not name.
func checkImportChainVerifies(s *SubordinateImport) error {
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(s.Chain[len(s.Chain)-1])
	for _, c := range s.Chain[:len(s.Chain)-1] {
		inter.AddCert(c)
	}
	chains, err := s.Cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: s.Now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return fmt.Errorf("the chain does not verify at %s: %v", s.Now.UTC().Format(time.RFC3339), err)
	}
	s.Chain = chains[0][1:]
	return nil
}

// checkImportLifetime warns when node certificates will be capped: when
// the certificate (or one above it) ends within a node lifetime plus the
// rotation margin; and when a renewal ends earlier than what it replaces.
func checkImportLifetime(s *SubordinateImport) error {
	if s.Current != nil && s.Cert.NotAfter.Before(s.Current.NotAfter) {
		s.Warnings = append(s.Warnings, fmt.Sprintf("the certificate ends at %s, before the one it replaces "+
			"(%s)", s.Cert.NotAfter.UTC().Format(time.RFC3339), s.Current.NotAfter.UTC().Format(time.RFC3339)))
	}
	s.Warnings = append(s.Warnings, capWarnings(s.Cert, s.Chain, s.Now)...)
	return nil
}

// notAfterCap is the earliest NotAfter of cert and the chain above it, and
// the certificate that has it.
func notAfterCap(cert *x509.Certificate, chain []*x509.Certificate) (time.Time, *x509.Certificate) {
	by := cert
	for _, c := range chain {
		if c.NotAfter.Before(by.NotAfter) {
			by = c
		}
	}
	return by.NotAfter, by
}

// renewByOf is when a new node certificate starts being capped at capAt.
func renewByOf(capAt time.Time) time.Time { return capAt.AddDate(-NodeYears, 0, 0) }

// capWarnings says, from renewBy minus the rotation margin on, what the
// cap does to node certificates and what to do about it.
func capWarnings(cert *x509.Certificate, chain []*x509.Certificate, now time.Time) []string {
	capAt, by := notAfterCap(cert, chain)
	rb := renewByOf(capAt)
	whose := "the subordinate CA's certificate"
	if by != cert {
		whose = fmt.Sprintf("%q above the subordinate CA", by.Subject.String())
	}
	day := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	switch {
	case !now.Before(capAt):
		return []string{fmt.Sprintf("%s expired at %s: the CA can issue nothing; import a renewed certificate "+
			"(ipsecca ca import)", whose, day(capAt))}
	case !now.Before(rb):
		return []string{fmt.Sprintf("%s ends at %s, within a node certificate's %d years: node certificates are "+
			"capped to end then (and are due for rotation at 90%% of that shorter life); have the subordinate "+
			"renewed for the same key and subject and import it (ipsecca ca import) to give them their full "+
			"lifetime", whose, day(capAt), NodeYears)}
	case !now.Before(rb.AddDate(0, -renewMarginMonths, 0)):
		return []string{fmt.Sprintf("%s ends at %s: node certificates issued from %s on will be capped to end "+
			"then; have it renewed for the same key and subject and import it (ipsecca ca import) before %s",
			whose, day(capAt), day(rb), day(rb))}
	}
	return nil
}

// CheckSubordinate runs SubordinateChecks on certPEM (the subordinate CA's
// certificate, optionally followed by its chain) and chainPEM (the chain:
// the issuer and every certificate above it, up to the organisation's
// root, in any order) against the stored record m, at now. kek opens a
// sealed key. It changes nothing.
func CheckSubordinate(m *store.CA, kek KEK, certPEM, chainPEM []byte, now time.Time) (*SubordinateImport, error) {
	s := &SubordinateImport{Now: now}
	switch {
	case len(m.CertPEM) == 0 && len(m.CSRPEM) > 0:
		csr, err := ParseCSR(m.CSRPEM)
		if err != nil {
			return nil, fmt.Errorf("ca: the stored subordinate CA request: %w", err)
		}
		s.Requested = csr
	case len(m.Chain) == 0:
		return nil, ErrNotSubordinate
	default:
		cur, err := helpers.ParseCertificatePEM(m.CertPEM)
		if err != nil {
			return nil, fmt.Errorf("ca: stored CA certificate: %w", err)
		}
		s.Current = cur
	}
	key, err := storedKey(m, kek)
	if err != nil {
		return nil, err
	}
	s.Key = key.Public()
	certs, err := pemutil.ParseCertificates(certPEM, pemutil.Options{})
	if err != nil {
		return nil, deny(ErrInvalidRequest, Reason(ReasonImportPrefix+"parse"), "the certificate: %v", err)
	}
	chain, err := pemutil.ParseCertificates(chainPEM, pemutil.Options{AllowEmpty: true})
	if err != nil {
		return nil, deny(ErrInvalidRequest, Reason(ReasonImportPrefix+"parse"), "the chain: %v", err)
	}
	s.Cert = certs[0]
	for _, c := range append(certs[1:], chain...) {
		if !c.Equal(s.Cert) && !slices.ContainsFunc(s.Given, c.Equal) {
			s.Given = append(s.Given, c)
		}
	}
	if err := Evaluate(SubordinateChecks, s); err != nil {
		return nil, err
	}
	return s, nil
}

// NodeNotAfterCap is the latest a certificate the CA issues may end.
func (s *SubordinateImport) NodeNotAfterCap() time.Time {
	t, _ := notAfterCap(s.Cert, s.Chain)
	return t
}

// RenewBy is when new node certificates start being capped.
func (s *SubordinateImport) RenewBy() time.Time { return renewByOf(s.NodeNotAfterCap()) }

// ImportSubordinate checks (CheckSubordinate) and stores a subordinate
// CA's certificate and chain in one read-modify-write of the record: the
// first import, which ends the wait for it, or a renewal (same key and
// subject), which replaces certificate and chain; or, in a key rollover's
// request phase, the new key's certificate, which publishes it (phase
// trust). The stored request is
// dropped; the event (store.EventCAImported) records the certificate and
// the cap it puts on node certificates.
func ImportSubordinate(
	ctx context.Context,
	st RootRenewer,
	kek KEK,
	certPEM, chainPEM []byte,
	now time.Time,
	actor string,
) (*SubordinateImport, error) {
	var res *SubordinateImport
	err := st.UpdateCA(ctx, func(m *store.CA) (store.Event, error) {
		if ro := m.Rollover; ro != nil {
			// A key rollover's new subordinate, or nothing: the current
			// one is not renewed in the middle of a rollover.
			if ro.Phase != store.RolloverRequest {
				return store.Event{}, fmt.Errorf("%w (phase %s): import a renewal after it", ErrRolloverInProgress,
					ro.Phase)
			}
			s, err := CheckSubordinate(ro.Other, kek, certPEM, chainPEM, now)
			if err != nil {
				return store.Event{}, err
			}
			importRolloverCA(m, s, now)
			res = s
			ev := s.event(actor)
			ev.Detail["rollover_phase"] = m.Rollover.Phase
			return ev, nil
		}
		s, err := CheckSubordinate(m, kek, certPEM, chainPEM, now)
		if err != nil {
			return store.Event{}, err
		}
		m.CertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Cert.Raw})
		m.Chain = nil
		for _, c := range s.Chain {
			m.Chain = append(m.Chain, c.Raw)
		}
		m.CSRPEM = nil
		res = s
		return s.event(actor), nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

func (s *SubordinateImport) event(actor string) store.Event {
	fp := func(c *x509.Certificate) string {
		sum := sha256.Sum256(c.Raw)
		return hex.EncodeToString(sum[:])
	}
	ev := store.Event{
		Time:   s.Now.UTC(),
		Type:   store.EventCAImported,
		Actor:  actor,
		Serial: SerialString(s.Cert.SerialNumber),
		Detail: map[string]string{
			"subject":            s.Cert.Subject.String(),
			"issuer":             s.Cert.Issuer.String(),
			"not_after":          s.Cert.NotAfter.UTC().Format(time.RFC3339),
			"sha256":             fp(s.Cert),
			"root_sha256":        fp(s.Chain[len(s.Chain)-1]),
			"chain":              fmt.Sprint(len(s.Chain)),
			"node_not_after_cap": s.NodeNotAfterCap().UTC().Format(time.RFC3339),
			"renew_by":           s.RenewBy().UTC().Format(time.RFC3339),
			"renewal":            fmt.Sprint(s.Current != nil),
		},
	}
	if s.Current != nil {
		ev.OldSerial = SerialString(s.Current.SerialNumber)
	}
	if len(s.Warnings) > 0 {
		ev.Detail["warnings"] = strings.Join(s.Warnings, "; ")
	}
	return ev
}

// ImportSubordinate imports a subordinate CA's certificate into the
// running CA (a renewal, or a first import into a store the Authority was
// built over) and loads it: the CA signs under it at once. The caller
// tells the nodes of the new bundle.
func (a *Authority) ImportSubordinate(
	ctx context.Context,
	certPEM, chainPEM []byte,
	actor string,
) (*Root, *SubordinateImport, error) {
	res, err := ImportSubordinate(ctx, a.st, a.kek, certPEM, chainPEM, a.clock.Now(), actor)
	if err != nil {
		return nil, nil, err
	}
	r, _, err := a.ReloadRoot(ctx)
	if err != nil {
		return nil, nil, err
	}
	a.log.Info("imported the subordinate CA's certificate", "serial", SerialString(res.Cert.SerialNumber),
		"issuer", res.Cert.Issuer.String(), "not_after", res.Cert.NotAfter, "node_not_after_cap",
		res.NodeNotAfterCap(), "renewal", res.Current != nil, "warnings", len(res.Warnings))
	return r, res, nil
}

// Subordinate reports whether the CA's certificate was issued by another
// CA (its chain is stored).
func (r *Root) Subordinate() bool { return len(r.Chain) > 0 }

// NodeNotAfterCap is the latest a certificate the CA issues may end: the
// earliest NotAfter of its own certificate and of the chain above it.
func (r *Root) NodeNotAfterCap() time.Time {
	t, _ := notAfterCap(r.Cert, r.Chain)
	return t
}

// SubordinateInfo reports, for a subordinate CA, the cap on the
// certificates it issues (capAt), when new node certificates start being
// capped (renewBy: renew the subordinate before), and warnings an operator
// should act on; all zero for a self-signed root, which renews itself.
// It is what GetCAResponse's subordinate fields show.
func (r *Root) SubordinateInfo(now time.Time) (capAt, renewBy time.Time, warnings []string) {
	if !r.Subordinate() {
		return time.Time{}, time.Time{}, nil
	}
	capAt = r.NodeNotAfterCap()
	warnings = capWarnings(r.Cert, r.Chain, now)
	if w := crlSignWarning(r.Cert); w != "" {
		warnings = append(warnings, w)
	}
	return capAt, renewByOf(capAt), warnings
}
