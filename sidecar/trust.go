package sidecar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ipsecca/ipsecca/nssdb"
)

// The CA bundle (from the server, the ConfigMap or --ca-file; newest
// first) holds the CA's own certificate, earlier ones during a renewal or a
// key rollover (same subject, other key), and for a subordinate CA its
// certificate and the organisation's root. NSS takes each for what it is:
//
//   - a self-signed certificate (a root) is a trust anchor (trust CT,,)
//     under the CA nickname, ovs_cert_cacert by default, where
//     ovs-monitor-ipsec puts the first certificate of ca.pem;
//   - any other (an intermediate: the subordinate CA) is known to NSS, to
//     build chains through, but trusted for nothing itself (trust ,,),
//     under IntermediateNickname. As an anchor it would vouch for peers on
//     its own authority, whatever became of the organisation's root.
//
// NSS refuses a certificate under a nickname that holds another subject,
// hence one nickname per subject (and kind): IntermediateNickname for
// each intermediate subject, RootNickname for a root whose subject is not
// that of the bundle's newest root (during a move to another organisation
// root, or from a self-signed CA to a subordinate one with its subject).
// None of them starts with ovs_cert_ or ovs_certkey_:
// ovs-monitor-ipsec deletes every such nickname it does not manage when
// it (re)starts, and only ever puts back the first certificate of ca.pem.

// IntermediateNickname is the NSS nickname of the intermediate CA
// certificates with the given subject (DER), beside the CA nickname
// caNickname: ipsecca-intermediate-cacert-<8 hex digits of the subject's
// SHA-256> for ovs_cert_cacert.
func IntermediateNickname(caNickname string, subject []byte) string {
	return companion(intermediatePrefix, caNickname, subject)
}

// RootNickname is the NSS nickname of the roots with the given subject
// when it differs from that of the bundle's newest root (which are under
// caNickname): ipsecca-root-cacert-<8 hex digits> for ovs_cert_cacert.
func RootNickname(caNickname string, subject []byte) string {
	return companion(rootPrefix, caNickname, subject)
}

const (
	intermediatePrefix = "ipsecca-intermediate-"
	rootPrefix         = "ipsecca-root-"
	subjectHashLen     = 8 // hex digits
)

func companion(prefix, caNickname string, subject []byte) string {
	sum := sha256.Sum256(subject)
	return companionBase(prefix, caNickname) + hex.EncodeToString(sum[:])[:subjectHashLen]
}

// companionBase is what the nicknames of caNickname's companions of one
// kind start with.
func companionBase(prefix, caNickname string) string {
	return prefix + strings.TrimPrefix(caNickname, "ovs_cert_") + "-"
}

// ownsNickname reports whether nickname holds CA certificates the sidecar
// keeps for caNickname: caNickname itself or one of its companions.
func ownsNickname(caNickname, nickname string) bool {
	if nickname == caNickname {
		return true
	}
	for _, p := range []string{intermediatePrefix, rootPrefix} {
		h, ok := strings.CutPrefix(nickname, companionBase(p, caNickname))
		if _, err := hex.DecodeString(h); ok && len(h) == subjectHashLen && err == nil && h == strings.ToLower(h) {
			return true
		}
	}
	return false
}

// selfSigned reports whether c is a root: its subject is its issuer and
// its own key verifies its signature (a certificate of a re-keyed CA
// signed by the old key has the same names but is no root).
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate,
		c.Signature) == nil
}

// placement is where a CA certificate belongs in NSS.
type placement struct {
	cert     *x509.Certificate
	nickname string
	trust    string
}

// trustPlan says where each CA certificate belongs for one bundle.
type trustPlan struct {
	caNickname string
	primary    []byte // subject of the bundle's newest root
	want       []placement
}

// planTrust places the bundle's certificates. A bundle without a root
// (a subordinate CA's certificate alone) makes its first certificate the
// anchor, as ovs-monitor-ipsec would: NSS could verify no peer otherwise.
func planTrust(caNickname string, certs []*x509.Certificate) trustPlan {
	p := trustPlan{caNickname: caNickname}
	for _, c := range certs {
		if selfSigned(c) {
			p.primary = c.RawSubject
			break
		}
	}
	for i, c := range certs {
		if slices.ContainsFunc(p.want, func(w placement) bool { return w.cert.Equal(c) }) {
			continue
		}
		pl := p.place(c)
		if p.primary == nil && i == 0 {
			pl = placement{cert: c, nickname: caNickname, trust: nssdb.TrustCA}
		}
		p.want = append(p.want, pl)
	}
	return p
}

