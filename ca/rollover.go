package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/cloudflare/cfssl/helpers"

	"github.com/ipsecca/ipsecca/store"
)

// A CA key rollover moves the CA to a new key without a moment in which a
// pair of nodes cannot authenticate each other. libreswan's rightca=%same
// compares the issuer's subject, so the new CA keeps the subject; NSS
// builds each chain by key identifier, so both CAs may be trusted at once.
// The phases (store.RolloverTrust, RolloverIssue, RolloverRetire) each end
// on what the nodes report (RolloverGate), never on time alone:
//
//  1. trust: the new CA is in every bundle (first); the old one issues.
//     Ends when every node's NSS inventory holds the new CA.
//  2. issue: the new CA issues; every node rotates onto it (spread); the
//     old CA stays trusted. Ends when every node's current certificate and
//     every live pair is on the new key, and no admin credential is left on
//     the old one. FinishRollover starts the next phase.
//  3. retire: the old CA leaves every bundle, its key is dropped and its
//     certificates are revoked. Ends when no node's NSS holds it.
//
// Each transition is one read-modify-write of the CA record (UpdateCA),
// so a restart or a failover resumes where the record says; the steps a
// transition implies (rotations, revocations) are idempotent and re-run
// by the leader until done.

// Errors of the rollover transitions.
var (
	ErrNoRollover       = errors.New("ca: no CA key rollover is in progress")
	ErrRolloverNotReady = errors.New("ca: the rollover's current phase is not complete")
	ErrRolloverRetiring = errors.New(
		"ca: the old CA key was retired (it is no longer trusted everywhere); start a new rollover instead",
	)
)

// RolloverOptions are a rollover's parameters.
type RolloverOptions struct {
	KeyType   KeyType       // the current key's type when empty
	Spread    time.Duration // over how long the nodes' rotations are spread
	Emergency bool          // the current key is compromised: issue with the new key at once
}

// StartRollover makes a new CA key and a self-signed certificate for it
// with the current CA's subject and extensions, valid RootYears, and
// publishes it (phase trust; issue at once in an emergency).
func (a *Authority) StartRollover(ctx context.Context, opts RolloverOptions, actor string) (*Root, error) {
	cur := a.Root()
	if cur.Rollover != nil { // re-checked in the transaction; spares making a key
		return nil, fmt.Errorf("%w (phase %s)", ErrRolloverInProgress, cur.Rollover.Phase)
	}
	kt := opts.KeyType
	if kt == "" {
		kt = keyTypeOf(cur.Signer.Public())
	}
	if opts.Spread < 0 {
		return nil, fmt.Errorf("%w: a negative spread", ErrInvalidRequest)
	}
	key, err := kt.GenerateKey(a.rand)
	if err != nil {
		return nil, err
	}
	now := a.clock.Now().UTC().Truncate(time.Second)
	// A root makes its own new certificate; a subordinate asks its
	// organisation's root for one (phase request, ended by ca import).
	phase := store.RolloverTrust
	var incoming *store.CA
	if cur.Subordinate() {
		phase = store.RolloverRequest
		incoming, err = a.newSubordinateKey(cur.Cert, key)
	} else {
		incoming, err = a.newCAKeyCert(cur.Cert, key, now)
	}
	if err != nil {
		return nil, err
	}
	err = a.st.UpdateCA(ctx, func(m *store.CA) (store.Event, error) {
		switch {
		case m.Rollover != nil:
			return store.Event{}, fmt.Errorf("%w (phase %s)", ErrRolloverInProgress, m.Rollover.Phase)
		case len(m.CSRPEM) > 0:
			return store.Event{}, ErrAwaitingCertificate
		}
		m.Rollover = &store.Rollover{Phase: phase, StartedAt: now, PhaseAt: now,
			Spread: opts.Spread, Emergency: opts.Emergency, Other: incoming}
		if opts.Emergency && phase == store.RolloverTrust {
			rolloverToIssue(m, now)
		}
		return a.rolloverEvent(m, "started", actor, now, map[string]string{"key_type": string(kt)}), nil
	})
	if err != nil {
		return nil, err
	}
	return a.reloadLogged(ctx, "CA key rollover started")
}

