package bolt

import (
	"context"
	"encoding/binary"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/ipsecca/ipsecca/store"
)

// scanIndex returns the certificates of an index whose time key is at or
// before `before`, soonest first, at most limit.
func (s *Store) scanIndex(bucket []byte, before time.Time, limit int) ([]*store.Cert, error) {
	var out []*store.Cert
	err := s.view(func(tx *bbolt.Tx) error {
		certs := tx.Bucket(bucketCerts)
		cur := tx.Bucket(bucket).Cursor()
		for k, _ := cur.First(); k != nil && len(out) < limit; k, _ = cur.Next() {
			if int64(binary.BigEndian.Uint64(k[:8])) > before.UnixNano() {
				break
			}
			c := new(store.Cert)
			if err := getJSON(certs, k[8:], c); err != nil {
				return err
			}
			out = append(out, c)
		}
		return nil
	})
	return out, err
}

// DueBefore returns active node certificates not yet marked due whose
// rotate_after is at or before t, soonest first.
func (s *Store) DueBefore(_ context.Context, t time.Time, limit int) ([]*store.Cert, error) {
	return s.scanIndex(bucketByRotate, t, limit)
}

// GraceEndedBefore returns due certificates whose grace ended at or before t.
func (s *Store) GraceEndedBefore(_ context.Context, t time.Time, limit int) ([]*store.Cert, error) {
	return s.scanIndex(bucketOverdue, t, limit)
}

// NextTimes returns the earliest rotate_after of a certificate not yet due
// and the earliest grace end of a due one (zero when there is none).
func (s *Store) NextTimes(_ context.Context) (rotate, grace time.Time, err error) {
	err = s.view(func(tx *bbolt.Tx) error {
		if k, _ := tx.Bucket(bucketByRotate).Cursor().First(); k != nil {
			rotate = time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))).UTC()
		}
		if k, _ := tx.Bucket(bucketOverdue).Cursor().First(); k != nil {
			grace = time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))).UTC()
		}
		return nil
	})
	return rotate, grace, err
}

// MarkDue records that an active certificate is due (for reason) and
// counts as overdue after graceUntil.
func (s *Store) MarkDue(ctx context.Context, serial string, at time.Time, reason string, graceUntil time.Time, ev store.Event) error {
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

// CurrentCert returns the node's newest active node certificate.
func (s *Store) CurrentCert(_ context.Context, node string) (*store.Cert, error) {
	c := new(store.Cert)
	err := s.view(func(tx *bbolt.Tx) error {
		serial := tx.Bucket(bucketActive).Get(activeKey(store.KindNode, node))
		if serial == nil {
			return store.ErrNotFound
		}
		if err := getJSON(tx.Bucket(bucketCerts), serial, c); err != nil {
			return err
		}
		if c.State != store.StateActive {
			return store.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ActiveNodes returns the names of nodes with an active certificate, in order.
func (s *Store) ActiveNodes(_ context.Context) ([]string, error) {
	var out []string
	err := s.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketNodes).ForEach(func(k, _ []byte) error { out = append(out, string(k)); return nil })
	})
	return out, err
}

// Node returns what is known about a node.
func (s *Store) Node(_ context.Context, name string) (*store.NodeInfo, error) {
	var n store.NodeInfo
	if err := s.view(func(tx *bbolt.Tx) error { return getJSON(tx.Bucket(bucketNodes), []byte(name), &n) }); err != nil {
		return nil, err
	}
	return &n, nil
}

// Schedule returns up to limit certificates waiting on rotation: overdue
// ones first, then due ones by grace end, then scheduled ones by
// rotate_after.
func (s *Store) Schedule(_ context.Context, limit int) ([]*store.Cert, error) {
	var out []*store.Cert
	err := s.view(func(tx *bbolt.Tx) error {
		certs := tx.Bucket(bucketCerts)
		add := func(serial []byte) error {
			c := new(store.Cert)
			if err := getJSON(certs, serial, c); err != nil {
				return err
			}
			out = append(out, c)
			return nil
		}
		cur := tx.Bucket(bucketOverdueN).Cursor()
		for k, _ := cur.First(); k != nil && len(out) < limit; k, _ = cur.Next() {
			if err := add(k); err != nil {
				return err
			}
		}
		for _, b := range [][]byte{bucketOverdue, bucketByRotate} {
			cur := tx.Bucket(b).Cursor()
			for k, _ := cur.First(); k != nil && len(out) < limit; k, _ = cur.Next() {
				if err := add(k[8:]); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return out, err
}

// OverdueCount is the number of overdue certificates.
func (s *Store) OverdueCount(_ context.Context) (int, error) {
	n := 0
	err := s.view(func(tx *bbolt.Tx) error { n = tx.Bucket(bucketOverdueN).Stats().KeyN; return nil })
	return n, err
}

// Revoked returns every revoked certificate (for the CRL).
func (s *Store) Revoked(_ context.Context) ([]*store.Cert, error) {
	var out []*store.Cert
	err := s.view(func(tx *bbolt.Tx) error {
		certs := tx.Bucket(bucketCerts)
		return tx.Bucket(bucketRevoked).ForEach(func(k, _ []byte) error {
			c := new(store.Cert)
			if err := getJSON(certs, k, c); err != nil {
				return err
			}
			out = append(out, c)
			return nil
		})
	})
	return out, err
}
