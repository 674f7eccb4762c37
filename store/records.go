package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// The record operations below hold the CA's rules over the records (one
// name per node, single-use tokens, revocation epochs, the certificate
// indexes, the audit chain), written once for every engine over a Tx.
// Each runs inside one engine transaction; an error means it wrote nothing.

// auditHead is the newest audit record. Write is the etcd engine's (it
// names the transaction that wrote the head, for its compare-and-swap);
// the records keep it as they found it.
type auditHead struct {
	Seq   uint64 `json:"seq"`
	Hash  string `json:"hash"`
	Write string `json:"write,omitempty"`
}

// AppendEventTx chains ev after the audit head and stores it, setting its
// Seq, Prev and Hash.
func AppendEventTx(tx Tx, ev *Event) error {
	var head auditHead
	if raw, ok := tx.Get(KAuditHead()); ok && len(raw) > 0 {
		if err := json.Unmarshal(raw, &head); err != nil {
			return fmt.Errorf("store: decode audit head: %w", err)
		}
	}
	ev.Seq, ev.Prev = head.Seq+1, head.Hash
	h, err := HashEvent(*ev)
	if err != nil {
		return err
	}
	ev.Hash = h
	if err := putJSON(tx, KEvent(ev.Seq), ev); err != nil {
		return err
	}
	return putJSON(tx, KAuditHead(), auditHead{Seq: ev.Seq, Hash: ev.Hash, Write: head.Write})
}

