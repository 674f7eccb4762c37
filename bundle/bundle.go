// Package bundle validates the certificate bundles admins supply for IPsec
// to hosts outside the cluster (left_server.p12 + ca.pem, OpenShift's
// external-endpoint recipe) and renders the NodeNetworkConfigurationPolicy
// and Butane machine configs that install them. Validation is a pure
// function of the bytes, the names and a time: it runs offline (the CLI)
// and in the server (the ValidateBundle RPC) alike.
package bundle

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/fips140"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"time"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/ipsecca/ipsecca/internal/ovsname"
	"github.com/ipsecca/ipsecca/internal/pemutil"
)

// Severity of a finding.
type Severity string

// Severities: an error fails validation, a warning does not.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Finding codes. They are stable: scripts may match on them.
const (
	CodeP12Undecodable    = "p12-undecodable"
	CodeP12WrongPassword  = "p12-wrong-password"
	CodeP12NoKey          = "p12-no-private-key"
	CodeP12ManyKeys       = "p12-multiple-private-keys"
	CodeP12KeyMismatch    = "p12-key-does-not-match-leaf"
	CodeP12PasswordSet    = "p12-password-not-empty"
	CodeP12KDFIterations  = "p12-kdf-iterations"
	CodeP12NotFIPS        = "p12-not-fips-approved"
	CodeCAUnreadable      = "ca-unreadable"
	CodeChainUntrusted    = "chain-untrusted"
	CodeCertExpired       = "cert-expired"
	CodeCertNotYetValid   = "cert-not-yet-valid"
	CodeCertExpiresSoon   = "cert-expires-soon"
	CodeWeakSignature     = "weak-signature"
	CodeWeakKey           = "weak-key"
	CodeOVSPrefixCN       = "ovs-prefix-cn"
	CodeOVSPrefixNickname = "ovs-prefix-friendly-name"
	CodeLeftInvalid       = "left-invalid-name"
	CodeRightInvalid      = "right-invalid-name"
	CodeLeftNotInSAN      = "left-not-in-leaf-san"
	CodeRightNotInSAN     = "right-not-in-san"
	CodeRightUnchecked    = "right-unchecked"
	CodeRightCertBad      = "right-cert-unreadable"
	CodeSubnetInvalid     = "right-subnet-invalid"
	CodeSubnetIPv6        = "right-subnet-ipv6"
	CodeSubnetNotHost     = "right-subnet-not-host"
	CodeTypeInvalid       = "type-invalid"
	CodeLeftcertMissing   = "leftcert-not-in-bundle"
	CodeKeyUsage          = "key-usage-no-digital-signature"
	CodeExtKeyUsage       = "ext-key-usage-not-ike"
	CodeNSSImport         = "nss-import-failed"
	CodeNSSVerify         = "nss-verify-failed"
)

// Finding is one result of validation.
type Finding struct {
	Code     string   `json:"code"`
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
	Subject  string   `json:"subject,omitempty"` // the certificate it is about
}

// Report is the outcome of Validate.
type Report struct {
	Findings []Finding `json:"findings"`
	Errors   int       `json:"errors"`
	Warnings int       `json:"warnings"`
	OK       bool      `json:"ok"`
	// Leaf describes the endpoint certificate when the p12 decoded.
	LeafSubject string `json:"leaf_subject,omitempty"`
	LeafSerial  string `json:"leaf_serial,omitempty"`
	// Nickname is the NSS nickname the leaf will get (its friendlyName).
	Nickname string `json:"nickname,omitempty"`
}

func (r *Report) add(code string, sev Severity, subject, format string, a ...any) {
	r.Findings = append(r.Findings,
		Finding{Code: code, Severity: sev, Message: fmt.Sprintf(format, a...), Subject: subject})
	if sev == SeverityError {
		r.Errors++
	} else {
		r.Warnings++
	}
}

// Has reports whether the report holds a finding with code.
func (r *Report) Has(code string) bool {
	for _, f := range r.Findings {
		if f.Code == code {
			return true
		}
	}
	return false
}

// Input is what an admin supplies.
type Input struct {
	P12          []byte
	Password     string
	CAPEM        []byte
	RightCertPEM []byte // the external host's certificate, optional
	Left         string // cluster node host name (NMState left)
	Right        string // external host name (NMState right)
	RightSubnet  string // e.g. 10.1.2.3/32; optional
	Type         string // transport (default) or tunnel
	LeftCert     string // NSS nickname the policy names; left_server by default
}

// Defaults of Input.
const (
	DefaultLeftCert = "left_server"
	DefaultType     = "transport"
)

