// Package store holds the records ipsecca persists and every rule over
// them, written once: the record types and errors (this file), the key
// schema and the transactional key-value interface the engines implement
// (kv.go: Tx), the write operations (records.go: issue, tokens, revocation,
// the rotation marks, the audit hash chain) and the queries (queries.go,
// over View). The engines in store/bolt and store/etcd map the keys to
// their own layout and batch the operations; they hold no CA rule. The
// interfaces the engines satisfy as a whole are declared by the packages
// that use them (ca, server, rotation), so a store depends on nothing above it.
package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors a backend returns. Callers act on them with errors.Is.
var (
	// ErrNotFound: the record does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrExists: a record that must be unique already exists (serial, CA, token id).
	ErrExists = errors.New("store: already exists")
	// ErrNameHeld: the certificate name belongs to another node.
	ErrNameHeld = errors.New("store: name held by another node")
	// ErrTokenUsed: the bootstrap token was consumed before.
	ErrTokenUsed = errors.New("store: token already used")
	// ErrUnavailable: the backend cannot take writes now (closed, full disk, read-only).
	ErrUnavailable = errors.New("store: unavailable")
	// ErrRevoked: the credential of the request was revoked.
	ErrRevoked = errors.New("store: credential revoked")
	// ErrNodeRevoked: the node was revoked and has not been re-admitted.
	ErrNodeRevoked = errors.New("store: node revoked")
	// ErrTokenVoided: the token was created before its node was revoked.
	ErrTokenVoided = errors.New("store: token voided by a revocation")
	// ErrNotRevoked: the operation needs a revoked node (readmit, forget).
	ErrNotRevoked = errors.New("store: node not revoked")
	// ErrTokenRevoked: an admin revoked the bootstrap token before it was used.
	ErrTokenRevoked = errors.New("store: token revoked")
	// ErrAlreadyRevoked: the node or certificate to revoke is revoked
	// already; revoking is idempotent, so callers answer it as done.
	ErrAlreadyRevoked = errors.New("store: already revoked")
	// ErrOutcomeUnknown: a commit was sent but its outcome is unknown (a
	// replicated store lost its answer); it may or may not have applied.
	ErrOutcomeUnknown = errors.New("store: outcome of the write unknown")
)

// Kind says what a certificate is for.
type Kind string

// Certificate kinds. Only node certificates take part in rotation.
const (
	KindNode   Kind = "node"
	KindAdmin  Kind = "admin"
	KindServer Kind = "server"
)

// State is the stored lifecycle state of a certificate. "expired" is not
// stored: it is derived from NotAfter at read time (see Cert.StateAt).
type State string

// Certificate states.
const (
	StateActive     State = "active"
	StateSuperseded State = "superseded"
	StateRevoked    State = "revoked"
	StateExpired    State = "expired"
)

// Cert is one issued certificate.
type Cert struct {
	Serial       string    `json:"serial"` // lower-case hex, no leading zeros
	Kind         Kind      `json:"kind"`
	Node         string    `json:"node"`        // the node (or admin/server) identity it was issued to
	CommonName   string    `json:"common_name"` // the subject CN
	Subject      string    `json:"subject"`     // RFC 2253 form
	State        State     `json:"state"`
	NotBefore    time.Time `json:"not_before"`
	NotAfter     time.Time `json:"not_after"`
	RotateAfter  time.Time `json:"rotate_after"`
	IssuedAt     time.Time `json:"issued_at"`
	IssuedVia    string    `json:"issued_via"`            // token, renewal, server, kube
	RequestUID   string    `json:"request_uid,omitempty"` // Kubernetes CSR UID
	SupersededBy string    `json:"superseded_by,omitempty"`
	// DueAt is when the rotation scheduler marked the certificate due
	// (zero: not yet); DueReason says why ("scheduled", "forced").
	DueAt     time.Time `json:"due_at,omitzero"`
	DueReason string    `json:"due_reason,omitempty"`
	// OverdueAt is when the scheduler found it still not rotated after the grace.
	OverdueAt time.Time `json:"overdue_at,omitzero"`
	// GraceUntil is when a due certificate counts as overdue.
	GraceUntil time.Time `json:"grace_until,omitzero"`
	// RevokedAt is when the certificate was revoked (State revoked).
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// RevocationReason is the RFC 5280 CRLReason code of a revoked
	// certificate (0: unspecified), carried in its CRL entry.
	RevocationReason int    `json:"revocation_reason,omitempty"`
	DER              []byte `json:"der"`
}

