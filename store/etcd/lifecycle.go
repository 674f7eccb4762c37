package etcd

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ipsecca/ipsecca/store"
)

// lowerNames stores every held certificate name in canonical (lower-case)
// form, as store/bolt's schema 3 does; names written by earlier versions
// may hold upper case. It reads only the names' keys when there is nothing
// to move, and is safe to run on every replica at once.
func (s *Store) lowerNames(ctx context.Context) error {
	prefix := s.kName("")
	var upper []string
	if err := s.scan(ctx, prefix, "", true, func(k string, _ []byte) (bool, error) {
		if cn := strings.TrimPrefix(k, prefix); store.CanonicalName(cn) != cn {
			upper = append(upper, cn)
		}
		return true, nil
	}); err != nil || len(upper) == 0 {
		return err
	}
	return s.update(ctx, func(t *txn) error {
		var clashes []string
		for _, cn := range upper {
			owner, ok := t.get(s.kName(cn))
			if !ok {
				continue
			}
			lower := store.CanonicalName(cn)
			if held, ok := t.get(s.kName(lower)); ok && string(held) != string(owner) {
				clashes = append(clashes, fmt.Sprintf("%q (node %q) and %q (node %q)", cn, owner, lower, held))
			} else {
				t.put(s.kName(lower), owner)
			}
			t.del(s.kName(cn))
		}
		if len(clashes) == 0 {
			return nil
		}
		ev := store.Event{Time: time.Now().UTC(), Type: store.EventNameClash, Actor: "migrate",
			Detail: map[string]string{"clashes": fmt.Sprint(clashes)}}
		return store.AppendEventTx(kvTx{s, t}, &ev)
	})
}
