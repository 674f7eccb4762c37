package bolt

import (
	"bytes"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/ipsecca/ipsecca/store"
)

// lowerNames (schema 3) stores every held certificate name in canonical
// (lower-case) form. Two nodes holding names that differ only in case
// keep the first in key order; the other is reported, not silently lost.
func lowerNames(tx *bbolt.Tx) error {
	names := tx.Bucket(bucketNames)
	type kv struct{ k, v []byte }
	var moves []kv
	if err := names.ForEach(func(k, v []byte) error {
		if lk := store.CanonicalName(string(k)); lk != string(k) {
			moves = append(moves, kv{bytes.Clone(k), bytes.Clone(v)})
		}
		return nil
	}); err != nil {
		return err
	}
	var clashes []string
	for _, m := range moves {
		lk := []byte(store.CanonicalName(string(m.k)))
		if owner := names.Get(lk); owner != nil && !bytes.Equal(owner, m.v) {
			clashes = append(clashes, fmt.Sprintf("%q (node %q) and %q (node %q)", m.k, m.v, lk, owner))
		} else if err := names.Put(lk, m.v); err != nil {
			return err
		}
		if err := names.Delete(m.k); err != nil {
			return err
		}
	}
	if len(clashes) > 0 {
		ev := store.Event{Time: time.Now().UTC(), Type: store.EventNameClash, Actor: "migrate",
			Detail: map[string]string{"clashes": fmt.Sprint(clashes)}}
		kv := newKV(tx)
		if err := store.AppendEventTx(kv, &ev); err != nil {
			return err
		}
		return kv.apply()
	}
	return nil
}
