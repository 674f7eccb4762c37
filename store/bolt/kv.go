package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	bbolt "go.etcd.io/bbolt"

	"github.com/ipsecca/ipsecca/store"
)

// kvTx is one record operation's view of a bbolt transaction (store.Tx):
// its writes wait in an overlay and reach the buckets only when the
// operation succeeds, so a failed operation writes nothing and the rest of
// its batch commits (as bbolt's own Batch would by re-running it alone).
type kvTx struct {
	tx   *bbolt.Tx
	over map[string]kvEntry
}

type kvEntry struct {
	val []byte
	del bool
}

func newKV(tx *bbolt.Tx) *kvTx { return &kvTx{tx: tx, over: map[string]kvEntry{}} }

// Update runs a record operation in a group-committed transaction.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.update(ctx, func(tx *bbolt.Tx) error {
		kv := newKV(tx)
		if err := fn(kv); err != nil {
			return reject(err)
		}
		return kv.apply()
	})
}

func (t *kvTx) Get(key string) ([]byte, bool) {
	if e, ok := t.over[key]; ok {
		return e.val, !e.del
	}
	b, k, err := boltKey(key)
	if err != nil {
		return nil, false
	}
	bk := t.tx.Bucket(b)
	if bk == nil {
		return nil, false
	}
	v := bk.Get(k)
	return v, v != nil
}

func (t *kvTx) Put(key string, val []byte) error {
	if val == nil {
		val = []byte{}
	}
	t.over[key] = kvEntry{val: val}
	return nil
}

func (t *kvTx) Delete(key string) error {
	t.over[key] = kvEntry{del: true}
	return nil
}

func (t *kvTx) Keys(prefix string) ([]string, error) {
	b, kp, err := boltKey(prefix)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	if bk := t.tx.Bucket(b); bk != nil {
		cur := bk.Cursor()
		for k, _ := cur.Seek(kp); k != nil && bytes.HasPrefix(k, kp); k, _ = cur.Next() {
			set[string(b)+"/"+decodeKey(string(b), k)] = true
		}
	}
	for k, e := range t.over {
		if strings.HasPrefix(k, prefix) {
			set[k] = !e.del
		}
	}
	out := make([]string, 0, len(set))
	for k, ok := range set {
		if ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out, nil
}

// apply writes the overlay into the buckets.
func (t *kvTx) apply() error {
	for key, e := range t.over {
		b, k, err := boltKey(key)
		if err != nil {
			return err
		}
		bk := t.tx.Bucket(b)
		if bk == nil {
			return fmt.Errorf("store: no bucket %q", b)
		}
		if e.del {
			err = bk.Delete(k)
		} else {
			err = bk.Put(k, e.val)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// boltKey maps a record key ("<space>/<rest>") to its bucket and the
// bucket's own key layout: sequence numbers and times as 8 big-endian
// bytes, and a 0 byte between a node (or kind) and what follows it. A
// prefix maps to the matching key prefix.
func boltKey(key string) (bucket, k []byte, err error) {
	space, rest, ok := strings.Cut(key, "/")
	if !ok {
		return nil, nil, fmt.Errorf("store: record key %q has no space", key)
	}
	switch space {
	case "events":
		if rest == "" {
			return []byte(space), nil, nil
		}
		n, err := hexU64(rest)
		return []byte(space), u64(n), err
	case "by_rotate", "by_overdue":
		if rest == "" {
			return []byte(space), nil, nil
		}
		ts, serial, _ := strings.Cut(rest, "/")
		n, err := hexU64(ts)
		return []byte(space), append(u64(n), serial...), err
	case "by_node", "active":
		a, b, _ := strings.Cut(rest, "/")
		if !strings.Contains(rest, "/") {
			return []byte(space), []byte(a), nil // a prefix inside the first part
		}
		k := make([]byte, 0, len(rest))
		k = append(append(append(k, a...), 0), b...)
		return []byte(space), k, nil
	}
	return []byte(space), []byte(rest), nil
}

// decodeKey is boltKey's inverse for a key of bucket space.
func decodeKey(space string, k []byte) string {
	switch space {
	case "events":
		if len(k) == 8 {
			return fmt.Sprintf("%016x", binary.BigEndian.Uint64(k))
		}
	case "by_rotate", "by_overdue":
		if len(k) >= 8 {
			return fmt.Sprintf("%016x/%s", binary.BigEndian.Uint64(k[:8]), k[8:])
		}
	case "by_node", "active":
		return strings.Replace(string(k), "\x00", "/", 1)
	}
	return string(k)
}

func hexU64(s string) (uint64, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("store: %q is not 16 hex digits", s)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return 0, fmt.Errorf("store: %q is not 16 hex digits", s)
	}
	return binary.BigEndian.Uint64(b), nil
}

var _ store.Tx = (*kvTx)(nil)

// kvView reads a bbolt read transaction as a store.View: one snapshot.
// Values are valid only inside the transaction, which the queries respect
// (they decode what they read before returning).
type kvView struct{ tx *bbolt.Tx }

// Read runs a query on a consistent snapshot.
func (s *Store) Read(_ context.Context, fn func(store.View) error) error {
	return s.view(func(tx *bbolt.Tx) error { return fn(kvView{tx}) })
}

func (v kvView) Get(key string) ([]byte, bool, error) {
	b, k, err := boltKey(key)
	if err != nil {
		return nil, false, err
	}
	bk := v.tx.Bucket(b)
	if bk == nil {
		return nil, false, nil
	}
	val := bk.Get(k)
	return val, val != nil, nil
}

func (v kvView) GetMany(keys []string) ([][]byte, error) {
	out := make([][]byte, len(keys))
	for i, k := range keys {
		val, _, err := v.Get(k)
		if err != nil {
			return nil, err
		}
		out[i] = val
	}
	return out, nil
}

func (v kvView) Scan(prefix, from string, keysOnly bool, fn func(key string, val []byte) (bool, error)) error {
	b, kp, err := boltKey(prefix)
	if err != nil {
		return err
	}
	bk := v.tx.Bucket(b)
	if bk == nil {
		return nil
	}
	seek := kp
	if from != "" {
		_, kf, err := boltKey(from)
		if err != nil {
			return err
		}
		if bytes.Compare(kf, kp) > 0 {
			seek = kf
		}
	}
	space := string(b)
	cur := bk.Cursor()
	for k, val := cur.Seek(seek); k != nil && bytes.HasPrefix(k, kp); k, val = cur.Next() {
		if keysOnly {
			val = nil
		}
		more, err := fn(space+"/"+decodeKey(space, k), val)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

func (v kvView) Count(prefix string) (int, error) {
	b, kp, err := boltKey(prefix)
	if err != nil {
		return 0, err
	}
	bk := v.tx.Bucket(b)
	if bk == nil {
		return 0, nil
	}
	if len(kp) == 0 {
		return bk.Stats().KeyN, nil
	}
	n := 0
	cur := bk.Cursor()
	for k, _ := cur.Seek(kp); k != nil && bytes.HasPrefix(k, kp); k, _ = cur.Next() {
		n++
	}
	return n, nil
}

var _ store.View = kvView{}
