package etcd

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ipsecca/ipsecca/store"
)

// parseTimeKey splits "<%016x ns>/<serial>".
func parseTimeKey(k string) (time.Time, string, error) {
	ts, serial, ok := strings.Cut(k, "/")
	if !ok {
		return time.Time{}, "", fmt.Errorf("store/etcd: bad index key %q", k)
	}
	ns, err := strconv.ParseUint(ts, 16, 64)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("store/etcd: bad index key %q", k)
	}
	return time.Unix(0, int64(ns)).UTC(), serial, nil
}

// scanIndex returns the certificates of a time index at or before
// `before`, soonest first, at most limit.
func (s *Store) scanIndex(ctx context.Context, index string, before time.Time, limit int) ([]*store.Cert, error) {
	prefix := s.p + index + "/"
	var serials []string
	err := s.scan(ctx, prefix, "", true, func(k string, _ []byte) (bool, error) {
		t, serial, err := parseTimeKey(strings.TrimPrefix(k, prefix))
		if err != nil {
			return false, err
		}
		if t.UnixNano() > before.UnixNano() || len(serials) == limit {
			return false, nil
		}
		serials = append(serials, serial)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return s.getCerts(ctx, serials)
}

// DueBefore returns active node certificates not yet marked due whose
// rotate_after is at or before t, soonest first.
func (s *Store) DueBefore(ctx context.Context, t time.Time, limit int) ([]*store.Cert, error) {
	return s.scanIndex(ctx, "by_rotate", t, limit)
}

// GraceEndedBefore returns due certificates whose grace ended at or before t.
func (s *Store) GraceEndedBefore(ctx context.Context, t time.Time, limit int) ([]*store.Cert, error) {
	return s.scanIndex(ctx, "by_overdue", t, limit)
}

// first returns the time of an index's first key (zero when empty).
func (s *Store) first(ctx context.Context, index string) (time.Time, error) {
	prefix := s.p + index + "/"
	cctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(cctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
	if err != nil {
		return time.Time{}, unavailable("range", err)
	}
	if len(resp.Kvs) == 0 {
		return time.Time{}, nil
	}
	t, _, err := parseTimeKey(strings.TrimPrefix(string(resp.Kvs[0].Key), prefix))
	return t, err
}

// NextTimes returns the earliest rotate_after of a certificate not yet due
// and the earliest grace end of a due one (zero when there is none).
func (s *Store) NextTimes(ctx context.Context) (rotate, grace time.Time, err error) {
	if rotate, err = s.first(ctx, "by_rotate"); err != nil {
		return
	}
	grace, err = s.first(ctx, "by_overdue")
	return
}

// MarkDue records that an active certificate is due (for reason) and
// counts as overdue after graceUntil. Marking twice fails with
// store.ErrExists, on any replica: a rotation is announced once.
func (s *Store) MarkDue(ctx context.Context, serial string, at time.Time, reason string, graceUntil time.Time, ev store.Event) error {
	return s.updateCert(ctx, serial, ev, func(c *store.Cert) error { return c.MarkDue(at, reason, graceUntil) })
}

// MarkOverdue records that a due certificate was still not rotated at `at`.
func (s *Store) MarkOverdue(ctx context.Context, serial string, at time.Time, ev store.Event) error {
	return s.updateCert(ctx, serial, ev, func(c *store.Cert) error { return c.MarkOverdue(at) })
}

// Reschedule moves a certificate's rotate_after (forced rotation).
func (s *Store) Reschedule(ctx context.Context, serial string, at time.Time, ev store.Event) error {
	return s.updateCert(ctx, serial, ev, func(c *store.Cert) error { return c.Reschedule(at) })
}

// CurrentCert returns the node's active node certificate.
func (s *Store) CurrentCert(ctx context.Context, node string) (*store.Cert, error) {
	cctx, cancel := s.ctx(ctx)
	resp, err := s.cli.Get(cctx, s.kActive(store.KindNode, node))
	cancel()
	if err != nil {
		return nil, unavailable("get", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, store.ErrNotFound
	}
	c, err := s.Cert(ctx, string(resp.Kvs[0].Value))
	if err != nil {
		return nil, err
	}
	if c.State != store.StateActive {
		return nil, store.ErrNotFound
	}
	return c, nil
}

// Schedule returns up to limit certificates waiting on rotation: overdue
// ones first, then due ones by grace end, then scheduled ones.
func (s *Store) Schedule(ctx context.Context, limit int) ([]*store.Cert, error) {
	var serials []string
	add := func(prefix string, timed bool) error {
		return s.scan(ctx, prefix, "", true, func(k string, _ []byte) (bool, error) {
			if len(serials) >= limit {
				return false, nil
			}
			rest := strings.TrimPrefix(k, prefix)
			if timed {
				_, serial, err := parseTimeKey(rest)
				if err != nil {
					return false, err
				}
				rest = serial
			}
			serials = append(serials, rest)
			return true, nil
		})
	}
	if err := add(s.kOverdueN(""), false); err != nil {
		return nil, err
	}
	if err := add(s.p+"by_overdue/", true); err != nil {
		return nil, err
	}
	if err := add(s.p+"by_rotate/", true); err != nil {
		return nil, err
	}
	return s.getCerts(ctx, serials)
}

// OverdueCount is the number of overdue certificates.
func (s *Store) OverdueCount(ctx context.Context) (int, error) {
	cctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(cctx, s.kOverdueN(""), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, unavailable("count", err)
	}
	return int(resp.Count), nil
}

// Revoked returns every revoked certificate (for the CRL).
func (s *Store) Revoked(ctx context.Context) ([]*store.Cert, error) {
	prefix := s.kRevoked("")
	var serials []string
	if err := s.scan(ctx, prefix, "", true, func(k string, _ []byte) (bool, error) {
		serials = append(serials, strings.TrimPrefix(k, prefix))
		return true, nil
	}); err != nil {
		return nil, err
	}
	return s.getCerts(ctx, serials)
}
