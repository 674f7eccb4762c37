package ca

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/ipsecca/ipsecca/store"
)

// ErrFailedPrecondition: the request is valid but the state it needs does
// not hold (a node not revoked, an admin revoking its own credential).
var ErrFailedPrecondition = errors.New("ca: failed precondition")

// Lifecycle denial reasons.
const (
	ReasonNodeNotRevoked Reason = "node-not-revoked"
	ReasonCallerNotAdmin Reason = "caller-not-admin"
	ReasonNotAdminCert   Reason = "not-admin-certificate"
	ReasonRevokeSelf     Reason = "revoke-own-credential"
	ReasonAlreadyRevoked Reason = "already-revoked"
)

// AdminCertYears is the lifetime of an admin certificate.
const AdminCertYears = 1

// crlCache holds the last CRL signed, keyed by what it lists and the CA
// that signed it.
type crlCache struct {
	mu       sync.Mutex
	key      [32]byte
	der      []byte
	signedAt time.Time
	// lastThisUpdate is the ThisUpdate of the last CRL signed: NSS refuses a
	// CRL that is not later than the one it holds (SEC_ERROR_OLD_CRL), and
	// CRL numbers must increase, so two CRLs signed within one second (a
	// revocation right after a fetch) must not share it.
	lastThisUpdate time.Time
}

// nextThisUpdate is the ThisUpdate (and, in seconds, the CRL number) of a
// CRL signed at now: now in whole seconds, or a second after the last one.
func (c *crlCache) nextThisUpdate(now time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := now.UTC().Truncate(time.Second)
	if !t.After(c.lastThisUpdate) {
		t = c.lastThisUpdate.Add(time.Second)
	}
	c.lastThisUpdate = t
	return t
}

// crlKey identifies a CRL's content: the certificate of its signer (which
// a rollover's phase changes) and the serials it lists at now.
func crlKey(signer *x509.Certificate, revoked []*store.Cert, now time.Time) [32]byte {
	serials := make([]string, 0, len(revoked))
	for _, c := range revoked {
		if now.Before(c.NotAfter) {
			serials = append(serials, c.Serial)
		}
	}
	slices.Sort(serials)
	h := sha256.New()
	h.Write(signer.Raw)
	for _, s := range serials {
		h.Write([]byte{0})
		h.Write([]byte(s))
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// get returns the cached CRL when it lists the same and is before half its
// validity (so nodes always fetch one with days left).
func (c *crlCache) get(key [32]byte, now time.Time) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.der == nil || c.key != key || now.Before(c.signedAt) || !now.Before(c.signedAt.Add(CRLValidity/2)) {
		return nil, false
	}
	return c.der, true
}

func (c *crlCache) put(key [32]byte, der []byte, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.key, c.der, c.signedAt = key, der, now
}

func (c *crlCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.der = nil
}

// anonymous answers a call that failed before any credential was
// recognised: no audit record (anyone can make such calls, so recording
// each would let anyone fill the disk), a sampled log line, and err
// unchanged for the caller's metrics.
func (a *Authority) anonymous(tokenID string, err error) error {
	var de *DenyError
	if !errors.As(err, &de) {
		return err
	}
	if ok, held := a.anonDenied.Allow(string(de.Reason), a.clock.Now()); ok {
		a.log.Warn(
			"denied (anonymous, not audited; one line a minute per reason)",
			"token_id",
			tokenID,
			"reason",
			de.Reason,
			"detail",
			de.Detail,
			"held_back",
			held,
		)
	}
	return err
}

// ReasonOf returns the denial reason err carries, or "".
func ReasonOf(err error) Reason {
	var de *DenyError
	if errors.As(err, &de) {
		return de.Reason
	}
	return ""
}
