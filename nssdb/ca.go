package nssdb

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// CA certificates are named one at a time through a PKCS #11 URI,
// pkcs11:object=<nickname>;type=cert;id=<CKA_ID>, which certutil takes
// wherever it takes a nickname (-L, -D, --rename). A nickname alone will
// not do: `certutil -D -n NICK` deletes the best certificate under NICK
// (the newest valid one), which after a CA key rollover is the new root,
// not the retired one. NSS files a certificate's CKA_ID as KeyID of its
// public key, so the URI names exactly one certificate as long as no other
// certificate with its subject has its key. One that does (a root renewed
// with the same key) cannot be told apart from it by certutil:
// DeleteCA and MoveCA refuse it with ErrSharedKey rather than touch the
// wrong one. When none of them is to stay (a key retired with all its
// roots), DeleteCAKey deletes them all: then it does not matter which one
// the URI names each time.
//
// Facts of NSS 3.87 these functions rely on (checked by the tests):
// `certutil -L -n NICK` prints every certificate with the subject of NICK's
// best certificate, whatever their nicknames; `certutil -A -n NICK` files a
// new certificate under NICK, also when another nickname holds its
// subject, but fails (SEC_ERROR_ADDING_CERT) when the certificates under
// NICK have another subject; `certutil -A` of a certificate the database
// holds keeps its nickname and sets its trust.

// TrustIntermediate is the trust of an intermediate CA: known, so NSS
// can build chains through it, but no trust anchor.
const TrustIntermediate = ",,"

// ErrSharedKey means another certificate with the same subject has the
// key of the certificate to delete or move: certutil cannot name one
// apart from the other.
var ErrSharedKey = errors.New("nssdb: another certificate with the same subject has the same key")

// certURI names the certificates under nickname that have cert's key.
func certURI(nickname string, cert *x509.Certificate) (string, error) {
	id, err := KeyID(cert.PublicKey)
	if err != nil {
		return "", err
	}
	raw, err := hex.DecodeString(id)
	if err != nil {
		return "", err
	}
	return "pkcs11:object=" + uriEscape([]byte(nickname)) + ";type=cert;id=" + uriEscape(raw), nil
}

// uriEscape percent-encodes b for a PKCS #11 URI path attribute (RFC 7512),
// leaving only unreserved characters as they are.
func uriEscape(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			s.WriteByte(c)
		default:
			fmt.Fprintf(&s, "%%%02x", c)
		}
	}
	return s.String()
}

// Under reports whether a certificate filed under nickname has cert's
// key: with ErrSharedKey ruled out, whether cert itself is under it.
func (d *DB) Under(ctx context.Context, nickname string, cert *x509.Certificate) (bool, error) {
	uri, err := certURI(nickname, cert)
	if err != nil {
		return false, err
	}
	found, err := d.Certs(ctx, uri)
	return len(found) > 0, err
}

// soleKey returns ErrSharedKey when a certificate with cert's subject
// other than cert has its key (the subject's certificates are those
// `certutil -L -n` prints for a nickname holding one of them).
func (d *DB) soleKey(ctx context.Context, nickname string, cert *x509.Certificate) error {
	id, err := KeyID(cert.PublicKey)
	if err != nil {
		return err
	}
	group, err := d.Certs(ctx, nickname)
	if err != nil {
		return err
	}
	for _, c := range group {
		if other, err := KeyID(c.PublicKey); err == nil && other == id && !c.Equal(cert) {
			return fmt.Errorf("%w: %s (serial %x) and serial %x", ErrSharedKey, c.Subject, cert.SerialNumber,
				c.SerialNumber)
		}
	}
	return nil
}

// ImportCA runs `certutil -A`: it adds cert under nickname with trust, or,
// when the database holds cert already, sets its trust (its nickname stays).
func (d *DB) ImportCA(ctx context.Context, nickname string, cert *x509.Certificate, trust string) error {
	dir, err := os.MkdirTemp("", "ipsecca-nss-")
	if err != nil {
		return fmt.Errorf("nssdb: %w", err)
	}
	defer os.RemoveAll(dir)
	f := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		return fmt.Errorf("nssdb: %w", err)
	}
	_, err = d.run(ctx, "certutil", "-A", "-d", d.spec(), "-n", nickname, "-t", trust, "-a", "-i", f)
	return err
}

