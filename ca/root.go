package ca

import (
	"context"
	"crypto"
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
}

// RootStore is what Bootstrap needs from a store.
type RootStore interface {
	CA(ctx context.Context) (*store.CA, error)
	CreateCA(ctx context.Context, ca *store.CA, ev store.Event) error
}

// Root is the loaded signing material.
type Root struct {
	Cert    *x509.Certificate
	Signer  crypto.Signer
	CertPEM []byte
	// BundlePEM holds the current root first, then earlier roots.
	BundlePEM []byte

	poolOnce sync.Once
	pool     *x509.CertPool
}

// Fingerprint is the SHA-256 of the root certificate, lower-case hex.
func (r *Root) Fingerprint() string {
	sum := sha256.Sum256(r.Cert.Raw)
	return hex.EncodeToString(sum[:])
}

// Bootstrap loads the root from st, creating it when st has none. created
// reports whether this call made it. Creating is idempotent across races:
// if another writer stored a root first, that one is loaded.
func Bootstrap(ctx context.Context, st RootStore, cfg RootConfig, clock Clock) (root *Root, created bool, err error) {
	existing, err := st.CA(ctx)
	if err == nil {
		r, err := loadRoot(existing)
		return r, false, err
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, false, err
	}
	material, err := newRoot(cfg, clock.Now())
	if err != nil {
		return nil, false, err
	}
	r, err := loadRoot(material)
	if err != nil {
		return nil, false, err
	}
	ev := store.Event{Time: clock.Now(), Type: store.EventCACreated, Actor: "init", Serial: SerialString(r.Cert.SerialNumber),
		Detail: map[string]string{"subject": r.Cert.Subject.String(), "not_after": r.Cert.NotAfter.UTC().Format(time.RFC3339), "sha256": r.Fingerprint()}}
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
	csrPEM, keyPEM, err := (&csr.Generator{Validator: func(*csr.CertificateRequest) error { return nil }}).ProcessRequest(req)
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
	certPEM, err := s.Sign(signer.SignRequest{Request: string(csrPEM), NotBefore: notBefore, NotAfter: notBefore.AddDate(RootYears, 0, 0)})
	if err != nil {
		return nil, fmt.Errorf("ca: sign root: %w", err)
	}
	return &store.CA{CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

func loadRoot(m *store.CA) (*Root, error) {
	cert, err := helpers.ParseCertificatePEM(m.CertPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: stored root certificate: %w", err)
	}
	priv, err := helpers.ParsePrivateKeyPEM(m.KeyPEM)
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
	return &Root{Cert: cert, Signer: priv, CertPEM: m.CertPEM, BundlePEM: bundle}, nil
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
