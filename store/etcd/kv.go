package etcd

import (
	"context"
	"encoding/json"
	"strings"

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

// Read runs a query over linearizable reads.
func (s *Store) Read(ctx context.Context, fn func(store.View) error) error { return fn(s.viewOf(ctx)) }