// StateAt reports the state at t, deriving "expired" from NotAfter.
func (c *Cert) StateAt(t time.Time) State {
	if c.State == StateActive && !t.Before(c.NotAfter) {
		return StateExpired
	}
	return c.State
}

// Token is a bootstrap token as stored: only a hash of its secret.
type Token struct {
	ID         string    `json:"id"`
	Node       string    `json:"node"`        // node identity the token admits
	CommonName string    `json:"common_name"` // certificate name the node may ask for
	SecretHash []byte    `json:"secret_hash"` // SHA-256 of the secret part
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	CreatedBy  string    `json:"created_by"`
	UsedAt     time.Time `json:"used_at,omitzero"`
	UsedFor    string    `json:"used_for,omitempty"` // serial issued with it
	// Epoch is the node's revocation epoch when the token was made: a
	// revocation moves the node to the next epoch, which voids the token.
	Epoch uint64 `json:"epoch,omitempty"`
	// RevokedAt is when an admin revoked the unused token (RevokedBy).
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	RevokedBy string    `json:"revoked_by,omitempty"`
}

// Token states, as listings show them (derived, see Token.StateAt).
const (
	TokenUnused  = "unused"
	TokenUsed    = "used"
	TokenExpired = "expired"
	TokenRevoked = "revoked"
)

// StateAt is the token's state at t: used and revoked are final; an
// unused token past ExpiresAt is expired.
func (t *Token) StateAt(now time.Time) string {
	switch {
	case !t.UsedAt.IsZero():
		return TokenUsed
	case !t.RevokedAt.IsZero():
		return TokenRevoked
	case !now.Before(t.ExpiresAt):
		return TokenExpired
	}
	return TokenUnused
}

// Spent reports whether the token can never admit a node again (used or
// revoked), whatever the time.
func (t *Token) Spent() bool { return !t.UsedAt.IsZero() || !t.RevokedAt.IsZero() }

// TokenFilter selects tokens in listings.
type TokenFilter struct {
	// All lists tokens in every state; otherwise only unused ones (not
	// used, not expired at Now, not revoked).
	All   bool
	Now   time.Time
	Node  string // "" for every node
	After string // page cursor: only ids sorting after it
	Limit int    // 0 means DefaultPageSize
}

// PageSize is f.Limit, or DefaultPageSize when it is not positive.
func (f TokenFilter) PageSize() int { return pageSize(f.Limit) }

// Match reports whether t passes f's Node and state selection.
func (f TokenFilter) Match(t *Token) bool {
	return (f.Node == "" || t.Node == f.Node) && (f.All || t.StateAt(f.Now) == TokenUnused)
}

// CertRevocation is what revoking one certificate by serial did.
type CertRevocation struct {
	Cert *Cert // the certificate named, as stored after the call
	// Already: it was revoked before; nothing changed.
	Already bool
	// NodeRevoked: it was its node's current certificate, so the node was
	// revoked with it (RevokeNodeTx: every unexpired certificate, unused
	// tokens void, no certificate until re-admitted).
	NodeRevoked bool
	// Certificates is how many certificates this call revoked.
	Certificates int
}

// CA is the signing material of the certificate authority.
type CA struct {
	CertPEM []byte `json:"cert_pem"`
	// KeyPEM is the key as PEM, or sealed under a key-encryption key
	// when KeyEncryption is set.
	KeyPEM        []byte `json:"key_pem"`
	KeyEncryption string `json:"key_encryption,omitempty"`
	// Previous holds earlier root certificates (same key after a renewal), newest first.
	Previous [][]byte `json:"previous,omitempty"`
	// Chain holds, for a subordinate CA, the certificates above CertPEM
	// (DER): its issuer first, the organisation's root last. Empty for a
	// self-signed root.
	Chain [][]byte `json:"chain,omitempty"`
	// CSRPEM is a subordinate CA's certificate request (init
	// --subordinate). CertPEM stays empty until its certificate is
	// imported; the CA issues nothing before.
	CSRPEM []byte `json:"csr_pem,omitempty"`
	// Rollover is the CA key rollover in progress, if any.
	Rollover *Rollover `json:"rollover,omitempty"`
}

