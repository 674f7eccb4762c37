package store

import (
	"context"
	"time"
)

// Records is the whole record store over an engine: every operation and
// query the ca, server, rotation and daemon packages use, written once. An
// engine's Store embeds it (with E set to itself) and may override a query
// it can answer faster (store/etcd answers Token and NameOwner from its
// replica's mirror).
type Records struct {
	E Engine
}

// CreateCA stores the CA material and its creation event; ErrExists
// if a CA is already there (the caller then loads that one).
func (r Records) CreateCA(ctx context.Context, ca *CA, ev Event) error {
	return r.E.Update(ctx, func(tx Tx) error { return CreateCATx(tx, ca, ev) })
}

// RenewCA replaces the CA material (a re-issued root); the caller keeps the
// previous roots in ca.Previous.
func (r Records) RenewCA(ctx context.Context, ca *CA, ev Event) error {
	return r.E.Update(ctx, func(tx Tx) error { return RenewCATx(tx, ca, ev) })
}

// UpdateCA changes the CA material in one transaction (UpdateCATx).
func (r Records) UpdateCA(ctx context.Context, fn func(ca *CA) (Event, error)) error {
	return r.E.Update(ctx, func(tx Tx) error { return UpdateCATx(tx, fn) })
}

// PutToken stores a new bootstrap token with its creation event.
func (r Records) PutToken(ctx context.Context, t *Token, ev Event) error {
	return r.E.Update(ctx, func(tx Tx) error { return PutTokenTx(tx, t, ev) })
}

// Issue commits one issuance atomically (IssueTx).
func (r Records) Issue(ctx context.Context, is Issuance) error {
	return r.E.Update(ctx, func(tx Tx) error { return IssueTx(tx, is) })
}

// AppendEvent appends one audit event (for decisions that store nothing else).
func (r Records) AppendEvent(ctx context.Context, ev Event) error {
	return r.E.Update(ctx, func(tx Tx) error { return AppendEventTx(tx, &ev) })
}

func (r Records) updateCert(ctx context.Context, serial string, ev Event, fn func(c *Cert) error) error {
	return r.E.Update(ctx, func(tx Tx) error { return UpdateCertTx(tx, serial, ev, fn) })
}

// PutInventory stores a node's report (PutInventoryTx); ev is appended
// only when the inventory changed. It reports whether it changed.
func (r Records) PutInventory(ctx context.Context, node string, rep Report, at time.Time, ev Event) (bool, error) {
	var changed bool
	err := r.E.Update(ctx, func(tx Tx) (err error) {
		changed, err = PutInventoryTx(tx, node, rep, at, ev)
		return err
	})
	return changed, err
}

// RevokeNode revokes a node (RevokeNodeTx) and returns how many
// certificates it revoked.
func (r Records) RevokeNode(ctx context.Context, node string, at time.Time, ev Event) (int, error) {
	var n int
	err := r.E.Update(ctx, func(tx Tx) (err error) {
		n, err = RevokeNodeTx(tx, node, at, ev)
		return err
	})
	return n, err
}

// RevokeNodeCode is RevokeNode recording an RFC 5280 CRLReason code on
// each certificate it revokes.
func (r Records) RevokeNodeCode(ctx context.Context, node string, code int, at time.Time, ev Event) (int, error) {
	var n int
	err := r.E.Update(ctx, func(tx Tx) (err error) {
		n, err = revokeNodeTx(tx, node, code, at, ev)
		return err
	})
	return n, err
}

// ReadmitNode lets a revoked node be issued certificates again.
func (r Records) ReadmitNode(ctx context.Context, node string, ev Event) error {
	return r.E.Update(ctx, func(tx Tx) error { return ReadmitNodeTx(tx, node, ev) })
}

// ForgetNode releases the names a revoked node holds and returns them.
func (r Records) ForgetNode(ctx context.Context, node string, at time.Time, ev Event) ([]string, error) {
	var names []string
	err := r.E.Update(ctx, func(tx Tx) (err error) {
		names, err = ForgetNodeTx(tx, node, at, ev)
		return err
	})
	return names, err
}

