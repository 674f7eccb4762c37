package ca

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ipsecca/ipsecca/store"
)

// Denial reasons of revocation by serial and of token revocation.
const (
	ReasonSerialInvalid     Reason = "serial-invalid"
	ReasonRevocationReason  Reason = "revocation-reason-unsupported"
	ReasonTokenRevoked      Reason = "token-revoked"
	ReasonTokenUsedNoRevoke Reason = "token-used-cannot-revoke"
	ReasonTokenIDInvalid    Reason = "token-id-invalid"
)

// maxSerialHexDigits: RFC 5280 serials are at most 20 octets.
const maxSerialHexDigits = 40

// RevocationReasons are the RFC 5280 CRLReason names this CA accepts, with
// their codes. certificateHold (6) and removeFromCRL (8) are not among
// them: a revocation here is final, and this CA publishes no delta CRLs.
var RevocationReasons = []struct {
	Name string
	Code int
}{
	{"unspecified", 0},
	{"keyCompromise", 1},
	{"cACompromise", 2},
	{"affiliationChanged", 3},
	{"superseded", 4},
	{"cessationOfOperation", 5},
	{"privilegeWithdrawn", 9},
	{"aACompromise", 10},
}

// ReasonName is the RFC 5280 name of a CRLReason code.
func ReasonName(code int) string {
	for _, r := range RevocationReasons {
		if r.Code == code {
			return r.Name
		}
	}
	return fmt.Sprintf("reason(%d)", code)
}

// ParseRevocationReason returns the CRLReason code of an RFC 5280 reason
// name (case-insensitive; "" is unspecified); an InvalidArgument denial
// for certificateHold and for names it does not know.
func ParseRevocationReason(name string) (int, error) {
	if name == "" {
		return 0, nil
	}
	for _, r := range RevocationReasons {
		if strings.EqualFold(r.Name, name) {
			return r.Code, nil
		}
	}
	names := make([]string, len(RevocationReasons))
	for i, r := range RevocationReasons {
		names[i] = r.Name
	}
	if strings.EqualFold(name, "certificateHold") || strings.EqualFold(name, "removeFromCRL") {
		return 0, deny(ErrInvalidRequest, ReasonRevocationReason,
			"revocation reason %s is not supported: a revocation is final here (use one of %s)",
			name, strings.Join(names, ", "))
	}
	return 0, deny(ErrInvalidRequest, ReasonRevocationReason,
		"unknown revocation reason %q (RFC 5280 names: %s)", name, strings.Join(names, ", "))
}

// ParseSerial returns a certificate serial in the form the store keys it
// by (lower-case hex, no leading zeros: SerialString), from hex with or
// without colons, a 0x prefix and leading zeros.
func ParseSerial(s string) (string, error) {
	h := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	h = strings.TrimPrefix(h, "0x")
	if h == "" || len(h) > maxSerialHexDigits+2 || !isLowerHex(h) {
		return "", deny(ErrInvalidRequest, ReasonSerialInvalid,
			"serial %q is not a certificate serial number (hex, at most 20 octets)", s)
	}
	if h = strings.TrimLeft(h, "0"); h == "" {
		h = "0"
	}
	if len(h) > maxSerialHexDigits {
		return "", deny(ErrInvalidRequest, ReasonSerialInvalid,
			"serial %q is longer than 20 octets", s)
	}
	return h, nil
}

// NotFoundError names a record that does not exist; it wraps
// store.ErrNotFound.
type NotFoundError struct {
	What string // e.g. "certificate with serial 1a2b"
}

func (e *NotFoundError) Error() string { return "ca: no " + e.What }
func (e *NotFoundError) Unwrap() error { return store.ErrNotFound }

// RevokeCertificate revokes the certificate serial (hex, in any of
// ParseSerial's forms) for an RFC 5280 reason (by name), as caller. The
// node must not keep a live credential: revoking a node's current
// certificate revokes the node, by the rule RevokeNode follows (every
// unexpired certificate revoked, unused tokens void, nothing issued until
// an admin re-admits it), with the reason on each certificate's CRL
// entry. Any other certificate is revoked alone. An admin cannot revoke
// the certificate it calls with (rotate it first). Revoking a revoked
// certificate changes nothing and reports Already.
func (a *Authority) RevokeCertificate(
	ctx context.Context,
	caller Caller,
	serial, reason string,
) (store.CertRevocation, error) {
	serial, err := ParseSerial(serial)
	if err != nil {
		return store.CertRevocation{}, err
	}
	code, err := ParseRevocationReason(reason)
	if err != nil {
		return store.CertRevocation{}, err
	}
	if serial == caller.Serial {
		return store.CertRevocation{}, deny(ErrFailedPrecondition, ReasonRevokeSelf,
			"certificate %s is the one this call is made with; rotate it first (ipsecca admin rotate)", serial)
	}
	now := a.clock.Now().UTC()
	ev := store.Event{Time: now, Actor: caller.String(), Reason: ReasonName(code),
		Detail: map[string]string{"reason_code": fmt.Sprint(code)}}
	res, err := a.st.RevokeSerial(ctx, serial, code, now, ev)
	if errors.Is(err, store.ErrNotFound) {
		return res, &NotFoundError{What: "certificate with serial " + serial}
	}
	if err != nil {
		return res, err
	}
	if res.Already {
		return res, nil
	}
	a.crl.invalidate()
	a.log.Warn("certificate revoked", "serial", serial, "kind", res.Cert.Kind, "node", res.Cert.Node,
		"reason", ReasonName(code), "node_revoked", res.NodeRevoked, "certificates", res.Certificates,
		"actor", caller.String())
	return res, nil
}

// RevokeToken revokes an unused bootstrap token by id (or the whole token:
// only its id is read), so it admits no node. Revoking a revoked token
// changes nothing and reports already.
func (a *Authority) RevokeToken(ctx context.Context, id, actor string) (*store.Token, bool, error) {
	id, _, _ = strings.Cut(strings.TrimSpace(id), ".")
	if len(id) != tokenIDLen || !isLowerHex(id) {
		return nil, false, deny(ErrInvalidRequest, ReasonTokenIDInvalid,
			"token id %q is malformed (want the 16 hex digits before the dot)", id)
	}
	now := a.clock.Now().UTC()
	ev := store.Event{Time: now, Type: store.EventTokenRevoked, Actor: actor,
		Detail: map[string]string{"token_id": id}}
	tok, already, err := a.st.RevokeToken(ctx, id, actor, now, ev)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, false, &NotFoundError{What: "token " + id}
	case errors.Is(err, store.ErrTokenUsed):
		return nil, false, deny(ErrFailedPrecondition, ReasonTokenUsedNoRevoke,
			"token %s was already used (for certificate %s); revoke that certificate instead (ipsecca certs revoke)",
			id, usedFor(ctx, a.st, id))
	case err != nil:
		return nil, false, err
	}
	if !already {
		a.log.Warn("token revoked", "token_id", id, "node", tok.Node, "actor", actor)
	}
	return tok, already, nil
}

// usedFor is the serial a used token was used for, for a message.
func usedFor(ctx context.Context, st Store, id string) string {
	if t, err := st.Token(ctx, id); err == nil {
		return t.UsedFor
	}
	return "?"
}