// newCAKeyCert makes the stored material of a new CA key: a self-signed
// certificate with cur's subject and extensions, and the key, sealed under
// the KEK when the Authority has one.
func (a *Authority) newCAKeyCert(cur *x509.Certificate, key crypto.Signer, now time.Time) (*store.CA, error) {
	tmpl, err := x509.ParseCertificate(cur.Raw)
	if err != nil {
		return nil, err
	}
	if tmpl.SerialNumber, err = newSerial(a.rand, now); err != nil {
		return nil, err
	}
	tmpl.NotBefore, tmpl.NotAfter = now, now.AddDate(RootYears, 0, 0)
	// New identifiers for the new key: crypto/x509 derives the subject key
	// id from it, and a self-signed certificate names no other authority.
	tmpl.SubjectKeyId, tmpl.AuthorityKeyId = nil, nil
	tmpl.SignatureAlgorithm = signatureAlgorithm(key)
	tmpl.PublicKey, tmpl.PublicKeyAlgorithm = key.Public(), x509.UnknownPublicKeyAlgorithm
	der, err := x509.CreateCertificate(a.rand, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign the new CA certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ca: encode the new CA key: %w", err)
	}
	m := &store.CA{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	}
	if a.kek != nil {
		return sealCA(m, a.kek)
	}
	return m, nil
}

// newSubordinateKey makes the stored material of a subordinate CA's new
// key: the key (sealed under the KEK when the Authority has one) and a
// request for a CA certificate with the current subject (rightca=%same).
func (a *Authority) newSubordinateKey(cur *x509.Certificate, key crypto.Signer) (*store.CA, error) {
	csrPEM, err := subordinateCSR(a.rand, key, &x509.CertificateRequest{RawSubject: cur.RawSubject})
	if err != nil {
		return nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ca: encode the new CA key: %w", err)
	}
	m := &store.CA{CSRPEM: csrPEM, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})}
	if a.kek != nil {
		return sealCA(m, a.kek)
	}
	return m, nil
}

// importRolloverCA is the end of a subordinate's request phase: the
// organisation's root signed the new key's request (s, checked against
// the request by CheckSubordinate); the new CA is published (phase trust,
// or issue at once in an emergency).
func importRolloverCA(m *store.CA, s *SubordinateImport, now time.Time) {
	ro := m.Rollover
	ro.Other.CertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Cert.Raw})
	ro.Other.Chain = nil
	for _, c := range s.Chain {
		ro.Other.Chain = append(ro.Other.Chain, c.Raw)
	}
	ro.Other.CSRPEM = nil
	ro.Phase, ro.PhaseAt = store.RolloverTrust, now
	if ro.Emergency {
		rolloverToIssue(m, now)
	}
}

// rolloverToIssue swaps the record's issuing CA with the incoming one: the
// outgoing CA, with its earlier roots, becomes Rollover.Other.
func rolloverToIssue(m *store.CA, now time.Time) {
	ro := m.Rollover
	next := ro.Other
	out := *m
	out.Rollover = nil
	m.CertPEM, m.KeyPEM, m.KeyEncryption, m.Chain, m.Previous = next.CertPEM, next.KeyPEM, next.KeyEncryption,
		next.Chain, next.Previous
	ro.Other, ro.Phase, ro.PhaseAt = &out, store.RolloverIssue, now
}

// AdvanceRollover moves a rollover in its trust phase to the issue phase
// when gate (evaluated by the caller on the record it read) holds. It
// reports whether it moved; the record is re-checked in the transaction.
func (a *Authority) AdvanceRollover(ctx context.Context, incomingSerial string, actor string) (bool, error) {
	now := a.clock.Now().UTC()
	return a.transition(ctx, "CA key rollover: the new key issues", func(m *store.CA) (store.Event, error) {
		ro := m.Rollover
		if ro == nil || ro.Phase != store.RolloverTrust || caSerial(ro.Other) != incomingSerial {
			return store.Event{}, errUnchanged
		}
		rolloverToIssue(m, now)
		return a.rolloverEvent(m, "issue", actor, now, nil), nil
	})
}

