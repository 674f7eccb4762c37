package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/fips140"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cloudflare/cfssl/csr"
	"github.com/cloudflare/cfssl/helpers"
	"github.com/cloudflare/cfssl/initca"
	cfsslog "github.com/cloudflare/cfssl/log"
	"github.com/cloudflare/cfssl/signer"
	"github.com/cloudflare/cfssl/signer/local"

	"github.com/ipsecca/ipsecca/store"
)

// cfssl logs every key and signature at info level to stderr; the CA
// logs its own decisions through slog instead.
func init() { cfsslog.Level = cfsslog.LevelError }

// Defaults for the root certificate.
const (
	DefaultOrganization = "ipsecca"
	DefaultRootName     = "ipsecca root CA"
	// RootYears is the root's lifetime: exactly 10 calendar years.
	RootYears = 10
)

// RootConfig says how to create a root when none exists.
type RootConfig struct {
	Organization string  // subject O; DefaultOrganization when empty
	CommonName   string  // subject CN; DefaultRootName when empty
	KeyType      KeyType // DefaultCAKeyType when empty
	// KEK, when set, seals the CA key in the store (AES-256-GCM); an
	// existing clear key is sealed on load.
	KEK KEK
}

// RootStore is what Bootstrap needs from a store.
type RootStore interface {
	CA(ctx context.Context) (*store.CA, error)
	CreateCA(ctx context.Context, ca *store.CA, ev store.Event) error
	RootRenewer
}

// Root is the loaded signing material.
type Root struct {
	Cert    *x509.Certificate
	Signer  crypto.Signer
	CertPEM []byte
	// BundlePEM holds the current root first, then earlier roots.
	BundlePEM []byte
	// Chain holds, for a subordinate CA, the certificates above Cert: its
	// issuer first, the organisation's root last.
	Chain []*x509.Certificate
	// Rollover is the CA key rollover in progress (its Other cleared), and
	// Other the certificate of the CA on its other side.
	Rollover *store.Rollover
	Other    *x509.Certificate
	// SealedOnLoad reports that Bootstrap found the key in the clear and
	// sealed it: a store that keeps freed space (bbolt) must then be
	// rewritten, or the clear copy stays readable in its file.
	SealedOnLoad bool

	// otherSigner is Other's key while it signs the CRL (outgoingSignsCRL);
	// nil otherwise.
	otherSigner crypto.Signer

	keyPEM   []byte
	poolOnce sync.Once
	pool     *x509.CertPool
}

// Fingerprint is the SHA-256 of the root certificate, lower-case hex.
func (r *Root) Fingerprint() string {
	sum := sha256.Sum256(r.Cert.Raw)
	return hex.EncodeToString(sum[:])
}

// Bootstrap loads the root from st, creating it when st has none. created
// reports whether this call made it; root.SealedOnLoad whether it sealed a
// stored clear key under cfg.KEK. Creating is idempotent across races:
// if another writer stored a root first, that one is loaded.
func Bootstrap(ctx context.Context, st RootStore, cfg RootConfig, clock Clock) (root *Root, created bool, err error) {
	existing, err := st.CA(ctx)
	if err == nil {
		r, err := loadRoot(existing, cfg.KEK)
		if err != nil {
			return nil, false, err
		}
		if cfg.KEK != nil && existing.KeyEncryption == KeyPlain {
			sealed, err := sealCA(existing, cfg.KEK)
			if err != nil {
				return nil, false, err
			}
			ev := store.Event{Time: clock.Now().UTC(), Type: store.EventCAKeySealed, Actor: "init"}
			if err := st.RenewCA(ctx, sealed, ev); err != nil {
				return nil, false, fmt.Errorf("ca: seal the stored CA key: %w", err)
			}
			r.SealedOnLoad = true
		}
		return r, false, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, false, err
	}
	material, err := newRoot(cfg, clock.Now())
	if err != nil {
		return nil, false, err
	}
	r, err := loadRoot(material, nil)
	if err != nil {
		return nil, false, err
	}
	if cfg.KEK != nil {
		if material, err = sealCA(material, cfg.KEK); err != nil {
			return nil, false, err
		}
	}
	ev := store.Event{
		Time:   clock.Now(),
		Type:   store.EventCACreated,
		Actor:  "init",
		Serial: SerialString(r.Cert.SerialNumber),
		Detail: map[string]string{
			"subject":   r.Cert.Subject.String(),
			"not_after": r.Cert.NotAfter.UTC().Format(time.RFC3339),
			"sha256":    r.Fingerprint(),
		},
	}
	if err := st.CreateCA(ctx, material, ev); err != nil {
		if errors.Is(err, store.ErrExists) {
			return Bootstrap(ctx, st, cfg, clock)
		}
		return nil, false, err
	}
	return r, true, nil
}

