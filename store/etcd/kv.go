package etcd

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/ipsecca/ipsecca/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// kvTx is a record operation's view of a batch (store.Tx): keys under the
// store's prefix, reads through the batch's overlay and cache (a key not
// read yet reads as absent and the batch runs again once it is fetched).
// Writing an audit event that replicas must hear of (store.Notice) also
// writes it under notices/, which the replicas watch.
type kvTx struct {
	s *Store
	t *txn
}

func (x kvTx) Get(key string) ([]byte, bool) { return x.t.get(x.s.p + key) }

func (x kvTx) Put(key string, val []byte) error {
	x.t.put(x.s.p+key, val)
	if seq, ok := strings.CutPrefix(key, "events/"); ok {
		var e struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(val, &e) == nil && store.Notice(e.Type) {
			x.t.put(x.s.p+"notices/"+seq, val)
		}
	}
	return nil
}

func (x kvTx) Delete(key string) error {
	x.t.del(x.s.p + key)
	return nil
}

func (x kvTx) Keys(prefix string) ([]string, error) {
	keys, err := x.t.keys(x.s.p + prefix)
	for i, k := range keys {
		keys[i] = strings.TrimPrefix(k, x.s.p)
	}
	return keys, err
}

// Update runs a record operation in a batch.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.update(ctx, func(t *txn) error { return fn(kvTx{s, t}) })
}

// The write operations: each is one of the store package's record
// operations (written once for every engine) run in a batch committed
// with a compare-and-swap on the audit head.

// CreateCA stores the CA material unless a CA is there (store.ErrExists:
// another replica created it first; the caller loads that one).
func (s *Store) CreateCA(ctx context.Context, ca *store.CA, ev store.Event) error {
	return s.Update(ctx, func(tx store.Tx) error { return store.CreateCATx(tx, ca, ev) })
}

// RenewCA replaces the CA material (store.ErrNotFound before create).
func (s *Store) RenewCA(ctx context.Context, ca *store.CA, ev store.Event) error {
	return s.Update(ctx, func(tx store.Tx) error { return store.RenewCATx(tx, ca, ev) })
}

// PutToken stores a new bootstrap token with its creation event.
func (s *Store) PutToken(ctx context.Context, tok *store.Token, ev store.Event) error {
	return s.Update(ctx, func(tx store.Tx) error { return store.PutTokenTx(tx, tok, ev) })
}

// Issue commits one issuance atomically (store.IssueTx).
func (s *Store) Issue(ctx context.Context, is store.Issuance) error {
	return s.Update(ctx, func(tx store.Tx) error { return store.IssueTx(tx, is) })
}

// AppendEvent appends one audit event.
func (s *Store) AppendEvent(ctx context.Context, ev store.Event) error {
	return s.Update(ctx, func(tx store.Tx) error { return store.AppendEventTx(tx, &ev) })
}

func (s *Store) updateCert(ctx context.Context, serial string, ev store.Event, fn func(c *store.Cert) error) error {
	return s.Update(ctx, func(tx store.Tx) error { return store.UpdateCertTx(tx, serial, ev, fn) })
}

// PutInventory stores a node's reported NSS inventory; ev is appended only
// when it changed. It reports whether it changed.
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

// RevokeNode revokes a node (store.RevokeNodeTx).
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

// kvView reads etcd as a store.View: each read linearizable, scans a page
// at a time, many keys in one transaction per chunk.
type kvView struct {
	s   *Store
	ctx context.Context
}

func (s *Store) viewOf(ctx context.Context) kvView { return kvView{s, ctx} }

func (v kvView) Get(key string) ([]byte, bool, error) {
	ctx, cancel := v.s.ctx(v.ctx)
	defer cancel()
	resp, err := v.s.cli.Get(ctx, v.s.p+key)
	if err != nil {
		return nil, false, unavailable("get", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, false, nil
	}
	val := resp.Kvs[0].Value
	if val == nil {
		val = []byte{}
	}
	return val, true, nil
}

func (v kvView) GetMany(keys []string) ([][]byte, error) {
	out := make([][]byte, 0, len(keys))
	for len(keys) > 0 {
		part := keys[:min(len(keys), v.s.maxOps)]
		keys = keys[len(part):]
		ops := make([]clientv3.Op, len(part))
		for i, k := range part {
			ops[i] = clientv3.OpGet(v.s.p + k)
		}
		ctx, cancel := v.s.ctx(v.ctx)
		resp, err := v.s.cli.Txn(ctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return nil, unavailable("get many", err)
		}
		for _, r := range resp.Responses {
			var val []byte
			if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
				val = kvs[0].Value
				if val == nil {
					val = []byte{}
				}
			}
			out = append(out, val)
		}
	}
	return out, nil
}

func (v kvView) Scan(prefix, from string, keysOnly bool, fn func(key string, val []byte) (bool, error)) error {
	if from != "" {
		from = v.s.p + from
	}
	return v.s.scan(v.ctx, v.s.p+prefix, from, keysOnly, func(k string, val []byte) (bool, error) {
		return fn(strings.TrimPrefix(k, v.s.p), val)
	})
}

func (v kvView) Count(prefix string) (int, error) {
	ctx, cancel := v.s.ctx(v.ctx)
	defer cancel()
	resp, err := v.s.cli.Get(ctx, v.s.p+prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, unavailable("count", err)
	}
	return int(resp.Count), nil
}

var _ store.View = kvView{}

// MarkDue records that an active certificate is due (for reason) and
// counts as overdue after graceUntil. Marking twice fails with
// store.ErrExists, on any replica: a rotation is announced once.
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

// Reschedule moves a certificate's rotate_after (forced rotation).
func (s *Store) Reschedule(ctx context.Context, serial string, at time.Time, ev store.Event) error {
	return s.updateCert(ctx, serial, ev, func(c *store.Cert) error { return c.Reschedule(at) })
}