// nodeInfoTx returns the node's record, or nil when it has none.
func nodeInfoTx(tx Tx, node string) (*NodeInfo, error) {
	info := new(NodeInfo)
	if err := getJSON(tx, KNode(node), info); errors.Is(err, ErrNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	return info, nil
}

// PutTokenTx stores a new bootstrap token in its node's revocation epoch;
// ErrNodeRevoked while the node is revoked.
func PutTokenTx(tx Tx, t *Token, ev Event) error {
	if _, ok := tx.Get(KToken(t.ID)); ok {
		return ErrExists
	}
	info, err := nodeInfoTx(tx, t.Node)
	if err != nil {
		return err
	}
	if err := info.CheckToken(nil); err != nil {
		return err
	}
	if info != nil {
		t.Epoch = info.Epoch
	}
	if err := putJSON(tx, KToken(t.ID), t); err != nil {
		return err
	}
	return AppendEventTx(tx, &ev)
}

// IssueTx commits one issuance: the serial must be new, the name free or
// already the node's, the node not revoked, the token (if any) unused and
// of the node's epoch, the authenticating certificate unrevoked, and the
// request UID unanswered; the node's active certificate of the same kind
// becomes superseded.
func IssueTx(tx Tx, is Issuance) error {
	c := is.Cert
	if _, ok := tx.Get(KCert(c.Serial)); ok {
		return fmt.Errorf("%w: serial %s", ErrExists, c.Serial)
	}
	if c.Kind == KindNode {
		if owner, ok := tx.Get(KName(c.CommonName)); ok && string(owner) != c.Node {
			return fmt.Errorf("%w: %q is held by node %q", ErrNameHeld, c.CommonName, owner)
		}
	}
	if is.RequestUID != "" {
		if prev, ok := tx.Get(KRequest(is.RequestUID)); ok {
			return fmt.Errorf("%w: request %s already has certificate %s", ErrExists, is.RequestUID, prev)
		}
	}
	if is.AuthSerial != "" {
		if _, ok := tx.Get(KRevoked(is.AuthSerial)); ok {
			return fmt.Errorf("%w: certificate %s", ErrRevoked, is.AuthSerial)
		}
	}
	var tok *Token
	if is.TokenID != "" {
		tok = new(Token)
		if err := getJSON(tx, KToken(is.TokenID), tok); err != nil {
			return err
		}
		if !tok.UsedAt.IsZero() {
			return ErrTokenUsed
		}
		if !tok.RevokedAt.IsZero() {
			return fmt.Errorf("%w: token %s", ErrTokenRevoked, tok.ID)
		}
	}
	var info *NodeInfo
	if c.Kind == KindNode {
		var err error
		if info, err = nodeInfoTx(tx, c.Node); err != nil {
			return err
		}
		if err := info.CheckToken(tok); err != nil {
			return err
		}
	}
	if tok != nil {
		tok.UsedAt, tok.UsedFor = c.IssuedAt, c.Serial
		if err := putJSON(tx, KToken(tok.ID), tok); err != nil {
			return err
		}
	}
	superseded, err := supersedeTx(tx, c)
	if err != nil {
		return err
	}
	if err := putJSON(tx, KCert(c.Serial), c); err != nil {
		return err
	}
	puts := [][2]string{{KByNode(c.Node, c.Serial), ""}, {KActive(c.Kind, c.Node), c.Serial}}
	if is.RequestUID != "" {
		puts = append(puts, [2]string{KRequest(is.RequestUID), c.Serial})
	}
	if c.Kind == KindNode {
		puts = append(puts, [2]string{KRotate(c.RotateAfter, c.Serial), ""}, [2]string{KName(c.CommonName), c.Node})
	}
	for _, p := range puts {
		if err := tx.Put(p[0], []byte(p[1])); err != nil {
			return err
		}
	}
	if c.Kind == KindNode {
		if info == nil {
			info = &NodeInfo{}
		}
		if info.Name == "" || info.CommonName != c.CommonName {
			info.Name, info.CommonName = c.Node, c.CommonName
			if err := putJSON(tx, KNode(c.Node), info); err != nil {
				return err
			}
		}
	}
	ev := is.Event
	if err := AppendEventTx(tx, &ev); err != nil {
		return err
	}
	for _, old := range superseded {
		if is.OnSupersede == nil {
			break
		}
		if e := is.OnSupersede(old); e != nil {
			if err := AppendEventTx(tx, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// supersedeTx marks the node's active certificate of c's kind (found
// through the active index, so the cost does not grow with the node's
// history) superseded by c and drops it from the rotation indexes.
func supersedeTx(tx Tx, c *Cert) ([]*Cert, error) {
	serial, ok := tx.Get(KActive(c.Kind, c.Node))
	if !ok {
		return nil, nil
	}
	old := new(Cert)
	if err := getJSON(tx, KCert(string(serial)), old); err != nil {
		return nil, err
	}
	if old.State != StateActive {
		return nil, nil
	}
	old.State, old.SupersededBy = StateSuperseded, c.Serial
	if err := putJSON(tx, KCert(old.Serial), old); err != nil {
		return nil, err
	}
	if err := unindexRotationTx(tx, old); err != nil {
		return nil, err
	}
	return []*Cert{old}, nil
}

// unindexRotationTx removes c from whichever rotation index holds it.
func unindexRotationTx(tx Tx, c *Cert) error {
	if c.Kind != KindNode {
		return nil
	}
	keys := []string{KRotate(c.RotateAfter, c.Serial), KOverdueN(c.Serial)}
	if !c.GraceUntil.IsZero() {
		keys = append(keys, KOverdue(c.GraceUntil, c.Serial))
	}
	for _, k := range keys {
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// certsOfNodeTx returns every certificate of node, through by_node.
func certsOfNodeTx(tx Tx, node string) ([]*Cert, error) {
	prefix := KByNode(node, "")
	keys, err := tx.Keys(prefix)
	if err != nil {
		return nil, err
	}
	out := make([]*Cert, 0, len(keys))
	for _, k := range keys {
		c := new(Cert)
		if err := getJSON(tx, KCert(strings.TrimPrefix(k, prefix)), c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// RevokeNodeTx revokes every unexpired node certificate of node (active or
// superseded), moves the node to its next epoch (voiding its unused
// tokens) and marks it revoked; it returns how many certificates it
// revoked. ErrAlreadyRevoked when the node is revoked already and has
// nothing left to revoke (revoking is idempotent: callers answer it as
// done); ErrNotFound when nothing is known of the node (no record, no
// certificate, no token), so a mistyped name is not revoked in advance.
func RevokeNodeTx(tx Tx, node string, at time.Time, ev Event) (int, error) {
	return revokeNodeTx(tx, node, 0, at, ev)
}

// revokeNodeTx is RevokeNodeTx, recording code (an RFC 5280 CRLReason) on
// each certificate it revokes.
func revokeNodeTx(tx Tx, node string, code int, at time.Time, ev Event) (int, error) {
	certs, err := certsOfNodeTx(tx, node)
	if err != nil {
		return 0, err
	}
	var victims []*Cert
	for _, c := range certs {
		if c.Kind == KindNode && c.State != StateRevoked && at.Before(c.NotAfter) {
			victims = append(victims, c)
		}
	}
	info, err := nodeInfoTx(tx, node)
	if err != nil {
		return 0, err
	}
	if len(victims) == 0 && info != nil && info.Revoked {
		return 0, fmt.Errorf("%w: node %q is revoked and has no certificate left to revoke", ErrAlreadyRevoked, node)
	}
	if info == nil && len(certs) == 0 {
		has, err := hasTokenTx(tx, node)
		if err != nil {
			return 0, err
		}
		if !has {
			return 0, fmt.Errorf("%w: no node %q (no certificate, no token)", ErrNotFound, node)
		}
	}
	if info == nil {
		info = &NodeInfo{Name: node}
	}
	info.Revoke(at)
	if err := putJSON(tx, KNode(node), info); err != nil {
		return 0, err
	}
	if err := tx.Delete(KActive(KindNode, node)); err != nil {
		return 0, err
	}
	for _, c := range victims {
		if err := revokeOneTx(tx, c, code, at); err != nil {
			return 0, err
		}
	}
	ev.Detail = RevokeDetail(ev.Detail, len(victims), info.Epoch)
	return len(victims), AppendEventTx(tx, &ev)
}

// hasTokenTx reports whether any token (in any state) was made for node.
func hasTokenTx(tx Tx, node string) (bool, error) {
	keys, err := tx.Keys(KToken(""))
	if err != nil {
		return false, err
	}
	for _, k := range keys {
		var t Token
		if err := getJSON(tx, k, &t); err != nil {
			return false, err
		}
		if t.Node == node {
			return true, nil
		}
	}
	return false, nil
}

// revokeOneTx marks c revoked (with CRLReason code) at `at`, drops it from
// the rotation indexes and lists it for the CRL. The caller handles the
// active index.
func revokeOneTx(tx Tx, c *Cert, code int, at time.Time) error {
	if err := unindexRotationTx(tx, c); err != nil {
		return err
	}
	c.State, c.RevokedAt, c.RevocationReason = StateRevoked, at.UTC(), code
	if err := putJSON(tx, KCert(c.Serial), c); err != nil {
		return err
	}
	return tx.Put(KRevoked(c.Serial), nil)
}

// revokedNodeTx returns the record of a revoked node, or ErrNotRevoked.
func revokedNodeTx(tx Tx, node string) (*NodeInfo, error) {
	info, err := nodeInfoTx(tx, node)
	if err != nil {
		return nil, err
	}
	if info == nil || !info.Revoked {
		return nil, fmt.Errorf("%w: node %q", ErrNotRevoked, node)
	}
	return info, nil
}

// ReadmitNodeTx lets a revoked node be issued certificates again (with a
// token made after this: earlier ones stay void).
func ReadmitNodeTx(tx Tx, node string, ev Event) error {
	info, err := revokedNodeTx(tx, node)
	if err != nil {
		return err
	}
	info.Revoked = false
	if err := putJSON(tx, KNode(node), info); err != nil {
		return err
	}
	return AppendEventTx(tx, &ev)
}

// ForgetNodeTx releases every certificate name a revoked node holds, so
// another node (a re-provisioned chassis) may take them. The node stays
// revoked; its certificates stay for the record. It returns the names.
func ForgetNodeTx(tx Tx, node string, at time.Time, ev Event) ([]string, error) {
	info, err := revokedNodeTx(tx, node)
	if err != nil {
		return nil, err
	}
	certs, err := certsOfNodeTx(tx, node)
	if err != nil {
		return nil, err
	}
	var cns []string
	for _, c := range certs {
		if c.Kind == KindNode {
			cns = append(cns, c.CommonName)
		}
	}
	var released []string
	seen := map[string]bool{}
	for _, cn := range append(cns, info.CommonName) {
		if owner, ok := tx.Get(KName(cn)); cn == "" || seen[cn] || !ok || string(owner) != node {
			continue
		}
		seen[cn] = true
		released = append(released, cn)
		if err := tx.Delete(KName(cn)); err != nil {
			return nil, err
		}
	}
	info.CommonName, info.ForgottenAt = "", at.UTC()
	if err := putJSON(tx, KNode(node), info); err != nil {
		return nil, err
	}
	ev.Detail = ForgetDetail(ev.Detail, released)
	return released, AppendEventTx(tx, &ev)
}

// RevokeCertTx revokes one certificate (an admin's): it no longer
// authenticates and is listed in the CRL. ErrNotFound when there is no
// such certificate, ErrRevoked when it already is.
func RevokeCertTx(tx Tx, serial string, at time.Time, ev Event) (*Cert, error) {
	c := new(Cert)
	if err := getJSON(tx, KCert(serial), c); err != nil {
		return nil, err
	}
	if c.State == StateRevoked {
		return nil, fmt.Errorf("%w: certificate %s is already revoked", ErrRevoked, serial)
	}
	return c, revokeCertTx(tx, c, 0, at, ev)
}

// revokeCertTx revokes c alone (releasing its active index) and appends ev.
func revokeCertTx(tx Tx, c *Cert, code int, at time.Time, ev Event) error {
	if cur, ok := tx.Get(KActive(c.Kind, c.Node)); ok && string(cur) == c.Serial {
		if err := tx.Delete(KActive(c.Kind, c.Node)); err != nil {
			return err
		}
	}
	if err := revokeOneTx(tx, c, code, at); err != nil {
		return err
	}
	return AppendEventTx(tx, &ev)
}

// RevokeSerialTx revokes the certificate serial with CRLReason code. The
// node must not keep a live credential, so revoking a node's current
// certificate revokes the node, by the node rule (revokeNodeTx: every
// unexpired certificate, unused tokens void, nothing issued until an admin
// re-admits it; ev becomes a node.revoked event naming the serial). Any
// other certificate (a superseded or expired node certificate, an admin's,
// a server's) is revoked alone (ev as given, cert.revoked). Revoking a
// revoked certificate changes nothing and reports Already; ErrNotFound
// when there is no such certificate.
func RevokeSerialTx(tx Tx, serial string, code int, at time.Time, ev Event) (CertRevocation, error) {
	c := new(Cert)
	if err := getJSON(tx, KCert(serial), c); err != nil {
		return CertRevocation{}, fmt.Errorf("no certificate with serial %s: %w", serial, err)
	}
	if c.State == StateRevoked {
		return CertRevocation{Cert: c, Already: true}, nil
	}
	ev.Node, ev.Serial = c.Node, c.Serial
	if cur, ok := tx.Get(KActive(c.Kind, c.Node)); ok && c.Kind == KindNode && string(cur) == c.Serial &&
		at.Before(c.NotAfter) {
		ev.Type = EventNodeRevoked
		if ev.Detail == nil {
			ev.Detail = map[string]string{}
		}
		ev.Detail["via_serial"] = c.Serial
		n, err := revokeNodeTx(tx, c.Node, code, at, ev)
		if err != nil {
			return CertRevocation{}, err
		}
		if err := getJSON(tx, KCert(serial), c); err != nil {
			return CertRevocation{}, err
		}
		return CertRevocation{Cert: c, NodeRevoked: true, Certificates: n}, nil
	}
	ev.Type = EventCertRevoked
	if err := revokeCertTx(tx, c, code, at, ev); err != nil {
		return CertRevocation{}, err
	}
	return CertRevocation{Cert: c, Certificates: 1}, nil
}

// RevokeTokenTx revokes an unused bootstrap token, so it admits no node:
// an expired one too (it stays listed as revoked). A token revoked before
// is reported as already (nothing written); ErrTokenUsed for a used token
// (it admits nothing any more: revoke the certificate it was used for);
// ErrNotFound for an unknown id.
func RevokeTokenTx(tx Tx, id, by string, at time.Time, ev Event) (tok *Token, already bool, err error) {
	tok = new(Token)
	if err := getJSON(tx, KToken(id), tok); err != nil {
		return nil, false, fmt.Errorf("no token %s: %w", id, err)
	}
	switch {
	case !tok.RevokedAt.IsZero():
		return tok, true, nil
	case !tok.UsedAt.IsZero():
		return nil, false, fmt.Errorf("%w: token %s was used for certificate %s", ErrTokenUsed, id, tok.UsedFor)
	}
	tok.RevokedAt, tok.RevokedBy = at.UTC(), by
	if err := putJSON(tx, KToken(id), tok); err != nil {
		return nil, false, err
	}
	ev.Node = tok.Node
	return tok, false, AppendEventTx(tx, &ev)
}

// CreateCATx stores the CA material and its creation event; ErrExists if
// a CA is already there (the caller then loads that one).
func CreateCATx(tx Tx, ca *CA, ev Event) error {
	if _, ok := tx.Get(KCA()); ok {
		return ErrExists
	}
	if err := putJSON(tx, KCA(), ca); err != nil {
		return err
	}
	return AppendEventTx(tx, &ev)
}

// RenewCATx replaces the CA material (ErrNotFound before it was created);
// the caller keeps the previous roots in ca.Previous.
func RenewCATx(tx Tx, ca *CA, ev Event) error {
	if _, ok := tx.Get(KCA()); !ok {
		return ErrNotFound
	}
	if err := putJSON(tx, KCA(), ca); err != nil {
		return err
	}
	return AppendEventTx(tx, &ev)
}

// UpdateCATx reads the CA material, lets fn change it in place and stores
// it with the event fn returns; an error from fn writes nothing. It is the
// read-modify-write every CA transition (import, rollover) goes through,
// so two replicas' transitions cannot overwrite each other.
func UpdateCATx(tx Tx, fn func(ca *CA) (Event, error)) error {
	ca := new(CA)
	if err := getJSON(tx, KCA(), ca); err != nil {
		return err
	}
	ev, err := fn(ca)
	if err != nil {
		return err
	}
	if err := putJSON(tx, KCA(), ca); err != nil {
		return err
	}
	return AppendEventTx(tx, &ev)
}

// UpdateCertTx loads an active node certificate, lets fn change it (an
// error from fn refuses), re-indexes it for rotation and appends ev.
func UpdateCertTx(tx Tx, serial string, ev Event, fn func(c *Cert) error) error {
	c := new(Cert)
	if err := getJSON(tx, KCert(serial), c); err != nil {
		return err
	}
	if c.Kind != KindNode || c.State != StateActive {
		return fmt.Errorf("%w: certificate %s is not an active node certificate", ErrNotFound, serial)
	}
	before := *c
	if err := fn(c); err != nil {
		return err
	}
	if err := unindexRotationTx(tx, &before); err != nil {
		return err
	}
	var index string
	switch {
	case c.DueAt.IsZero():
		index = KRotate(c.RotateAfter, c.Serial)
	case c.OverdueAt.IsZero():
		index = KOverdue(c.GraceUntil, c.Serial)
	default:
		index = KOverdueN(c.Serial)
	}
	if err := tx.Put(index, nil); err != nil {
		return err
	}
	if err := putJSON(tx, KCert(serial), c); err != nil {
		return err
	}
	return AppendEventTx(tx, &ev)
}

// PutInventoryTx stores a node's report: its NSS inventory, and its
// tunnels when the report carries them. It appends ev (and reports true)
// only when the inventory changed: tunnels change with every rekey, and
// the audit log is not their history. The node's record is rewritten
// once (ReportedAt). ErrNotFound for an unknown node.
func PutInventoryTx(tx Tx, node string, rep Report, at time.Time, ev Event) (bool, error) {
	var n NodeInfo
	if err := getJSON(tx, KNode(node), &n); err != nil {
		return false, err
	}
	entries := rep.Entries
	changed := !reflect.DeepEqual(n.Inventory, entries) && !(len(n.Inventory) == 0 && len(entries) == 0)
	n.Inventory, n.ReportedAt, n.PlutoRestartDue = entries, at.UTC(), rep.PlutoRestartDue
	if rep.TunnelsReported {
		n.Tunnels, n.TunnelsAt = rep.Tunnels, at.UTC()
	}
	if err := putJSON(tx, KNode(node), &n); err != nil {
		return false, err
	}
	if changed {
		return true, AppendEventTx(tx, &ev)
	}
	return false, nil
}