// transition runs one conditional rollover step (fn returns errUnchanged
// when the record is no longer where the caller saw it) and reloads the
// root after it; it reports whether the step was made.
func (a *Authority) transition(
	ctx context.Context,
	msg string,
	fn func(m *store.CA) (store.Event, error),
) (bool, error) {
	err := a.st.UpdateCA(ctx, fn)
	if errors.Is(err, errUnchanged) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	_, err = a.reloadLogged(ctx, msg)
	return true, err
}

// FinishRollover retires the outgoing CA: it leaves every bundle, its key
// is dropped from the record, and its certificates are revoked (returned:
// how many). Without force the issue phase must be complete
// (RolloverStatus ready); with force a rollover still in its trust phase
// switches issuance first, and the nodes not yet on the new key lose
// their tunnels and need new tokens.
func (a *Authority) FinishRollover(ctx context.Context, force bool, actor string) (*Root, int, error) {
	now := a.clock.Now().UTC()
	rep, err := a.RolloverStatus(ctx, now)
	if err != nil {
		return nil, 0, err
	}
	r, err := a.retireRollover(ctx, rep.Ready, force, actor, now)
	if err != nil {
		return nil, 0, err
	}
	n, err := a.RetireCertificates(ctx, actor)
	return r, n, err
}

func (a *Authority) retireRollover(ctx context.Context, ready, force bool, actor string, now time.Time) (*Root, error) {
	err := a.st.UpdateCA(ctx, func(m *store.CA) (store.Event, error) {
		ro := m.Rollover
		switch {
		case ro == nil:
			return store.Event{}, ErrNoRollover
		case ro.Phase == store.RolloverRetire:
			return store.Event{}, errUnchanged
		case ro.Phase == store.RolloverRequest:
			return store.Event{}, fmt.Errorf("%w (phase request): the new subordinate CA's certificate is not "+
				"imported yet (ipsecca ca import)", ErrRolloverNotReady)
		case !force && (ro.Phase != store.RolloverIssue || !ready):
			return store.Event{}, fmt.Errorf("%w (phase %s): wait until ipsecca ca rollover status shows it ready, "+
				"or give --force", ErrRolloverNotReady, ro.Phase)
		case ro.Phase == store.RolloverTrust:
			rolloverToIssue(m, now)
		}
		ro.Other.KeyPEM, ro.Other.KeyEncryption = nil, ""
		ro.Phase, ro.PhaseAt = store.RolloverRetire, now
		return a.rolloverEvent(m, "retire", actor, now, map[string]string{"forced": fmt.Sprint(force && !ready)}), nil
	})
	if err != nil && !errors.Is(err, errUnchanged) {
		return nil, err
	}
	return a.reloadLogged(ctx, "CA key rollover: the old key is retired")
}

// AbortRollover goes back to the key the rollover started from while it is
// trusted everywhere: in the request and trust phases the new key is
// dropped; in the
// issue phase the old key issues again and the rollover, turned around,
// continues in its issue phase (nodes rotate back; FinishRollover then
// retires the key that was to come).
func (a *Authority) AbortRollover(ctx context.Context, actor string) (*Root, error) {
	now := a.clock.Now().UTC()
	err := a.st.UpdateCA(ctx, func(m *store.CA) (store.Event, error) {
		ro := m.Rollover
		switch {
		case ro == nil:
			return store.Event{}, ErrNoRollover
		case ro.Phase == store.RolloverRetire:
			return store.Event{}, ErrRolloverRetiring
		case ro.Phase == store.RolloverTrust || ro.Phase == store.RolloverRequest:
			m.Rollover = nil
			ev := a.rolloverEvent(m, "aborted", actor, now, nil)
			ev.Detail["phase"] = ro.Phase
			return ev, nil
		}
		// Swap back: the CA that issued before issues again; the one
		// that issued becomes the other, to be retired by FinishRollover.
		back := *m
		back.Rollover = nil
		issuing := ro.Other
		m.CertPEM, m.KeyPEM, m.KeyEncryption, m.Chain, m.Previous = issuing.CertPEM, issuing.KeyPEM,
			issuing.KeyEncryption, issuing.Chain, issuing.Previous
		ro.Other, ro.Aborted, ro.PhaseAt = &back, !ro.Aborted, now
		return a.rolloverEvent(m, "aborted", actor, now, nil), nil
	})
	if err != nil {
		return nil, err
	}
	return a.reloadLogged(ctx, "CA key rollover aborted")
}

