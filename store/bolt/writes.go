package bolt

import (
	"context"
	"time"

	"github.com/ipsecca/ipsecca/store"
)

// The write operations: each is one of the store package's record
// operations (written once for every engine) run in a group commit.

// CreateCA stores the CA material and its creation event; store.ErrExists
// if a CA is already there (the caller then loads that one).
func (s *Store) CreateCA(ctx context.Context, ca *store.CA, ev store.Event) error {
	return s.Update(ctx, func(tx store.Tx) error { return store.CreateCATx(tx, ca, ev) })
}

// RenewCA replaces the CA material (a re-issued root); the caller keeps the
// previous roots in ca.Previous.
func (s *Store) RenewCA(ctx context.Context, ca *store.CA, ev store.Event) error {
	return s.Update(ctx, func(tx store.Tx) error { return store.RenewCATx(tx, ca, ev) })
}

// PutToken stores a new bootstrap token with its creation event.
func (s *Store) PutToken(ctx context.Context, t *store.Token, ev store.Event) error {
	return s.Update(ctx, func(tx store.Tx) error { return store.PutTokenTx(tx, t, ev) })
}

// Issue commits one issuance atomically (store.IssueTx).
func (s *Store) Issue(ctx context.Context, is store.Issuance) error {
	return s.Update(ctx, func(tx store.Tx) error { return store.IssueTx(tx, is) })
}

// AppendEvent appends one audit event (for decisions that store nothing else).
func (s *Store) AppendEvent(ctx context.Context, ev store.Event) error {
	return s.Update(ctx, func(tx store.Tx) error { return store.AppendEventTx(tx, &ev) })
}

func (s *Store) updateCert(ctx context.Context, serial string, ev store.Event, fn func(c *store.Cert) error) error {
	return s.Update(ctx, func(tx store.Tx) error { return store.UpdateCertTx(tx, serial, ev, fn) })
}

// PutInventory stores a node's reported NSS inventory; ev is appended only
// when the inventory changed. It reports whether it changed.
func (s *Store) PutInventory(
	ctx context.Context,
	node string,
	entries []store.InventoryEntry,
	at time.Time,
	ev store.Event,
) (bool, error) {
	var changed bool
	err := s.Update(ctx, func(tx store.Tx) (err error) {
		changed, err = store.PutInventoryTx(tx, node, entries, at, ev)
		return err
	})
	return changed, err
}

// RevokeNode revokes a node (store.RevokeNodeTx) and returns how many
// certificates it revoked.
func (s *Store) RevokeNode(ctx context.Context, node string, at time.Time, ev store.Event) (int, error) {
	var n int
	err := s.Update(ctx, func(tx store.Tx) (err error) {
		n, err = store.RevokeNodeTx(tx, node, at, ev)
		return err
	})
	return n, err
}

// ReadmitNode lets a revoked node be issued certificates again.
func (s *Store) ReadmitNode(ctx context.Context, node string, ev store.Event) error {
	return s.Update(ctx, func(tx store.Tx) error { return store.ReadmitNodeTx(tx, node, ev) })
}

// ForgetNode releases the names a revoked node holds and returns them.
func (s *Store) ForgetNode(ctx context.Context, node string, at time.Time, ev store.Event) ([]string, error) {
	var names []string
	err := s.Update(ctx, func(tx store.Tx) (err error) {
		names, err = store.ForgetNodeTx(tx, node, at, ev)
		return err
	})
	return names, err
}

// RevokeCert revokes one certificate (an admin's).
func (s *Store) RevokeCert(ctx context.Context, serial string, at time.Time, ev store.Event) (*store.Cert, error) {
	var c *store.Cert
	err := s.Update(ctx, func(tx store.Tx) (err error) {
		c, err = store.RevokeCertTx(tx, serial, at, ev)
		return err
	})
	return c, err
}

// MarkDue records that an active certificate is due (for reason) and
// counts as overdue after graceUntil.
func (s *Store) MarkDue(
	ctx context.Context,
	serial string,
	at time.Time,
	reason string,
	graceUntil time.Time,
	ev store.Event,
) error {
	return s.updateCert(ctx, serial, ev, func(c *store.Cert) error { return c.MarkDue(at, reason, graceUntil) })
}

// MarkOverdue records that a due certificate was still not rotated at `at`.
func (s *Store) MarkOverdue(ctx context.Context, serial string, at time.Time, ev store.Event) error {
	return s.updateCert(ctx, serial, ev, func(c *store.Cert) error { return c.MarkOverdue(at) })
}

// Reschedule moves a certificate's rotate_after (forced rotation). A
// certificate already due keeps its due state.
func (s *Store) Reschedule(ctx context.Context, serial string, at time.Time, ev store.Event) error {
	return s.updateCert(ctx, serial, ev, func(c *store.Cert) error { return c.Reschedule(at) })
}