// MoveCA files cert, found under nickname from, under nickname to (its
// trust stays). It reports false when from does not hold cert.
func (d *DB) MoveCA(ctx context.Context, from, to string, cert *x509.Certificate) (bool, error) {
	if ok, err := d.Under(ctx, from, cert); err != nil || !ok {
		return false, err
	}
	if err := d.soleKey(ctx, from, cert); err != nil {
		return false, err
	}
	uri, err := certURI(from, cert)
	if err != nil {
		return false, err
	}
	if err := d.Rename(ctx, uri, to); err != nil {
		return false, err
	}
	if ok, err := d.Under(ctx, to, cert); err != nil {
		return true, err
	} else if !ok {
		return true, fmt.Errorf("nssdb: serial %x is not under %q after the rename", cert.SerialNumber, to)
	}
	return true, nil
}

// DeleteCA deletes cert, and only it, from nickname: never another
// certificate under that nickname (which the nickname alone would name),
// nor one under another nickname. It reports false when nickname does not
// hold cert.
func (d *DB) DeleteCA(ctx context.Context, nickname string, cert *x509.Certificate) (bool, error) {
	if ok, err := d.Under(ctx, nickname, cert); err != nil || !ok {
		return false, err
	}
	if err := d.soleKey(ctx, nickname, cert); err != nil {
		return false, err
	}
	uri, err := certURI(nickname, cert)
	if err != nil {
		return false, err
	}
	if _, err := d.run(ctx, "certutil", "-D", "-d", d.spec(), "-n", uri); err != nil {
		return false, err
	}
	if ok, err := d.Under(ctx, nickname, cert); err != nil {
		return true, err
	} else if ok {
		return true, fmt.Errorf("nssdb: serial %x is still under %q after certutil -D", cert.SerialNumber, nickname)
	}
	return true, nil
}

// DeleteCAKey deletes from nickname every certificate that has cert's key
// (cert itself, and the roots renewed with that key before or after it),
// and nothing else: no certificate with another key, none under another
// nickname, no private key (certutil -D, never -F; it refuses a key the
// database holds, a pair's rather than a CA's). It is for a key none
// of whose certificates is to stay: certutil cannot name one of them
// apart from the others, so it deletes by URI, whichever the URI names,
// once per certificate listed with that key at most, then checks none is
// left. It reports how many it deleted (0 when nickname holds none).
func (d *DB) DeleteCAKey(ctx context.Context, nickname string, cert *x509.Certificate) (int, error) {
	if ok, err := d.Under(ctx, nickname, cert); err != nil || !ok {
		return 0, err
	}
	// A certificate whose key the database holds is a pair's, no CA's: -D
	// would leave the key without it.
	if mine, err := d.HasKey(ctx, cert); err != nil {
		return 0, err
	} else if mine {
		return 0, fmt.Errorf("nssdb: %q holds a certificate with a private key in the database (serial %x): "+
			"not a CA certificate to delete", nickname, cert.SerialNumber)
	}
	id, err := KeyID(cert.PublicKey)
	if err != nil {
		return 0, err
	}
	uri, err := certURI(nickname, cert)
	if err != nil {
		return 0, err
	}
	// The subject's certificates, whatever their nicknames: an upper bound
	// of those under nickname with the key.
	group, err := d.Certs(ctx, nickname)
	if err != nil {
		return 0, err
	}
	most := 0
	for _, c := range group {
		if other, err := KeyID(c.PublicKey); err == nil && other == id {
			most++
		}
	}
	deleted := 0
	for deleted < most {
		if _, err := d.run(ctx, "certutil", "-D", "-d", d.spec(), "-n", uri); err != nil {
			return deleted, err
		}
		deleted++
		if ok, err := d.Under(ctx, nickname, cert); err != nil || !ok {
			return deleted, err
		}
	}
	return deleted, fmt.Errorf("nssdb: a certificate with the key of %s (serial %x) is still under %q after %d "+
		"certutil -D", cert.Subject, cert.SerialNumber, nickname, deleted)
}