// Phases of a CA key rollover, in order. Each ends on what the nodes
// report, not on time: see ca.RolloverGate.
const (
	// RolloverRequest: a subordinate CA's new key waits for the
	// certificate its organisation's root signs for Rollover.Other's
	// request (ca import); nothing is published yet.
	RolloverRequest = "request"
	// RolloverTrust: the incoming CA (Rollover.Other) is published in
	// every bundle; the outgoing one still issues.
	RolloverTrust = "trust"
	// RolloverIssue: the incoming CA issues (it is CertPEM now) and the
	// nodes rotate onto it; the outgoing one (Rollover.Other) is still
	// trusted everywhere.
	RolloverIssue = "issue"
	// RolloverRetire: the outgoing CA left every bundle and its
	// certificates are revoked; the phase ends when no node's NSS holds
	// it any more. Rollover.Other keeps its certificate, not its key.
	RolloverRetire = "retire"
)

// Rollover is a CA key rollover in progress: a new key for the CA, moved
// to in phases (RolloverRequest for a subordinate CA, then RolloverTrust,
// RolloverIssue, RolloverRetire).
type Rollover struct {
	Phase     string    `json:"phase"`
	StartedAt time.Time `json:"started_at"`
	PhaseAt   time.Time `json:"phase_at"`
	// Spread is over how long the nodes' rotations onto the new key are
	// spread when the issue phase begins.
	Spread time.Duration `json:"spread,omitempty"`
	// Emergency: the outgoing key is taken as compromised; the phases do
	// not wait for the nodes.
	Emergency bool `json:"emergency,omitempty"`
	// Aborted: an abort in the issue phase turned the rollover back
	// towards the key it started from.
	Aborted bool `json:"aborted,omitempty"`
	// Other is the CA on the other side of the rollover (see the phases).
	Other *CA `json:"other,omitempty"`
}

// Event is one audit record. The backend assigns Seq, Prev and Hash when it
// appends: Hash = SHA-256 over the record's canonical JSON with Hash empty,
// and Prev is the Hash of the record before it, so the log is a hash chain.
type Event struct {
	Seq       uint64            `json:"seq"`
	Time      time.Time         `json:"time"`
	Type      string            `json:"type"`
	Actor     string            `json:"actor,omitempty"`
	Node      string            `json:"node,omitempty"`
	Serial    string            `json:"serial,omitempty"`
	OldSerial string            `json:"old_serial,omitempty"`
	Reason    string            `json:"reason,omitempty"`
	Detail    map[string]string `json:"detail,omitempty"`
	Prev      string            `json:"prev,omitempty"`
	Hash      string            `json:"hash,omitempty"`
}

// Event types recorded by the CA core.
const (
	EventEnrolled     = "cert.enrolled"
	EventRenewed      = "cert.renewed"
	EventIssued       = "cert.issued" // admin/server certificates
	EventDenied       = "request.denied"
	EventTokenCreated = "token.created"
	EventTokenUsed    = "token.used"
	EventTokenRevoked = "token.revoked"
	EventCACreated    = "ca.created"
	EventCARenewed    = "ca.renewed"
	EventCAKeySealed  = "ca.key_sealed"
	// EventCAImported: a subordinate CA's certificate was imported.
	EventCAImported = "ca.imported"
	// EventCARenewalDue: a subordinate CA's certificate reached its
	// renew_by: node certificates issued from now on are shorter than
	// their full life; its issuer should renew it (ca import).
	EventCARenewalDue = "ca.renewal_due"
	// EventCARollover: a CA key rollover started, changed phase, was
	// aborted or completed (Detail["phase"], Detail["step"]).
	EventCARollover = "ca.rollover"

	EventRotationDue       = "rotation.due"
	EventRotationForced    = "rotation.forced"
	EventRotationCompleted = "rotation.completed"
	EventRotationOverdue   = "rotation.overdue"
	EventInventoryChanged  = "node.inventory_changed"
	EventNodeRevoked       = "node.revoked"
	EventBundleValidated   = "bundle.validated"
	EventNodeReadmitted    = "node.readmitted"
	EventNodeForgotten     = "node.forgotten"
	EventCertRevoked       = "cert.revoked" // one certificate (an admin's)
	// EventNameClash: a schema migration found names that differ only in
	// case held by two nodes; the first in key order kept the name.
	EventNameClash = "store.name_clash"
)

// Notice reports whether events of type t must reach every replica of a
// shared store as they happen (to tell nodes' Watch streams, wake the
// scheduler or reload the root); a replicated backend indexes them so its
// replicas need not follow every audit event.
func Notice(t string) bool {
	switch t {
	case EventRotationDue,
		EventRotationOverdue,
		EventRotationForced,
		EventNodeRevoked,
		EventCertRevoked,
		EventCARenewed,
		EventCAKeySealed,
		EventCAImported,
		EventCARollover:
		return true
	}
	return false
}