// newRoot creates a self-signed root through cfssl's initca policy (CA
// constraint, cert sign + CRL sign) with path length 0, valid from now
// (truncated to the second) for exactly RootYears.
func newRoot(cfg RootConfig, now time.Time) (*store.CA, error) {
	if cfg.Organization == "" {
		cfg.Organization = DefaultOrganization
	}
	if cfg.CommonName == "" {
		cfg.CommonName = DefaultRootName
	}
	if cfg.KeyType == "" {
		cfg.KeyType = DefaultCAKeyType
	}
	req := &csr.CertificateRequest{
		CN:         cfg.CommonName,
		Names:      []csr.Name{{O: cfg.Organization}},
		KeyRequest: cfg.KeyType.cfsslKeyRequest(),
	}
	csrPEM, keyPEM, err := (&csr.Generator{Validator: func(*csr.CertificateRequest) error { return nil }}).ProcessRequest(
		req,
	)
	if err != nil {
		return nil, fmt.Errorf("ca: generate root key: %w", err)
	}
	priv, err := helpers.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: parse root key: %w", err)
	}
	policy := initca.CAPolicy()
	policy.Default.CAConstraint.MaxPathLen = 0
	policy.Default.CAConstraint.MaxPathLenZero = true
	s, err := local.NewSigner(priv, nil, signer.DefaultSigAlgo(priv), policy)
	if err != nil {
		return nil, fmt.Errorf("ca: root signer: %w", err)
	}
	notBefore := now.UTC().Truncate(time.Second)
	// cfssl names the root's key by RFC 5280's SHA-1 of it (its subject key
	// ID), which FIPS 140-3 mode with enforcement refuses. An identifier is
	// not a security function and the signature is SHA-256 with the key
	// types of keytype.go, so the call runs outside enforcement.
	var certPEM []byte
	fips140.WithoutEnforcement(func() {
		certPEM, err = s.Sign(signer.SignRequest{Request: string(csrPEM), NotBefore: notBefore,
			NotAfter: notBefore.AddDate(RootYears, 0, 0)})
	})
	if err != nil {
		return nil, fmt.Errorf("ca: sign root: %w", err)
	}
	return &store.CA{CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// sealCA returns a copy of m with its key sealed under kek.
func sealCA(m *store.CA, kek KEK) (*store.CA, error) {
	sealed, err := kek.Seal(m.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: seal CA key: %w", err)
	}
	out := *m
	out.KeyPEM, out.KeyEncryption = sealed, KeyAES256GCM
	return &out, nil
}

// ErrAwaitingCertificate is returned while a subordinate CA waits for the
// certificate its organisation's root signs (init --subordinate, then
// ca import).
var ErrAwaitingCertificate = errors.New(
	"ca: the subordinate CA has no certificate yet: have ca.csr signed by your root, then run ipsecca ca import",
)

func loadRoot(m *store.CA, kek KEK) (*Root, error) {
	if len(m.CertPEM) == 0 && len(m.CSRPEM) > 0 {
		return nil, ErrAwaitingCertificate
	}
	cert, err := helpers.ParseCertificatePEM(m.CertPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: stored root certificate: %w", err)
	}
	keyPEM, err := openKey(m, kek)
	if err != nil {
		return nil, err
	}
	priv, err := helpers.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, errors.New("ca: stored root key does not parse")
	}
	if !publicKeysEqual(cert.PublicKey, priv.Public()) {
		return nil, errors.New("ca: stored root key does not match the root certificate")
	}
	var bundle []byte
	for _, der := range bundleOf(m) {
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	r := &Root{Cert: cert, Signer: priv, CertPEM: m.CertPEM, BundlePEM: bundle, keyPEM: keyPEM}
	for _, der := range m.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("ca: stored CA chain: %w", err)
		}
		r.Chain = append(r.Chain, c)
	}
	if ro := m.Rollover; ro != nil {
		cp := *ro
		cp.Other = nil
		r.Rollover = &cp
		if ro.Other != nil && len(ro.Other.CertPEM) > 0 {
			if r.Other, err = helpers.ParseCertificatePEM(ro.Other.CertPEM); err != nil {
				return nil, fmt.Errorf("ca: stored rollover CA certificate: %w", err)
			}
			if outgoingSignsCRL(ro) && len(ro.Other.KeyPEM) > 0 {
				if r.otherSigner, err = storedKey(ro.Other, kek); err != nil {
					return nil, fmt.Errorf("ca: stored outgoing CA key: %w", err)
				}
				if !publicKeysEqual(r.Other.PublicKey, r.otherSigner.Public()) {
					return nil, errors.New("ca: stored outgoing CA key does not match its certificate")
				}
			}
		}
	}
	return r, nil
}