// Options tune Validate.
type Options struct {
	// Now is the time validity is checked at (required: the package never
	// reads the clock).
	Now time.Time
	// ExpiryWarning is how close to NotAfter a warning starts: 30 days.
	ExpiryWarning time.Duration
}

// P12 is a decoded PKCS#12 bundle.
type P12 struct {
	Key      crypto.PrivateKey
	Keys     int
	Leaf     *x509.Certificate
	Certs    []*x509.Certificate // every certificate, leaf first
	Nickname string              // the leaf's friendlyName ("" when none)
	Names    []string            // every friendlyName in the bundle
}

// ErrWrongPassword means the PKCS#12 does not open with the password.
var ErrWrongPassword = errors.New("bundle: the PKCS#12 password is wrong")

// ErrNotFIPSApproved means that, in FIPS 140-3 mode with enforcement
// (GODEBUG=fips140=only), the PKCS#12 needs an algorithm or parameter the Go
// Cryptographic Module refuses: SHA-1, RC2 or 3DES (legacy bundles), or
// PBKDF2 salts under 16 bytes (OpenSSL 3.0's default).
var ErrNotFIPSApproved = errors.New("bundle: the PKCS#12 uses what FIPS 140-3 mode refuses")

// DecodeP12 opens a PKCS#12 bundle (PBES2/AES with SHA-256 MAC as OpenSSL
// 3 writes by default, and the legacy RC2-40 or 3DES with SHA-1 MAC). A
// bundle whose KDFs ask for more than MaxP12KDFIterations (or all together
// MaxP12KDFIterationsTotal) is refused with a *KDFIterationsError, and one
// P12KDFs cannot read with its error, before any KDF runs.
func DecodeP12(data []byte, password string) (*P12, error) {
	if err := checkP12KDFs(data); err != nil {
		return nil, err
	}
	return decodeP12(data, password)
}

// decodeSlots bounds the decodes running at once, counting those whose
// caller has gone (ValidateContext): the caps bound each to seconds, but a
// shrouded key inside an encrypted safe is only visible once decrypted.
var decodeSlots = make(chan struct{}, 1)

// decodeP12Context runs DecodeP12 and returns ctx's error when ctx ends first.
// A KDF cannot be interrupted: the decode then finishes in the background,
// holding its slot.
func decodeP12Context(ctx context.Context, data []byte, password string) (*P12, error) {
	if err := checkP12KDFs(data); err != nil {
		return nil, err
	}
	select {
	case decodeSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	type result struct {
		p   *P12
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() { <-decodeSlots }()
		p, err := decodeP12(data, password)
		done <- result{p, err}
	}()
	select {
	case r := <-done:
		return r.p, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// decodeP12 decodes data. In FIPS 140-3 mode with enforcement, go-pkcs12's
// use of what the module refuses surfaces as a panic (crypto/sha1,
// crypto/pbkdf2): it becomes ErrNotFIPSApproved, so a bundle cannot stop
// the process that checks it. Other panics are not caught.
func decodeP12(data []byte, password string) (p *P12, err error) {
	if fips140.Enforced() {
		defer func() {
			if v := recover(); v != nil {
				msg := fmt.Sprint(v)
				if !strings.Contains(msg, "FIPS 140-only mode") {
					panic(v)
				}
				p, err = nil, fmt.Errorf("%w: %s", ErrNotFIPSApproved, msg)
			}
		}()
	}
	return decodeP12Bags(data, password)
}

func decodeP12Bags(data []byte, password string) (*P12, error) {
	blocks, err := pkcs12.ToPEM(data, password)
	if errors.Is(err, pkcs12.ErrIncorrectPassword) {
		return nil, ErrWrongPassword
	}
	if err != nil {
		// Bags ToPEM cannot express: fall back to the chain decoder.
		key, leaf, cas, err2 := pkcs12.DecodeChain(data, password)
		if errors.Is(err2, pkcs12.ErrIncorrectPassword) {
			return nil, ErrWrongPassword
		}
		if err2 != nil {
			return nil, fmt.Errorf("bundle: the PKCS#12 does not decode: %v", err)
		}
		return &P12{Key: key, Keys: 1, Leaf: leaf, Certs: append([]*x509.Certificate{leaf}, cas...)}, nil
	}
	p := &P12{}
	keyIDs := map[string]bool{}
	var certs []*x509.Certificate
	names := map[*x509.Certificate]string{}
	ids := map[*x509.Certificate]string{}
	for _, b := range blocks {
		if fn := b.Headers["friendlyName"]; fn != "" {
			p.Names = append(p.Names, fn)
		}
		switch b.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("bundle: a certificate in the PKCS#12 does not parse: %v", err)
			}
			certs = append(certs, c)
			names[c] = b.Headers["friendlyName"]
			ids[c] = b.Headers["localKeyId"]
		case "PRIVATE KEY":
			p.Keys++
			keyIDs[b.Headers["localKeyId"]] = true
			if p.Key != nil {
				continue
			}
			if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
				p.Key = k
			} else if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
				p.Key = k
			} else {
				return nil, errors.New("bundle: the private key in the PKCS#12 does not parse")
			}
		}
	}
	// The leaf: the certificate whose public key is the key's, else the
	// one sharing its localKeyId, else the first non-CA certificate.
	for _, c := range certs {
		if p.Key != nil && publicKeyOf(p.Key) != nil &&
			publicKeyOf(p.Key).(interface{ Equal(crypto.PublicKey) bool }).Equal(c.PublicKey) {
			p.Leaf = c
			break
		}
	}
	if p.Leaf == nil {
		for _, c := range certs {
			if ids[c] != "" && keyIDs[ids[c]] {
				p.Leaf = c
				break
			}
		}
	}
	if p.Leaf == nil {
		for _, c := range certs {
			if !c.IsCA {
				p.Leaf = c
				break
			}
		}
	}
	if p.Leaf == nil && len(certs) > 0 {
		p.Leaf = certs[0]
	}
	if p.Leaf != nil {
		p.Nickname = names[p.Leaf]
		p.Certs = append(p.Certs, p.Leaf)
	}
	for _, c := range certs {
		if c != p.Leaf {
			p.Certs = append(p.Certs, c)
		}
	}
	return p, nil
}

