package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"path/filepath"
	"slices"

	"github.com/ipsecca/ipsecca/internal/atomicfile"
	"github.com/ipsecca/ipsecca/store"
)

// Files in the data directory, besides the store's own.
const (
	CAFile        = "ca.pem"        // public CA bundle for clients (0644)
	AdminCertFile = "admin.pem"     // admin client certificate (0600)
	AdminKeyFile  = "admin-key.pem" // admin client key (0600)
	ServerCertDir = "tls"           // the service's own certificate and key
	serverCert    = "server.pem"
	serverKey     = "server-key.pem"
)

// ServiceCertYears is the lifetime of the service's TLS certificate and of
// the admin certificate; both are renewed after two thirds of it.
const ServiceCertYears = 1

// AdminName is the identity of the admin certificate (of a lone CA; in a
// cluster each replica's is AdminName@<replica id>).
const AdminName = "ipsecca-admin"

// adminName is this process's admin identity. Only the active certificate
// of an identity authenticates, and each replica keeps its own admin.pem:
// one shared identity would let each replica's start void the others'.
func (in *Instance) adminName() string {
	if in.opts.Cluster != nil && in.opts.Self.ID != "" {
		return AdminName + "@" + in.opts.Self.ID
	}
	return AdminName
}

// RenewServiceCerts reissues the service's TLS certificate and the admin
// certificate when missing, past two thirds of their life, not from the
// current root, or (for the service) missing a configured name.
func (in *Instance) RenewServiceCerts(ctx context.Context) error {
	dir := in.opts.DataDir
	names := append([]string{"localhost", "127.0.0.1", "::1"}, in.opts.ServerNames...)
	pair, err := in.ensurePair(ctx, store.KindServer, "ipsecca-server", names,
		filepath.Join(dir, ServerCertDir, serverCert), filepath.Join(dir, ServerCertDir, serverKey))
	if err != nil {
		return err
	}
	in.tlsCert.Store(pair)
	_, err = in.ensurePair(
		ctx,
		store.KindAdmin,
		in.adminName(),
		nil,
		filepath.Join(dir, AdminCertFile),
		filepath.Join(dir, AdminKeyFile),
	)
	return err
}

func (in *Instance) ensurePair(
	ctx context.Context,
	kind store.Kind,
	name string,
	names []string,
	certPath, keyPath string,
) (*tls.Certificate, error) {
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && pair.Leaf.Subject.CommonName == name &&
		in.current(pair.Leaf, names) {
		return &pair, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), in.opts.Rand)
	if err != nil {
		return nil, fmt.Errorf("server: generate %s key: %w", kind, err)
	}
	var dns []string
	var ips []net.IP
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	rec, err := in.Authority.IssueService(ctx, kind, name, key.Public(), dns, ips, ServiceCertYears, "server")
	if err != nil {
		return nil, fmt.Errorf("server: issue %s certificate: %w", kind, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rec.DER})
	if err := atomicfile.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(certPath, certPEM, 0o600); err != nil {
		return nil, err
	}
	in.log.Info("wrote certificate", "kind", kind, "path", certPath, "serial", rec.Serial, "not_after", rec.NotAfter)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &pair, nil
}

// current reports whether leaf is from the current root, covers names and
// is before two thirds of its life.
func (in *Instance) current(leaf *x509.Certificate, names []string) bool {
	if leaf == nil {
		return false
	}
	now := in.opts.Clock.Now()
	// Signed by the key that issues now: during a key rollover the old
	// key's certificates still verify, but leave with it.
	root := in.Authority.Root()
	if leaf.CheckSignatureFrom(root.Cert) != nil {
		return false
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: root.Pool(), CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return false
	}
	renewAt := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)
	if !now.Before(renewAt) {
		return false
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
				return false
			}
		} else if !slices.Contains(leaf.DNSNames, n) {
			return false
		}
	}
	return true
}