// CompleteRollover ends a rollover in its retire phase (the caller saw
// that no node holds the retired CA any more).
func (a *Authority) CompleteRollover(ctx context.Context, retiredSerial, actor string) (bool, error) {
	now := a.clock.Now().UTC()
	return a.transition(ctx, "CA key rollover completed", func(m *store.CA) (store.Event, error) {
		ro := m.Rollover
		if ro == nil || ro.Phase != store.RolloverRetire || caSerial(ro.Other) != retiredSerial {
			return store.Event{}, errUnchanged
		}
		ev := a.rolloverEvent(m, "completed", actor, now, nil)
		m.Rollover = nil
		return ev, nil
	})
}

// errUnchanged aborts an UpdateCA whose transition was already made (by
// this replica earlier or another one).
var errUnchanged = errors.New("ca: unchanged")

func (a *Authority) rolloverEvent(m *store.CA, step, actor string, now time.Time, detail map[string]string,
) store.Event {
	ev := store.Event{Time: now, Type: store.EventCARollover, Actor: actor, Serial: caSerial(m),
		Detail: map[string]string{"step": step}}
	if m.Rollover != nil {
		ev.Detail["phase"] = m.Rollover.Phase
		ev.OldSerial = caSerial(m.Rollover.Other)
		if m.Rollover.Emergency {
			ev.Detail["emergency"] = "true"
		}
	}
	for k, v := range detail {
		ev.Detail[k] = v
	}
	return ev
}

func (a *Authority) reloadLogged(ctx context.Context, msg string) (*Root, error) {
	r, _, err := a.ReloadRoot(ctx)
	if err != nil {
		return nil, err
	}
	args := []any{"issuing", SerialString(r.Cert.SerialNumber)}
	if ro := r.Rollover; ro != nil {
		args = append(args, "phase", ro.Phase)
		if r.Other != nil {
			args = append(args, "other", SerialString(r.Other.SerialNumber))
		}
	}
	a.log.Warn(msg, args...)
	return r, nil
}

// caSerial is the serial of m's certificate ("" when it has none).
func caSerial(m *store.CA) string {
	if m == nil {
		return ""
	}
	c, err := helpers.ParseCertificatePEM(m.CertPEM)
	if err != nil {
		return ""
	}
	return SerialString(c.SerialNumber)
}

// keyTypeOf names pub's key type (DefaultCAKeyType when it is none of ours).
func keyTypeOf(pub crypto.PublicKey) KeyType {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P384() {
			return KeyECDSAP384
		}
		return KeyECDSAP256
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 3072:
			return KeyRSA3072
		case 4096:
			return KeyRSA4096
		}
		return KeyRSA2048
	}
	return DefaultCAKeyType
}

// issuedBy reports whether der (a certificate) was signed by ca's key: by
// key identifier when both carry one, else by its signature.
func issuedBy(der []byte, ca *x509.Certificate) bool {
	c, err := x509.ParseCertificate(der)
	if err != nil || ca == nil {
		return false
	}
	if len(c.AuthorityKeyId) > 0 && len(ca.SubjectKeyId) > 0 {
		return bytes.Equal(c.AuthorityKeyId, ca.SubjectKeyId)
	}
	return c.CheckSignatureFrom(ca) == nil
}