func publicKeyOf(k crypto.PrivateKey) crypto.PublicKey {
	if s, ok := k.(crypto.Signer); ok {
		return s.Public()
	}
	return nil
}

// ParsePEMCerts parses every CERTIFICATE block of a PEM file, skipping
// blocks of other types; text after the last block that is not PEM, a
// certificate that does not parse and a file without one are errors.
func ParsePEMCerts(data []byte) ([]*x509.Certificate, error) {
	certs, err := pemutil.ParseCertificates(data, pemutil.Options{SkipOtherTypes: true})
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	return certs, nil
}

var oidIPSecIKE = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 17}

// Validate checks an external endpoint bundle and returns every finding.
func Validate(in Input, opts Options) *Report {
	r, _ := ValidateContext(context.Background(), in, opts)
	return r
}

// ValidateContext is Validate giving up when ctx ends: it then returns a
// nil report and ctx's error (context.DeadlineExceeded or Canceled). The
// PKCS#12 decode it gave up on runs to its end in the background; one
// decode runs at a time, so such leftovers hold at most one core.
func ValidateContext(ctx context.Context, in Input, opts Options) (*Report, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &Report{}
	if opts.ExpiryWarning == 0 {
		opts.ExpiryWarning = 30 * 24 * time.Hour
	}
	if in.LeftCert == "" {
		in.LeftCert = DefaultLeftCert
	}
	if in.Type == "" {
		in.Type = DefaultType
	}
	checkNames(r, in)
	p, err := decodeP12Context(ctx, in.P12, in.Password)
	var kdfErr *KDFIterationsError
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.As(err, &kdfErr):
		kdfFindings(r, kdfErr)
	case errors.Is(err, ErrNotFIPSApproved):
		r.add(CodeP12NotFIPS, SeverityError, "", "%v; re-export it with PBES2 (PBKDF2-HMAC-SHA-256 with a salt of "+
			"at least 16 bytes, AES-256-CBC) and an HMAC-SHA-256 MAC", trimErr(err))
	case errors.Is(err, ErrWrongPassword):
		r.add(CodeP12WrongPassword, SeverityError, "",
			"the PKCS#12 does not open with the given password; check --password/--password-file")
	case err != nil:
		r.add(CodeP12Undecodable, SeverityError, "", "the PKCS#12 is not readable: %v", trimErr(err))
	}
	if in.Password != "" {
		r.add(CodeP12PasswordSet, SeverityWarning, "",
			"the PKCS#12 has a password, but the node imports it with pk12util -W \"\" (OpenShift's recipe); "+
				"re-export it with an empty password before rendering")
	}
	roots, cerr := ParsePEMCerts(in.CAPEM)
	if cerr != nil {
		r.add(CodeCAUnreadable, SeverityError, "", "ca.pem: %v", trimErr(cerr))
	}
	if p != nil {
		checkP12(r, p, in, roots, opts)
	}
	checkRight(r, in, p)
	r.OK = r.Errors == 0
	return r, nil
}