// outgoingSignsCRL reports whether the CRL is signed by the outgoing CA
// (Root.Other) rather than the issuing one: in a rollover's issue phase,
// unless aborted (then the first key issues again). NSS's CRL cache keeps,
// per CA subject, the first issuer certificate it verified a CRL with for
// the life of the process (lib/certdb/crl.c, bug 217387), and both CAs of
// a rollover share the subject: a pluto running since before the rollover
// verifies only CRLs signed by the key trusted then. In the retire phase
// nodes restart pluto as the old CA leaves their NSS database, and the
// issuing key signs again.
func outgoingSignsCRL(ro *store.Rollover) bool {
	return ro != nil && ro.Phase == store.RolloverIssue && !ro.Aborted
}

// crlSigner returns the certificate and key that sign r's CRL (see
// outgoingSignsCRL) and whether that choice fell back to the issuing key
// because the outgoing one is not in the record (CRL issuance, open to
// anyone, does not fail on it: a CRL that restarted plutos accept beats
// none).
func (r *Root) crlSigner() (cert *x509.Certificate, key crypto.Signer, fellBack bool) {
	if !outgoingSignsCRL(r.Rollover) {
		return r.Cert, r.Signer, false
	}
	if r.Other == nil || r.otherSigner == nil {
		return r.Cert, r.Signer, true
	}
	return r.Other, r.otherSigner, false
}

// openKey returns m's key PEM, opened under kek when it is sealed.
func openKey(m *store.CA, kek KEK) ([]byte, error) {
	switch m.KeyEncryption {
	case KeyPlain:
		return m.KeyPEM, nil
	case KeyAES256GCM:
		if kek == nil {
			return nil, errors.New(
				"ca: the CA key is sealed under a key-encryption key; give it (--kek-file or IPSECCA_KEK)",
			)
		}
		return kek.Open(m.KeyPEM)
	default:
		return nil, fmt.Errorf("ca: unknown CA key encryption %q", m.KeyEncryption)
	}
}

// bundleOf lists (DER) every CA certificate a node must hold for m: the
// issuing CA and its chain, the other CA of a rollover in its trust and
// issue phases (both keys trusted everywhere meanwhile), and the earlier
// roots of the same key; newest first, each once. A rollover's retired CA
// is not in it: nodes drop it.
func bundleOf(m *store.CA) [][]byte {
	var out [][]byte
	add := func(ders ...[]byte) {
		for _, der := range ders {
			if len(der) > 0 && !slices.ContainsFunc(out, func(d []byte) bool { return bytes.Equal(d, der) }) {
				out = append(out, der)
			}
		}
	}
	self := func(c *store.CA) []byte {
		if b, _ := pem.Decode(c.CertPEM); b != nil {
			return b.Bytes
		}
		return nil
	}
	var other *store.CA
	if ro := m.Rollover; ro != nil && ro.Other != nil && ro.Phase != store.RolloverRetire {
		other = ro.Other
	}
	if other != nil && m.Rollover.Phase == store.RolloverTrust {
		add(self(other))
		add(other.Chain...)
	}
	add(self(m))
	add(m.Chain...)
	if other != nil && m.Rollover.Phase != store.RolloverTrust {
		add(self(other))
		add(other.Chain...)
	}
	add(m.Previous...)
	return out
}

