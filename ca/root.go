package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cloudflare/cfssl/csr"
	"github.com/cloudflare/cfssl/helpers"
	"github.com/cloudflare/cfssl/initca"
	cfsslog "github.com/cloudflare/cfssl/log"
	"github.com/cloudflare/cfssl/signer"
	"github.com/cloudflare/cfssl/signer/local"

	"github.com/ipsecca/ipsecca/internal/pemutil"
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
	// SealedOnLoad reports that Bootstrap found the key in the clear and
	// sealed it: a store that keeps freed space (bbolt) must then be
	// rewritten, or the clear copy stays readable in its file.
	SealedOnLoad bool

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
	certPEM, err := s.Sign(
		signer.SignRequest{Request: string(csrPEM), NotBefore: notBefore, NotAfter: notBefore.AddDate(RootYears, 0, 0)},
	)
	if err != nil {
		return nil, fmt.Errorf("ca: sign root: %w", err)
	}
	return &store.CA{CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// sealCA returns a copy of m with its key sealed under kek.
func sealCA(m *store.CA, kek KEK) (*store.CA, error) {
	sealed, err := kek.Seal(rand.Reader, m.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: seal CA key: %w", err)
	}
	out := *m
	out.KeyPEM, out.KeyEncryption = sealed, KeyAES256GCM
	return &out, nil
}

func loadRoot(m *store.CA, kek KEK) (*Root, error) {
	cert, err := helpers.ParseCertificatePEM(m.CertPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: stored root certificate: %w", err)
	}
	keyPEM := m.KeyPEM
	switch m.KeyEncryption {
	case KeyPlain:
	case KeyAES256GCM:
		if kek == nil {
			return nil, errors.New(
				"ca: the CA key is sealed under a key-encryption key; give it (--kek-file or IPSECCA_KEK)",
			)
		}
		if keyPEM, err = kek.Open(m.KeyPEM); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("ca: unknown CA key encryption %q", m.KeyEncryption)
	}
	priv, err := helpers.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, errors.New("ca: stored root key does not parse")
	}
	if !publicKeysEqual(cert.PublicKey, priv.Public()) {
		return nil, errors.New("ca: stored root key does not match the root certificate")
	}
	bundle := append([]byte(nil), m.CertPEM...)
	for _, der := range m.Previous {
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return &Root{Cert: cert, Signer: priv, CertPEM: m.CertPEM, BundlePEM: bundle, keyPEM: keyPEM}, nil
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

// RootRenewer stores a renewed root.
type RootRenewer interface {
	RenewCA(ctx context.Context, ca *store.CA, ev store.Event) error
}

// RenewRoot re-issues the root with the same key and the same subject (and
// extensions), valid for RootYears from now with a new serial, so every
// certificate issued under the old root still verifies against the new one
// and libreswan's rightca=%same keeps matching. The old root stays in the
// bundle, after the new one.
func (a *Authority) RenewRoot(ctx context.Context, actor string) (*Root, error) {
	old := a.Root()
	tmpl, err := x509.ParseCertificate(old.Cert.Raw)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial(a.rand, a.clock.Now())
	if err != nil {
		return nil, err
	}
	now := a.clock.Now().UTC().Truncate(time.Second)
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now
	tmpl.NotAfter = now.AddDate(RootYears, 0, 0)
	der, err := x509.CreateCertificate(a.rand, tmpl, tmpl, old.Signer.Public(), old.Signer)
	if err != nil {
		return nil, fmt.Errorf("ca: renew root: %w", err)
	}
	previous := [][]byte{old.Cert.Raw}
	for _, der := range a.previousRoots(old) {
		// Keep roots that still vouch for something; drop expired ones.
		if c, err := x509.ParseCertificate(der); err == nil && now.Before(c.NotAfter) {
			previous = append(previous, der)
		}
	}
	material := &store.CA{
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:   old.keyPEM,
		Previous: previous,
	}
	r, err := loadRoot(material, nil)
	if err != nil {
		return nil, err
	}
	if a.kek != nil {
		if material, err = sealCA(material, a.kek); err != nil {
			return nil, err
		}
	}
	ev := store.Event{
		Time:      now,
		Type:      store.EventCARenewed,
		Actor:     actor,
		Serial:    SerialString(serial),
		OldSerial: SerialString(old.Cert.SerialNumber),
		Detail: map[string]string{
			"not_after":          tmpl.NotAfter.Format(time.RFC3339),
			"previous_not_after": old.Cert.NotAfter.UTC().Format(time.RFC3339),
			"sha256":             r.Fingerprint(),
		},
	}
	if err := a.st.RenewCA(ctx, material, ev); err != nil {
		return nil, err
	}
	a.root.Store(r)
	a.log.Info(
		"renewed root CA (same key and subject)",
		"serial",
		SerialString(serial),
		"not_after",
		tmpl.NotAfter,
		"sha256",
		r.Fingerprint(),
	)
	return r, nil
}

// previousRoots returns the DER of the roots before r (in its bundle).
func (a *Authority) previousRoots(r *Root) [][]byte {
	roots, _ := pemutil.ParseCertificates(r.BundlePEM, pemutil.Options{})
	var out [][]byte
	for _, c := range roots[min(1, len(roots)):] {
		out = append(out, c.Raw)
	}
	return out
}

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
	if bytes.Equal(r.BundlePEM, a.Root().BundlePEM) {
		return a.Root(), false, nil
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