// RevokeCert revokes one certificate (an admin's).
func (r Records) RevokeCert(ctx context.Context, serial string, at time.Time, ev Event) (*Cert, error) {
	var c *Cert
	err := r.E.Update(ctx, func(tx Tx) (err error) {
		c, err = RevokeCertTx(tx, serial, at, ev)
		return err
	})
	return c, err
}

// RevokeSerial revokes one certificate by serial with a CRLReason code
// (RevokeSerialTx: a node's current certificate revokes the node).
func (r Records) RevokeSerial(
	ctx context.Context,
	serial string,
	code int,
	at time.Time,
	ev Event,
) (res CertRevocation, err error) {
	err = r.E.Update(ctx, func(tx Tx) (err error) {
		res, err = RevokeSerialTx(tx, serial, code, at, ev)
		return err
	})
	return res, err
}

// RevokeToken revokes an unused bootstrap token (RevokeTokenTx).
func (r Records) RevokeToken(
	ctx context.Context,
	id, by string,
	at time.Time,
	ev Event,
) (tok *Token, already bool, err error) {
	err = r.E.Update(ctx, func(tx Tx) (err error) {
		tok, already, err = RevokeTokenTx(tx, id, by, at, ev)
		return err
	})
	return tok, already, err
}

// ListTokens returns the tokens f selects, in id order, and the cursor of
// the next page ("" when there is none).
func (r Records) ListTokens(ctx context.Context, f TokenFilter) (toks []*Token, next string, err error) {
	err = r.E.Read(ctx, func(v View) error { toks, next, err = ListTokensOf(v, f); return err })
	return toks, next, err
}

// MarkDue records that an active certificate is due (for reason) and
// counts as overdue after graceUntil.
func (r Records) MarkDue(
	ctx context.Context,
	serial string,
	at time.Time,
	reason string,
	graceUntil time.Time,
	ev Event,
) error {
	return r.updateCert(ctx, serial, ev, func(c *Cert) error { return c.MarkDue(at, reason, graceUntil) })
}

// MarkOverdue records that a due certificate was still not rotated at `at`.
func (r Records) MarkOverdue(ctx context.Context, serial string, at time.Time, ev Event) error {
	return r.updateCert(ctx, serial, ev, func(c *Cert) error { return c.MarkOverdue(at) })
}

// Reschedule moves a certificate's rotate_after (forced rotation). A
// certificate already due keeps its due state.
func (r Records) Reschedule(ctx context.Context, serial string, at time.Time, ev Event) error {
	return r.updateCert(ctx, serial, ev, func(c *Cert) error { return c.Reschedule(at) })
}

// CA returns the CA material, or ErrNotFound before init.
func (r Records) CA(ctx context.Context) (ca *CA, err error) {
	err = r.E.Read(ctx, func(v View) error { ca, err = CAOf(v); return err })
	return ca, err
}

// Token returns a stored token by id.
func (r Records) Token(ctx context.Context, id string) (t *Token, err error) {
	err = r.E.Read(ctx, func(v View) error { t, err = TokenOf(v, id); return err })
	return t, err
}

// Cert returns a certificate by serial.
func (r Records) Cert(ctx context.Context, serial string) (c *Cert, err error) {
	err = r.E.Read(ctx, func(v View) error { c, err = CertOf(v, serial); return err })
	return c, err
}

// NameOwner returns the node holding a certificate name, or "" when free.
func (r Records) NameOwner(ctx context.Context, cn string) (owner string, err error) {
	err = r.E.Read(ctx, func(v View) error { owner, err = NameOwnerOf(v, cn); return err })
	return owner, err
}

// Node returns what is known about a node.
func (r Records) Node(ctx context.Context, name string) (n *NodeInfo, err error) {
	err = r.E.Read(ctx, func(v View) error { n, err = NodeOf(v, name); return err })
	return n, err
}

// ActiveNodes returns the names of the nodes the store knows, in order.
func (r Records) ActiveNodes(ctx context.Context) (nodes []string, err error) {
	err = r.E.Read(ctx, func(v View) error { nodes, err = NodesOf(v); return err })
	return nodes, err
}

// NodeInfos returns every node's record, in name order.
func (r Records) NodeInfos(ctx context.Context) (nodes []*NodeInfo, err error) {
	err = r.E.Read(ctx, func(v View) error { nodes, err = NodeInfosOf(v); return err })
	return nodes, err
}