// place says where c belongs: the bundle's placement, or for a
// certificate not in the bundle, where it would be.
func (p trustPlan) place(c *x509.Certificate) placement {
	for _, w := range p.want {
		if w.cert.Equal(c) {
			return w
		}
	}
	switch {
	case !selfSigned(c):
		return placement{cert: c, nickname: IntermediateNickname(p.caNickname, c.RawSubject),
			trust: nssdb.TrustIntermediate}
	case bytes.Equal(c.RawSubject, p.primary):
		return placement{cert: c, nickname: p.caNickname, trust: nssdb.TrustCA}
	}
	return placement{cert: c, nickname: RootNickname(p.caNickname, c.RawSubject), trust: nssdb.TrustCA}
}

func (p trustPlan) inBundle(c *x509.Certificate) bool {
	return slices.ContainsFunc(p.want, func(w placement) bool { return w.cert.Equal(c) })
}

// keyKept reports whether a certificate of the bundle, whatever its
// subject and nickname, has c's key (true when a key ID cannot be had:
// nothing is deleted on a guess).
func (p trustPlan) keyKept(c *x509.Certificate) bool {
	id, err := nssdb.KeyID(c.PublicKey)
	if err != nil {
		return true
	}
	return slices.ContainsFunc(p.want, func(w placement) bool {
		other, err := nssdb.KeyID(w.cert.PublicKey)
		return err != nil || other == id
	})
}

// subjectKept reports whether a certificate of the bundle has c's subject:
// when c's key leaves while its subject stays (a key rollover), pluto must
// start again (restartPluto).
func (p trustPlan) subjectKept(c *x509.Certificate) bool {
	return slices.ContainsFunc(p.want, func(w placement) bool { return bytes.Equal(w.cert.RawSubject, c.RawSubject) })
}

// syncTrust makes NSS hold the bundle's CA certificates, each where and
// with the trust planTrust says, and no other under the sidecar's CA
// nicknames. In three steps, each only after the one before succeeded:
//
//  1. move: a certificate under one of those nicknames but belonging under
//     another goes there (its trust unchanged: it stays what it was until
//     step 2), so that a nickname holds one subject before another comes
//     in;
//  2. add: every bundle certificate goes in, or gets its trust;
//  3. remove: only then are the certificates no longer in the bundle (a
//     root retired by a key rollover) deleted from those nicknames, one
//     by one (nssdb.DeleteCA), or all those of a key at once when none
//     with that key is in the bundle (nssdb.DeleteCAKey: the old key's
//     roots after a rollover, renewals with that key included), never
//     anything under another nickname.
//
// A certificate of the database that is not under one of those nicknames
// (an admin's `certutil -A -n CA`) is left where it is. A retired root
// that shares subject and key with a root of the bundle (a renewal with
// the same key, the older root gone from the bundle) stays: certutil
// cannot name it apart from that root, and it vouches for nothing the
// other does not. It goes with the key, once no root of the bundle has
// it. It reports whether the database changed; with everything in place
// it runs no write.
func (a *Agent) syncTrust(ctx context.Context, bundle []byte) (changed bool, err error) {
	certs, err := parseBundle(bundle)
	if err != nil {
		return false, err
	}
	plan := planTrust(a.cfg.CANickname, certs)
	before, err := a.db.List(ctx)
	if err != nil {
		return false, err
	}
	entries := before
	wrote := false
	defer func() {
		if wrote {
			after, lerr := a.db.List(ctx)
			changed = lerr != nil || trustState(after) != trustState(before)
		}
	}()
	for _, step := range []func(context.Context, trustPlan, []nssdb.Entry) (bool, error){
		a.moveCAs, a.addCAs, a.removeCAs,
	} {
		did, err := step(ctx, plan, entries)
		if err != nil {
			wrote = wrote || did
			return false, err
		}
		if did {
			wrote = true
			if entries, err = a.db.List(ctx); err != nil {
				return false, err
			}
		}
	}
	return false, nil
}