// rolloverPhase is r's rollover phase ("" when none): a phase change may
// keep the bundle's bytes (trust to issue swaps which of its CAs issues).
func rolloverPhase(r *Root) string {
	if r.Rollover == nil {
		return ""
	}
	return r.Rollover.Phase
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

// Pool returns a certificate pool holding the current and earlier roots.
func (r *Root) Pool() *x509.CertPool {
	r.poolOnce.Do(func() {
		r.pool = x509.NewCertPool()
		r.pool.AppendCertsFromPEM(r.BundlePEM)
	})
	return r.pool
}

// RootRenewer changes the stored CA material.
type RootRenewer interface {
	RenewCA(ctx context.Context, ca *store.CA, ev store.Event) error
	UpdateCA(ctx context.Context, fn func(ca *store.CA) (store.Event, error)) error
}

// ErrRolloverInProgress refuses what a CA key rollover in progress
// excludes (a second rollover, a same-key renewal).
var ErrRolloverInProgress = errors.New("ca: a CA key rollover is in progress")

// RenewRoot re-issues the root with the same key and the same subject (and
// extensions), valid for RootYears from now with a new serial, so every
// certificate issued under the old root still verifies against the new one
// and libreswan's rightca=%same keeps matching. The old root stays in the
// bundle, after the new one. A subordinate CA is renewed by its issuer
// (ca import), and not during a key rollover.
func (a *Authority) RenewRoot(ctx context.Context, actor string) (*Root, error) {
	var now time.Time
	var fingerprint string
	err := a.st.UpdateCA(ctx, func(m *store.CA) (store.Event, error) {
		switch {
		case m.Rollover != nil:
			return store.Event{}, fmt.Errorf("%w (phase %s): renew the root after it", ErrRolloverInProgress,
				m.Rollover.Phase)
		case len(m.Chain) > 0 || len(m.CSRPEM) > 0:
			return store.Event{}, ErrSubordinateRenewal
		}
		old, err := loadRoot(m, a.kek)
		if err != nil {
			return store.Event{}, err
		}
		tmpl, err := x509.ParseCertificate(old.Cert.Raw)
		if err != nil {
			return store.Event{}, err
		}
		if tmpl.SerialNumber, err = newSerial(a.rand, a.clock.Now()); err != nil {
			return store.Event{}, err
		}
		now = a.clock.Now().UTC().Truncate(time.Second)
		tmpl.NotBefore, tmpl.NotAfter = now, now.AddDate(RootYears, 0, 0)
		der, err := x509.CreateCertificate(a.rand, tmpl, tmpl, old.Signer.Public(), old.Signer)
		if err != nil {
			return store.Event{}, fmt.Errorf("ca: renew root: %w", err)
		}
		previous := [][]byte{old.Cert.Raw}
		for _, der := range m.Previous {
			// Keep roots that still vouch for something; drop expired ones.
			if c, err := x509.ParseCertificate(der); err == nil && now.Before(c.NotAfter) {
				previous = append(previous, der)
			}
		}
		m.CertPEM, m.Previous = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), previous
		sum := sha256.Sum256(der)
		fingerprint = hex.EncodeToString(sum[:])
		return store.Event{
			Time:      now,
			Type:      store.EventCARenewed,
			Actor:     actor,
			Serial:    SerialString(tmpl.SerialNumber),
			OldSerial: SerialString(old.Cert.SerialNumber),
			Detail: map[string]string{
				"not_after":          tmpl.NotAfter.Format(time.RFC3339),
				"previous_not_after": old.Cert.NotAfter.UTC().Format(time.RFC3339),
				"sha256":             fingerprint,
			},
		}, nil
	})
	if err != nil {
		return nil, err
	}
	r, _, err := a.ReloadRoot(ctx)
	if err != nil {
		return nil, err
	}
	a.log.Info("renewed root CA (same key and subject)", "serial", SerialString(r.Cert.SerialNumber),
		"not_after", r.Cert.NotAfter, "sha256", r.Fingerprint())
	return r, nil
}

// ErrSubordinateRenewal refuses a self-made renewal of a subordinate CA:
// its issuer renews it.
var ErrSubordinateRenewal = errors.New(
	"ca: a subordinate CA is renewed by its issuer: have a new certificate signed for ca.csr and run ipsecca ca import",
)

// ReloadRoot loads the root from the store again, for replicas that share
// a store: after another replica renewed it, this one signs under the new
// root too. It reports whether the root changed.
func (a *Authority) ReloadRoot(ctx context.Context) (*Root, bool, error) {
	material, err := a.st.CA(ctx)
	if err != nil {
		return nil, false, err
	}
	r, err := loadRoot(material, a.kek)
	if err != nil {
		return nil, false, err
	}
	if cur := a.Root(); bytes.Equal(r.BundlePEM, cur.BundlePEM) && r.Cert.Equal(cur.Cert) &&
		rolloverPhase(r) == rolloverPhase(cur) {
		return cur, false, nil
	}
	a.root.Store(r)
	a.log.Info(
		"loaded renewed root CA from the store",
		"serial",
		SerialString(r.Cert.SerialNumber),
		"not_after",
		r.Cert.NotAfter,
		"sha256",
		r.Fingerprint(),
	)
	return r, true, nil
}

// SealForMove prepares CA material for a store that must hold the key only
// sealed (store/etcd): a key in the clear is sealed under kek (sealed
// reports it); a sealed one must open under kek. Either way the material
// is checked to load.
func SealForMove(m *store.CA, kek KEK) (out *store.CA, sealed bool, err error) {
	if kek == nil {
		return nil, false, errors.New("ca: a key-encryption key is required")
	}
	out = m
	if m.KeyEncryption == KeyPlain {
		if out, err = sealCA(m, kek); err != nil {
			return nil, false, err
		}
		sealed = true
	}
	if _, err := loadRoot(out, kek); err != nil {
		return nil, false, fmt.Errorf("ca: the CA key does not open with this key-encryption key: %w", err)
	}
	return out, sealed, nil
}