func trimErr(err error) string {
	return strings.TrimPrefix(strings.TrimPrefix(err.Error(), "bundle: "), "pemutil: ")
}

var hostRe = regexp.MustCompile(`^(?i)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\.?$`)

// validHost accepts a host name (RFC 1123) or an IP address.
func validHost(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	return len(s) <= 253 && hostRe.MatchString(s)
}

func checkNames(r *Report, in Input) {
	if !validHost(in.Left) {
		r.add(CodeLeftInvalid, SeverityError, "", "left %q is not a valid host name or IP address", in.Left)
	}
	if !validHost(in.Right) {
		r.add(CodeRightInvalid, SeverityError, "", "right %q is not a valid host name or IP address", in.Right)
	}
	switch in.Type {
	case "transport", "tunnel":
	default:
		r.add(CodeTypeInvalid, SeverityError, "", "type %q: NMState's libreswan type is transport or tunnel", in.Type)
	}
	if in.RightSubnet != "" {
		pfx, err := netip.ParsePrefix(in.RightSubnet)
		switch {
		case err != nil:
			r.add(CodeSubnetInvalid, SeverityError, "",
				"rightsubnet %q is not an address/prefix (e.g. 10.1.2.3/32)", in.RightSubnet)
		case pfx.Addr().Is6() && !pfx.Addr().Is4In6():
			r.add(CodeSubnetIPv6, SeverityError, "",
				"rightsubnet %s is IPv6; NMState's libreswan support is IPv4 only for this", in.RightSubnet)
		case pfx.Bits() != 32:
			r.add(CodeSubnetNotHost, SeverityError, "",
				"rightsubnet %s must be a single host (/32) for host-to-host IPsec", in.RightSubnet)
		}
	}
	if ovsname.HasPrefix(in.LeftCert) {
		r.add(CodeOVSPrefixNickname, SeverityError, "",
			"leftcert %q starts with \"ovs_\": ovs-monitor-ipsec owns that NSS nickname namespace and deletes it "+
				"on restart", in.LeftCert)
	}
}

func checkP12(r *Report, p *P12, in Input, roots []*x509.Certificate, opts Options) {
	switch {
	case p.Keys == 0 || p.Key == nil:
		r.add(CodeP12NoKey, SeverityError, "", "the PKCS#12 holds no private key; export it with the endpoint's key")
	case p.Keys > 1:
		r.add(CodeP12ManyKeys, SeverityError, "",
			"the PKCS#12 holds %d private keys; it must hold exactly one (the endpoint's)", p.Keys)
	}
	if p.Leaf == nil {
		r.add(CodeP12Undecodable, SeverityError, "", "the PKCS#12 holds no certificate")
		return
	}
	leaf := p.Leaf
	r.LeafSubject, r.LeafSerial, r.Nickname = leaf.Subject.String(), leaf.SerialNumber.Text(16), p.Nickname
	if p.Key != nil {
		if pub := publicKeyOf(p.Key); pub == nil || !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
			r.add(CodeP12KeyMismatch, SeverityError, leaf.Subject.String(),
				"the private key in the PKCS#12 does not belong to its certificate")
		}
	}
	// The nickname NSS gives the leaf is its friendlyName.
	for _, n := range p.Names {
		if ovsname.HasPrefix(n) {
			r.add(CodeOVSPrefixNickname, SeverityError, "",
				"the PKCS#12 friendly name %q (the NSS nickname on import) starts with \"ovs_\": "+
					"ovs-monitor-ipsec owns that namespace and deletes it on restart", n)
		}
	}
	if p.Nickname != in.LeftCert {
		what := fmt.Sprintf("friendly name %q", p.Nickname)
		if p.Nickname == "" {
			what = "no friendly name (pk12util then names it \"<CN> - <O>\")"
		}
		r.add(CodeLeftcertMissing, SeverityError, leaf.Subject.String(),
			"leftcert %q is not in the bundle: the leaf has %s; export with openssl pkcs12 -export -name %s",
			in.LeftCert, what, in.LeftCert)
	}
	for _, c := range p.Certs {
		checkCert(r, c, opts, c == leaf)
	}
	// Chain: the leaf to a root of ca.pem, intermediates from the p12.
	if len(roots) > 0 {
		pool, inter := x509.NewCertPool(), x509.NewCertPool()
		for _, c := range roots {
			pool.AddCert(c)
		}
		for _, c := range p.Certs[1:] {
			inter.AddCert(c)
		}
		vo := x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: opts.Now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
		if _, err := leaf.Verify(vo); err != nil {
			var inv x509.CertificateInvalidError
			if !(errors.As(err, &inv) && (inv.Reason == x509.Expired)) {
				r.add(CodeChainUntrusted, SeverityError, leaf.Subject.String(),
					"the endpoint certificate does not chain to a CA in ca.pem: %v", err)
			}
		}
		for _, c := range roots {
			checkCert(r, c, opts, false)
		}
	}
	// Names: left must be a SAN of the leaf.
	if validHost(in.Left) && leaf.VerifyHostname(in.Left) != nil {
		r.add(CodeLeftNotInSAN, SeverityError, leaf.Subject.String(),
			"left %q matches no SAN of the endpoint certificate (SANs: %s)", in.Left, sans(leaf))
	}
	// IKE suitability.
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		r.add(CodeKeyUsage, SeverityError, leaf.Subject.String(),
			"keyUsage is present without digitalSignature; IKE signs with this key")
	}
	if len(leaf.ExtKeyUsage)+len(leaf.UnknownExtKeyUsage) > 0 && !ikeEKU(leaf) {
		r.add(CodeExtKeyUsage, SeverityError, leaf.Subject.String(),
			"extKeyUsage allows none of serverAuth, clientAuth, ipsecIKE or any; libreswan will refuse it")
	}
}