// owned returns the entries under the sidecar's CA nicknames, the CA
// nickname first (moves out of it come before moves into it).
func (a *Agent) owned(entries []nssdb.Entry) []nssdb.Entry {
	var out []nssdb.Entry
	for _, e := range entries {
		if ownsNickname(a.cfg.CANickname, e.Nickname) {
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(x, y nssdb.Entry) int {
		return boolInt(y.Nickname == a.cfg.CANickname) - boolInt(x.Nickname == a.cfg.CANickname)
	})
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// moveCAs is step 1 of syncTrust. An entry lists every certificate of its
// subject, so a certificate is moved only when it is under the entry's
// nickname itself.
func (a *Agent) moveCAs(ctx context.Context, plan trustPlan, entries []nssdb.Entry) (bool, error) {
	moved := false
	for _, e := range a.owned(entries) {
		for _, c := range e.Certs {
			to := plan.place(c).nickname
			if to == e.Nickname {
				continue
			}
			ok, err := a.db.MoveCA(ctx, e.Nickname, to, c)
			switch {
			case errors.Is(err, nssdb.ErrSharedKey):
				a.log.Warn("cannot move a CA certificate to its nickname", "from", e.Nickname, "to", to, "err", err)
				continue
			case err != nil:
				return moved, err
			case ok:
				moved = true
				a.log.Info("moved a CA certificate in NSS", "from", e.Nickname, "to", to,
					"subject", c.Subject.String(), "serial", serialHex(c.SerialNumber))
			}
		}
	}
	return moved, nil
}

// addCAs is step 2 of syncTrust. A bundle certificate is in place when a
// nickname that lists it (the one planned, or one that is not the
// sidecar's) has its trust on every certificate.
func (a *Agent) addCAs(ctx context.Context, plan trustPlan, entries []nssdb.Entry) (bool, error) {
	added := false
	for _, w := range plan.want {
		if slices.ContainsFunc(entries, func(e nssdb.Entry) bool {
			return (e.Nickname == w.nickname || !ownsNickname(a.cfg.CANickname, e.Nickname)) &&
				slices.ContainsFunc(e.Certs, w.cert.Equal) &&
				!slices.ContainsFunc(e.Trusts, func(t string) bool { return t != w.trust })
		}) {
			continue
		}
		if err := a.db.ImportCA(ctx, w.nickname, w.cert, w.trust); err != nil {
			return added, fmt.Errorf("sidecar: put CA %s (serial %s) under %s: %w", w.cert.Subject,
				serialHex(w.cert.SerialNumber), w.nickname, err)
		}
		added = true
		a.log.Info("CA certificate in NSS", "nickname", w.nickname, "trust", w.trust,
			"subject", w.cert.Subject.String(), "serial", serialHex(w.cert.SerialNumber))
	}
	return added, nil
}

// removeCAs is step 3 of syncTrust. A certificate that left the bundle
// goes alone (nssdb.DeleteCA) while the bundle keeps a certificate with
// its key; otherwise every certificate with its key goes from the
// nickname (nssdb.DeleteCAKey), however many roots were issued with it:
// the URI cannot name one of them apart, and none is to stay.
func (a *Agent) removeCAs(ctx context.Context, plan trustPlan, entries []nssdb.Entry) (bool, error) {
	for _, w := range plan.want {
		held := func(e nssdb.Entry) bool { return slices.ContainsFunc(e.Certs, w.cert.Equal) }
		if !slices.ContainsFunc(entries, held) {
			return false, fmt.Errorf("sidecar: CA %s (serial %s) is not in NSS after it was put there; "+
				"no CA certificate removed", w.cert.Subject, serialHex(w.cert.SerialNumber))
		}
	}
	removed := false
	for _, e := range a.owned(entries) {
		for _, c := range e.Certs {
			if plan.inBundle(c) {
				continue
			}
			if !plan.keyKept(c) {
				if plan.subjectKept(c) {
					if err := a.notePlutoRestart(c); err != nil {
						return removed, err
					}
				}
				n, err := a.db.DeleteCAKey(ctx, e.Nickname, c)
				removed = removed || n > 0
				if err != nil {
					return removed, err
				}
				if n > 0 {
					id, _ := nssdb.KeyID(c.PublicKey)
					a.log.Info("removed the CA certificates of a key no longer in the bundle from NSS",
						"nickname", e.Nickname, "subject", c.Subject.String(), "key_id", id, "certificates", n)
				}
				continue
			}
			ok, err := a.db.DeleteCA(ctx, e.Nickname, c)
			switch {
			case errors.Is(err, nssdb.ErrSharedKey):
				a.log.Debug("a retired CA certificate stays: another one has its subject and key",
					"nickname", e.Nickname, "serial", serialHex(c.SerialNumber))
			case err != nil:
				return removed, err
			case ok:
				removed = true
				a.log.Info("removed a CA certificate no longer in the bundle from NSS", "nickname", e.Nickname,
					"subject", c.Subject.String(), "serial", serialHex(c.SerialNumber), "not_after", c.NotAfter)
			}
		}
	}
	return removed, nil
}

// trustState sums up the database's entries: nicknames, trusts and
// certificates.
func trustState(entries []nssdb.Entry) string {
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "%q %v", e.Nickname, e.Trusts)
		for _, c := range e.Certs {
			sum := sha256.Sum256(c.Raw)
			b.WriteString(" " + hex.EncodeToString(sum[:]))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// anchorsFirst returns the bundle's certificates as PEM, the roots first
// (newest first, as the bundle has them), then the others. ovs-monitor-ipsec
// imports only the first certificate of its ca_cert file, as trust anchor
// (ovs_cert_cacert, CT,,): it must be a root, never the subordinate CA.
func anchorsFirst(bundle []byte) ([]byte, error) {
	certs, err := parseBundle(bundle)
	if err != nil {
		return nil, err
	}
	var roots, others []byte
	for _, c := range certs {
		b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		if selfSigned(c) {
			roots = append(roots, b...)
		} else {
			others = append(others, b...)
		}
	}
	return append(roots, others...), nil
}
