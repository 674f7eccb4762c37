package sidecar

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ipsecca/ipsecca/internal/atomicfile"
)

// State directory layout. Every certificate the node ever held keeps its
// own key and certificate file under versions/, and `current` names the
// serial in use, so a sidecar killed at any point leaves either the old
// or the new complete pair current, never a mix:
//
//	SDIR/versions/pending-key.pem   new key, before its certificate arrives
//	SDIR/versions/<serial>.pem      certificate
//	SDIR/versions/<serial>-key.pem  its key (0600)
//	SDIR/current                    serial of the pair in use
//	SDIR/node.pem, node-key.pem, ca.pem   copies for tools (OVS other_config)
const (
	versionsDir    = "versions"
	pendingKeyFile = "pending-key.pem"
	currentFile    = "current"
	// CertFile, KeyFile and CABundleFile are the PEM copies in the state dir.
	CertFile     = "node.pem"
	KeyFile      = "node-key.pem"
	CABundleFile = "ca.pem"
)

// State is the sidecar's state directory.
type State struct{ Dir string }

// Pair is the node's current certificate and key.
type Pair struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
	KeyPEM  []byte
}

// TLS returns the pair as a client certificate.
func (p *Pair) TLS() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{p.Cert.Raw}, PrivateKey: p.Key, Leaf: p.Cert}
}

// Serial is the certificate's serial as ipsecca prints it.
func (p *Pair) Serial() string { return p.Cert.SerialNumber.Text(16) }

func (s State) path(parts ...string) string {
	return filepath.Join(append([]string{s.Dir}, parts...)...)
}

// Init creates the directory tree (0700).
func (s State) Init() error {
	if err := os.MkdirAll(s.path(versionsDir), 0o700); err != nil {
		return fmt.Errorf("sidecar: state directory: %w", err)
	}
	return os.Chmod(s.Dir, 0o700)
}

// Current loads the current pair; (nil, nil) when there is none.
func (s State) Current() (*Pair, error) {
	raw, err := os.ReadFile(s.path(currentFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	serial := strings.TrimSpace(string(raw))
	return s.load(serial)
}

func (s State) load(serial string) (*Pair, error) {
	certPEM, err := os.ReadFile(s.path(versionsDir, serial+".pem"))
	if err != nil {
		return nil, fmt.Errorf("sidecar: current certificate %s: %w", serial, err)
	}
	keyPEM, err := os.ReadFile(s.path(versionsDir, serial+"-key.pem"))
	if err != nil {
		return nil, fmt.Errorf("sidecar: current key %s: %w", serial, err)
	}
	return parsePair(certPEM, keyPEM)
}

func parsePair(certPEM, keyPEM []byte) (*Pair, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("sidecar: certificate and key do not form a pair: %w", err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("sidecar: key is not a signer")
	}
	return &Pair{Cert: pair.Leaf, CertPEM: certPEM, Key: signer, KeyPEM: keyPEM}, nil
}

// PendingKey returns the key generated for a request in flight, creating
// it with gen when absent; reusing it after a crash keeps one key per
// attempt.
func (s State) PendingKey(gen func() (crypto.Signer, error)) (crypto.Signer, []byte, error) {
	p := s.path(versionsDir, pendingKeyFile)
	if raw, err := os.ReadFile(p); err == nil {
		if k, err := parseKey(raw); err == nil {
			return k, raw, nil
		}
	}
	key, err := gen()
	if err != nil {
		return nil, nil, fmt.Errorf("sidecar: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	raw := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := atomicfile.WriteFile(p, raw, 0o600); err != nil {
		return nil, nil, err
	}
	return key, raw, nil
}

func parseKey(raw []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(raw)
	if b == nil {
		return nil, errors.New("sidecar: no PEM key")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("sidecar: key is not a signer")
	}
	return s, nil
}

// Commit stores a newly issued certificate for the pending key and makes
// it current.
func (s State) Commit(certPEM []byte) (*Pair, error) {
	keyPEM, err := os.ReadFile(s.path(versionsDir, pendingKeyFile))
	if err != nil {
		return nil, fmt.Errorf("sidecar: pending key: %w", err)
	}
	pair, err := parsePair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	serial := pair.Serial()
	if err := atomicfile.WriteFile(s.path(versionsDir, serial+"-key.pem"), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(s.path(versionsDir, serial+".pem"), certPEM, 0o644); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(s.path(currentFile), []byte(serial+"\n"), 0o600); err != nil {
		return nil, err
	}
	os.Remove(s.path(versionsDir, pendingKeyFile))
	return pair, nil
}

// Prune removes versions other than the current one and keep.
func (s State) Prune(keep ...string) {
	entries, err := os.ReadDir(s.path(versionsDir))
	if err != nil {
		return
	}
	cur, _ := os.ReadFile(s.path(currentFile))
	keepSet := map[string]bool{strings.TrimSpace(string(cur)): true, pendingKeyFile: true}
	for _, k := range keep {
		keepSet[k] = true
	}
	for _, e := range entries {
		serial := strings.TrimSuffix(strings.TrimSuffix(e.Name(), ".pem"), "-key")
		if !keepSet[serial] && !keepSet[e.Name()] {
			os.Remove(s.path(versionsDir, e.Name()))
		}
	}
}

// WriteCopies writes the PEM copies for tools: certificate, key (0600)
// and CA bundle.
func (s State) WriteCopies(p *Pair, bundle []byte) error {
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{{KeyFile, p.KeyPEM, 0o600}, {CertFile, p.CertPEM, 0o644}, {CABundleFile, bundle, 0o644}} {
		if err := atomicfile.WriteFile(s.path(f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	return nil
}

// ReadCABundle returns the CA bundle copy, or nil.
func (s State) ReadCABundle() []byte {
	b, _ := os.ReadFile(s.path(CABundleFile))
	return b
}