func ikeEKU(c *x509.Certificate) bool {
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth || u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	for _, u := range c.UnknownExtKeyUsage {
		if u.Equal(oidIPSecIKE) {
			return true
		}
	}
	return false
}

func sans(c *x509.Certificate) string {
	var s []string
	s = append(s, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		s = append(s, ip.String())
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// checkCert: validity window, signature and key strength, the ovs_ rule.
func checkCert(r *Report, c *x509.Certificate, opts Options, leaf bool) {
	subj := c.Subject.String()
	switch {
	case opts.Now.After(c.NotAfter):
		r.add(CodeCertExpired, SeverityError, subj, "expired on %s", c.NotAfter.UTC().Format(time.RFC3339))
	case opts.Now.Before(c.NotBefore):
		r.add(CodeCertNotYetValid, SeverityError, subj, "not valid before %s", c.NotBefore.UTC().Format(time.RFC3339))
	case c.NotAfter.Sub(opts.Now) < opts.ExpiryWarning:
		r.add(CodeCertExpiresSoon, SeverityWarning, subj,
			"expires on %s, in less than %d days", c.NotAfter.UTC().Format(time.RFC3339), int(opts.ExpiryWarning.Hours()/24))
	}
	switch c.SignatureAlgorithm {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1:
		if !(c.IsCA && bytes.Equal(c.RawIssuer, c.RawSubject)) { // a root's self-signature is not relied on
			r.add(CodeWeakSignature, SeverityError, subj,
				"signed with %s; SHA-1 and MD5 signatures are refused", c.SignatureAlgorithm)
		}
	}
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			r.add(CodeWeakKey, SeverityError, subj, "RSA key of %d bits; at least 2048 are required", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			r.add(CodeWeakKey, SeverityError, subj, "ECDSA curve %s; P-256 or P-384 are required", k.Curve.Params().Name)
		}
	default:
		r.add(CodeWeakKey, SeverityError, subj, "%s key; RSA (2048+) or ECDSA P-256/P-384 are required", c.PublicKeyAlgorithm)
	}
	if ovsname.HasPrefix(c.Subject.CommonName) {
		r.add(CodeOVSPrefixCN, SeverityError, subj,
			"CN %q starts with \"ovs_\": ovs-monitor-ipsec owns that NSS nickname namespace and deletes it on restart",
			c.Subject.CommonName)
	}
	_ = leaf
}

// checkRight: right must be a SAN of the right endpoint's certificate when
// given, else of a certificate in the bundle, else it cannot be checked.
func checkRight(r *Report, in Input, p *P12) {
	if !validHost(in.Right) {
		return
	}
	if len(in.RightCertPEM) > 0 {
		certs, err := ParsePEMCerts(in.RightCertPEM)
		if err != nil {
			r.add(CodeRightCertBad, SeverityError, "", "right certificate: %v", trimErr(err))
			return
		}
		if certs[0].VerifyHostname(in.Right) != nil {
			r.add(CodeRightNotInSAN, SeverityError, certs[0].Subject.String(),
				"right %q matches no SAN of the right endpoint's certificate (SANs: %s)", in.Right, sans(certs[0]))
		}
		return
	}
	if p != nil {
		for _, c := range p.Certs {
			if c.VerifyHostname(in.Right) == nil {
				return
			}
		}
	}
	r.add(CodeRightUnchecked, SeverityWarning, "",
		"right %q could not be checked: give the external host's certificate with --right-cert", in.Right)
}