// Issuance is everything one certificate issue commits atomically: the
// certificate, the token it consumes (if any), the supersession of the
// node's earlier certificates of the same kind, and its audit event.
type Issuance struct {
	Cert    *Cert
	TokenID string // consumed in the same transaction; empty for renewals
	Event   Event
	// RequestUID, for Kubernetes CSRs, keys the certificate by the CSR
	// object's UID: a second issue for the same UID fails with ErrExists
	// (the caller then publishes the stored one, CertByRequest).
	RequestUID string
	// AuthSerial, for renewals, is the certificate the caller
	// authenticated with: the issue fails if it was revoked meanwhile.
	AuthSerial string
	// OnSupersede, when set, is called inside the transaction for each
	// certificate the new one supersedes; a returned event is appended in
	// the same transaction (e.g. rotation.completed).
	OnSupersede func(old *Cert) *Event
}

// NodeInfo is what the store knows about a node beyond its certificates:
// the inventory and the tunnels its sidecar last reported.
type NodeInfo struct {
	Name       string           `json:"name"`
	CommonName string           `json:"common_name"`
	Inventory  []InventoryEntry `json:"inventory,omitempty"`
	ReportedAt time.Time        `json:"reported_at,omitzero"`
	// Tunnels is the node's tunnel list as last reported, at TunnelsAt
	// (zero: its sidecar never reported tunnels); a report without
	// tunnels keeps them.
	Tunnels   []TunnelRecord `json:"tunnels,omitempty"`
	TunnelsAt time.Time      `json:"tunnels_at,omitzero"`
	// PlutoRestartDue is the last report's Report.PlutoRestartDue.
	PlutoRestartDue bool `json:"pluto_restart_due,omitempty"`
	// Revoked: the node gets no certificate, through any door, until an
	// admin re-admits it (ReadmitNode).
	Revoked   bool      `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// Epoch counts the node's revocations; a token made in an earlier
	// epoch is void.
	Epoch uint64 `json:"epoch,omitempty"`
	// ForgottenAt is when an admin released the node's names (ForgetNode).
	ForgottenAt time.Time `json:"forgotten_at,omitzero"`
}

// CheckToken reports whether tok may still admit n (nil when the node has
// no record yet): ErrNodeRevoked or ErrTokenVoided otherwise. Both
// engines call it inside the issuing transaction.
func (n *NodeInfo) CheckToken(tok *Token) error {
	switch {
	case n == nil:
		return nil
	case n.Revoked:
		return fmt.Errorf("%w: node %q", ErrNodeRevoked, n.Name)
	case tok != nil && tok.Epoch != n.Epoch:
		return fmt.Errorf("%w: token %s of node %q", ErrTokenVoided, tok.ID, n.Name)
	}
	return nil
}

// Revoke moves n to revoked in the next epoch at t.
func (n *NodeInfo) Revoke(t time.Time) {
	n.Revoked, n.RevokedAt = true, t.UTC()
	n.Epoch++
}

// InventoryEntry is one entry of a node's NSS database.
type InventoryEntry struct {
	Nickname string    `json:"nickname"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
	Trust    string    `json:"trust"`
	Subject  string    `json:"subject,omitempty"`
}

// TunnelRecord is one configured peer of a node and the IKE SA its IKE
// daemon holds with it, as the node's sidecar reported them.
type TunnelRecord struct {
	Peer        string `json:"peer"` // the peer's certificate name, canonical
	PeerAddress string `json:"peer_address,omitempty"`
	Established bool   `json:"established,omitempty"`
	IKEState    uint64 `json:"ike_state,omitempty"` // pluto's serial of the IKE SA
	// PeerKeyID and PeerNotAfter identify the key the peer authenticated
	// with: libreswan's key id and the certificate's NotAfter.
	PeerKeyID       string    `json:"peer_key_id,omitempty"`
	PeerNotAfter    time.Time `json:"peer_not_after,omitzero"`
	AuthenticatedAt time.Time `json:"authenticated_at,omitzero"`
	ChildSAs        uint32    `json:"child_sas,omitempty"`
	ChildAddedAt    time.Time `json:"child_added_at,omitzero"`
	// LocalSerial is the node's own certificate the tunnel presents to
	// the peer: what the peer authenticated the node with.
	LocalSerial string `json:"local_serial,omitempty"`
}