// NameCerts returns, for each certificate name, the node certificates
// issued under it (NameCertsOf).
func (r Records) NameCerts(ctx context.Context, names []string) (certs map[string][]*Cert, err error) {
	err = r.E.Read(ctx, func(v View) error { certs, err = NameCertsOf(v, names); return err })
	return certs, err
}

// CurrentCert returns the node's active node certificate.
func (r Records) CurrentCert(ctx context.Context, node string) (c *Cert, err error) {
	err = r.E.Read(ctx, func(v View) error { c, err = CurrentCertOf(v, node); return err })
	return c, err
}

// CertByRequest returns the certificate issued for a Kubernetes CSR UID.
func (r Records) CertByRequest(ctx context.Context, uid string) (c *Cert, err error) {
	err = r.E.Read(ctx, func(v View) error { c, err = CertByRequestOf(v, uid); return err })
	return c, err
}

// ListCerts returns certificates matching f in serial order, and the
// cursor for the next page ("" when there is none).
func (r Records) ListCerts(ctx context.Context, f CertFilter) (certs []*Cert, next string, err error) {
	err = r.E.Read(ctx, func(v View) error { certs, next, err = ListCertsOf(v, f); return err })
	return certs, next, err
}

// ListEvents returns audit events after f.AfterSeq in order, and whether
// more follow.
func (r Records) ListEvents(ctx context.Context, f EventFilter) (events []*Event, more bool, err error) {
	err = r.E.Read(ctx, func(v View) error { events, more, err = ListEventsOf(v, f); return err })
	return events, more, err
}

// VerifyAudit recomputes the audit hash chain and returns the number of
// records checked, or an error naming the first broken one.
func (r Records) VerifyAudit(ctx context.Context) (n uint64, err error) {
	err = r.E.Read(ctx, func(v View) error { n, err = VerifyAuditOf(v); return err })
	return n, err
}

// CertCounts counts certificates by kind and state at now (a full scan;
// callers cache the result).
func (r Records) CertCounts(ctx context.Context, now time.Time) (counts map[[2]string]int, err error) {
	err = r.E.Read(ctx, func(v View) error { counts, err = CertCountsOf(v, now); return err })
	return counts, err
}

// DueBefore returns active node certificates not yet marked due whose
// rotate_after is at or before t, soonest first.
func (r Records) DueBefore(ctx context.Context, t time.Time, limit int) (certs []*Cert, err error) {
	err = r.E.Read(ctx, func(v View) error { certs, err = DueBeforeOf(v, t, limit); return err })
	return certs, err
}

// GraceEndedBefore returns due certificates whose grace ended at or before t.
func (r Records) GraceEndedBefore(ctx context.Context, t time.Time, limit int) (certs []*Cert, err error) {
	err = r.E.Read(ctx, func(v View) error { certs, err = GraceEndedBeforeOf(v, t, limit); return err })
	return certs, err
}

// NextTimes returns the earliest rotate_after of a certificate not yet due
// and the earliest grace end of a due one (zero when there is none).
func (r Records) NextTimes(ctx context.Context) (rotate, grace time.Time, err error) {
	err = r.E.Read(ctx, func(v View) error { rotate, grace, err = NextTimesOf(v); return err })
	return rotate, grace, err
}

// Schedule returns up to limit certificates waiting on rotation: overdue
// ones first, then due ones by grace end, then scheduled ones.
func (r Records) Schedule(ctx context.Context, limit int) (certs []*Cert, err error) {
	err = r.E.Read(ctx, func(v View) error { certs, err = ScheduleOf(v, limit); return err })
	return certs, err
}

// OverdueCount is the number of overdue certificates.
func (r Records) OverdueCount(ctx context.Context) (n int, err error) {
	err = r.E.Read(ctx, func(v View) error { n, err = OverdueCountOf(v); return err })
	return n, err
}

// Revoked returns every revoked certificate (for the CRL).
func (r Records) Revoked(ctx context.Context) (certs []*Cert, err error) {
	err = r.E.Read(ctx, func(v View) error { certs, err = RevokedOf(v); return err })
	return certs, err
}
