package etcd

import (
	"context"
	"time"

	"github.com/ipsecca/ipsecca/store"
)

// The queries: each is one of the store package's (written once for every
// engine) over linearizable etcd reads.

// CA returns the CA material, or store.ErrNotFound before init.
func (s *Store) CA(ctx context.Context) (ca *store.CA, err error) {
	err = s.Read(ctx, func(v store.View) error { ca, err = store.CAOf(v); return err })
	return ca, err
}

// Cert returns a certificate by serial.
func (s *Store) Cert(ctx context.Context, serial string) (c *store.Cert, err error) {
	err = s.Read(ctx, func(v store.View) error { c, err = store.CertOf(v, serial); return err })
	return c, err
}

// Node returns what is known about a node.
func (s *Store) Node(ctx context.Context, name string) (n *store.NodeInfo, err error) {
	err = s.Read(ctx, func(v store.View) error { n, err = store.NodeOf(v, name); return err })
	return n, err
}

// ActiveNodes returns the names of the nodes the store knows, in order.
func (s *Store) ActiveNodes(ctx context.Context) (nodes []string, err error) {
	err = s.Read(ctx, func(v store.View) error { nodes, err = store.NodesOf(v); return err })
	return nodes, err
}

// CurrentCert returns the node's active node certificate.
func (s *Store) CurrentCert(ctx context.Context, node string) (c *store.Cert, err error) {
	err = s.Read(ctx, func(v store.View) error { c, err = store.CurrentCertOf(v, node); return err })
	return c, err
}

// CertByRequest returns the certificate issued for a Kubernetes CSR UID.
func (s *Store) CertByRequest(ctx context.Context, uid string) (c *store.Cert, err error) {
	err = s.Read(ctx, func(v store.View) error { c, err = store.CertByRequestOf(v, uid); return err })
	return c, err
}

// ListCerts returns certificates matching f in serial order, and the
// cursor for the next page ("" when there is none).
func (s *Store) ListCerts(ctx context.Context, f store.CertFilter) (certs []*store.Cert, next string, err error) {
	err = s.Read(ctx, func(v store.View) error { certs, next, err = store.ListCertsOf(v, f); return err })
	return certs, next, err
}

// ListEvents returns audit events after f.AfterSeq in order, and whether
// more follow.
func (s *Store) ListEvents(ctx context.Context, f store.EventFilter) (events []*store.Event, more bool, err error) {
	err = s.Read(ctx, func(v store.View) error { events, more, err = store.ListEventsOf(v, f); return err })
	return events, more, err
}

// VerifyAudit recomputes the audit hash chain and returns the number of
// records checked, or an error naming the first broken one.
func (s *Store) VerifyAudit(ctx context.Context) (n uint64, err error) {
	err = s.Read(ctx, func(v store.View) error { n, err = store.VerifyAuditOf(v); return err })
	return n, err
}

// CertCounts counts certificates by kind and state at now (a full scan;
// callers cache the result).
func (s *Store) CertCounts(ctx context.Context, now time.Time) (counts map[[2]string]int, err error) {
	err = s.Read(ctx, func(v store.View) error { counts, err = store.CertCountsOf(v, now); return err })
	return counts, err
}

// DueBefore returns active node certificates not yet marked due whose
// rotate_after is at or before t, soonest first.
func (s *Store) DueBefore(ctx context.Context, t time.Time, limit int) (certs []*store.Cert, err error) {
	err = s.Read(ctx, func(v store.View) error { certs, err = store.DueBeforeOf(v, t, limit); return err })
	return certs, err
}

// GraceEndedBefore returns due certificates whose grace ended at or before t.
func (s *Store) GraceEndedBefore(ctx context.Context, t time.Time, limit int) (certs []*store.Cert, err error) {
	err = s.Read(ctx, func(v store.View) error { certs, err = store.GraceEndedBeforeOf(v, t, limit); return err })
	return certs, err
}

// NextTimes returns the earliest rotate_after of a certificate not yet due
// and the earliest grace end of a due one (zero when there is none).
func (s *Store) NextTimes(ctx context.Context) (rotate, grace time.Time, err error) {
	err = s.Read(ctx, func(v store.View) error { rotate, grace, err = store.NextTimesOf(v); return err })
	return rotate, grace, err
}

// Schedule returns up to limit certificates waiting on rotation: overdue
// ones first, then due ones by grace end, then scheduled ones.
func (s *Store) Schedule(ctx context.Context, limit int) (certs []*store.Cert, err error) {
	err = s.Read(ctx, func(v store.View) error { certs, err = store.ScheduleOf(v, limit); return err })
	return certs, err
}

// OverdueCount is the number of overdue certificates.
func (s *Store) OverdueCount(ctx context.Context) (n int, err error) {
	err = s.Read(ctx, func(v store.View) error { n, err = store.OverdueCountOf(v); return err })
	return n, err
}

// Revoked returns every revoked certificate (for the CRL).
func (s *Store) Revoked(ctx context.Context) (certs []*store.Cert, err error) {
	err = s.Read(ctx, func(v store.View) error { certs, err = store.RevokedOf(v); return err })
	return certs, err
}

// Read runs a query over linearizable reads.
func (s *Store) Read(ctx context.Context, fn func(store.View) error) error {
	return fn(s.viewOf(ctx))
}