// Report is one report of a node's sidecar: its NSS inventory and, when
// TunnelsReported, its whole tunnel list (else the stored one is kept).
type Report struct {
	Entries         []InventoryEntry
	TunnelsReported bool
	Tunnels         []TunnelRecord
	// PlutoRestartDue: the node's pluto must start again (a CA key left its
	// NSS database), in the slot the CA gives it.
	PlutoRestartDue bool
}

// CertFilter selects certificates in listings. Zero fields match everything.
type CertFilter struct {
	Node  string
	Kind  Kind
	State State     // compared with StateAt(Now)
	Now   time.Time // for deriving "expired"
	// DueBefore keeps certificates whose RotateAfter is before it.
	DueBefore time.Time
	// After is a page cursor: only serials sorting after it are returned.
	After string
	Limit int // 0 means 100
}

// EventFilter selects audit events.
type EventFilter struct {
	Node string
	// Type is an exact type, or a prefix when it ends in ".".
	Type     string
	Since    time.Time // inclusive; zero: no bound
	Until    time.Time // exclusive; zero: no bound
	AfterSeq uint64
	Limit    int // 0 means 100
}

// HashEvent computes an event's chain hash: SHA-256 over its JSON encoding
// with the Hash field empty (Prev included, so each record seals the one
// before it). encoding/json sorts map keys, so the encoding is canonical.
func HashEvent(e Event) (string, error) {
	e.Hash = ""
	b, err := json.Marshal(e)
	if err != nil {
		return "", fmt.Errorf("store: encode event: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// AuditError reports the first broken record of the audit hash chain.
type AuditError struct {
	Seq     uint64
	Problem string
}

func (e *AuditError) Error() string {
	return fmt.Sprintf("store: audit record %d: %s", e.Seq, e.Problem)
}

// Replica is one ipsecca process serving a store shared by several.
type Replica struct {
	ID        string    `json:"id"`
	Address   string    `json:"address"`            // the gRPC address it serves
	Version   string    `json:"version,omitempty"`  // the build's module version
	Revision  string    `json:"revision,omitempty"` // the build's VCS revision
	StartedAt time.Time `json:"started_at"`
}

// ClusterMember is one member of a replicated store's consensus cluster.
type ClusterMember struct {
	Name      string
	ID        string
	Endpoint  string
	Healthy   bool
	Leader    bool
	Error     string
	DBSize    int64
	RaftIndex uint64
}

// ClusterStatus is what a replicated store reports about its replicas and
// its own cluster.
type ClusterStatus struct {
	Backend  string
	Leader   string    // id of the replica running the scheduler; "" when none
	Replicas []Replica // replicas alive (holding a session)
	Members  []ClusterMember
}

// Sink receives every record of a store, for moving a CA from one backend
// to another (ipsecca store migrate). Events arrive in sequence order with
// their chain hashes; indexes are the receiver's to derive.
type Sink interface {
	PutCA(ca *CA) error
	PutCert(c *Cert) error
	PutToken(t *Token) error
	PutNode(n *NodeInfo) error
	PutRequest(uid, serial string) error
	PutEvent(e *Event) error
}

// DefaultPageSize is a listing's page size when its filter's Limit is 0.
const DefaultPageSize = 100

// PageSize is f.Limit, or DefaultPageSize when it is not positive.
func (f CertFilter) PageSize() int { return pageSize(f.Limit) }

// PageSize is f.Limit, or DefaultPageSize when it is not positive.
func (f EventFilter) PageSize() int { return pageSize(f.Limit) }

func pageSize(limit int) int {
	if limit <= 0 {
		return DefaultPageSize
	}
	return limit
}

// Match reports whether c passes f's Node, Kind, State (at f.Now) and
// DueBefore; After and Limit are the backend's to apply.
func (f CertFilter) Match(c *Cert) bool {
	return (f.Kind == "" || c.Kind == f.Kind) && (f.State == "" || c.StateAt(f.Now) == f.State) &&
		(f.Node == "" || c.Node == f.Node) &&
		(f.DueBefore.IsZero() || c.RotateAfter.Before(f.DueBefore))
}

// Match reports whether e passes f's Node, Type, Since and Until;
// AfterSeq and Limit are the backend's to apply.
func (f EventFilter) Match(e *Event) bool {
	switch {
	case f.Node != "" && e.Node != f.Node:
		return false
	case f.Type != "" && !strings.HasSuffix(f.Type, ".") && e.Type != f.Type:
		return false
	case strings.HasSuffix(f.Type, ".") && !strings.HasPrefix(e.Type, f.Type):
		return false
	case !f.Since.IsZero() && e.Time.Before(f.Since):
		return false
	case !f.Until.IsZero() && !e.Time.Before(f.Until):
		return false
	}
	return true
}

// ChainVerifier checks an audit log record by record, in sequence order.
type ChainVerifier struct {
	n    uint64
	prev string
}

// Next checks the next stored record (its JSON); a broken chain is an
// *AuditError naming the first bad record.
func (v *ChainVerifier) Next(raw []byte) error {
	var e Event
	if err := json.Unmarshal(raw, &e); err != nil {
		return &AuditError{Seq: v.n + 1, Problem: "record does not decode (tampered)"}
	}
	if e.Seq != v.n+1 {
		return &AuditError{
			Seq:     v.n + 1,
			Problem: fmt.Sprintf("sequence %d out of order (record removed or inserted)", e.Seq),
		}
	}
	if e.Prev != v.prev {
		return &AuditError{Seq: e.Seq, Problem: "previous-hash link broken (a record before it was changed or removed)"}
	}
	h, err := HashEvent(e)
	if err != nil {
		return err
	}
	if h != e.Hash {
		return &AuditError{Seq: e.Seq, Problem: "content does not match its hash (tampered)"}
	}
	v.prev = e.Hash
	v.n++
	return nil
}

// Count is the number of records verified so far.
func (v *ChainVerifier) Count() uint64 { return v.n }

// CountKey is the (kind, state at now) a stored certificate (its JSON)
// counts under, decoding only what that needs.
func CountKey(raw []byte, now time.Time) ([2]string, error) {
	var c struct {
		Kind     Kind      `json:"kind"`
		State    State     `json:"state"`
		NotAfter time.Time `json:"not_after"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return [2]string{}, fmt.Errorf("store: decode certificate: %w", err)
	}
	st := c.State
	if st == StateActive && !now.Before(c.NotAfter) {
		st = StateExpired
	}
	return [2]string{string(c.Kind), string(st)}, nil
}

// MarkDue records on an active node certificate that it is due (for
// reason) and counts as overdue after graceUntil; ErrExists when it is
// already due.
func (c *Cert) MarkDue(at time.Time, reason string, graceUntil time.Time) error {
	if !c.DueAt.IsZero() {
		return fmt.Errorf("%w: certificate %s is already due", ErrExists, c.Serial)
	}
	c.DueAt, c.DueReason, c.GraceUntil = at.UTC(), reason, graceUntil.UTC()
	return nil
}

// MarkOverdue records that a due certificate was still not rotated at
// `at`; ErrExists when it is not waiting for its grace to end.
func (c *Cert) MarkOverdue(at time.Time) error {
	if c.DueAt.IsZero() || !c.OverdueAt.IsZero() {
		return fmt.Errorf("%w: certificate %s is not waiting for its grace to end", ErrExists, c.Serial)
	}
	c.OverdueAt = at.UTC()
	return nil
}

// Reschedule moves rotate_after to at (a forced rotation); ErrExists when
// the certificate is already due.
func (c *Cert) Reschedule(at time.Time) error {
	if !c.DueAt.IsZero() {
		return fmt.Errorf("%w: certificate %s is already due", ErrExists, c.Serial)
	}
	c.RotateAfter, c.DueReason = at.UTC(), "forced"
	return nil
}

// RevokeDetail is the audit detail of a node revocation: the certificates
// it revoked and the epoch it moved the node to (tokens of earlier epochs
// are void), added to d.
func RevokeDetail(d map[string]string, certs int, epoch uint64) map[string]string {
	if d == nil {
		d = map[string]string{}
	}
	d["certificates"] = fmt.Sprint(certs)
	d["epoch"] = fmt.Sprint(epoch)
	d["unused_tokens"] = "void"
	return d
}

// CanonicalName is the form in which node and certificate names are
// stored and compared: lower case, since libreswan compares IDs without
// regard to case.
func CanonicalName(name string) string { return strings.ToLower(name) }

// ForgetDetail is the audit detail of ForgetNode: the names it released.
func ForgetDetail(d map[string]string, released []string) map[string]string {
	if d == nil {
		d = map[string]string{}
	}
	d["released"] = strings.Join(released, ",")
	return d
}
