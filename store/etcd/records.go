package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ipsecca/ipsecca/store"
)

// Key builders. Names never contain "/" (ca.ValidName), serials are hex.
func (s *Store) kCA() string                   { return s.p + "ca/current" }
func (s *Store) kHead() string                 { return s.p + "meta/audit_head" }
func (s *Store) kCert(serial string) string    { return s.p + "certs/" + serial }
func (s *Store) kToken(id string) string       { return s.p + "tokens/" + id }
func (s *Store) kName(cn string) string        { return s.p + "names/" + cn }
func (s *Store) kNode(node string) string      { return s.p + "nodes/" + node }
func (s *Store) kRequest(uid string) string    { return s.p + "by_request/" + uid }
func (s *Store) kRevoked(serial string) string { return s.p + "revoked/" + serial }
func (s *Store) kOverdueN(serial string) string {
	return s.p + "overdue/" + serial
}
func (s *Store) kByNode(node, serial string) string { return s.p + "by_node/" + node + "/" + serial }
func (s *Store) kActive(kind store.Kind, node string) string {
	return s.p + "active/" + string(kind) + "/" + node
}
func (s *Store) kEvent(seq uint64) string { return fmt.Sprintf("%sevents/%016x", s.p, seq) }

// timeKey orders by time: 16 hex digits of the unix nanoseconds (as
// unsigned, like store/bolt), then the serial.
func timeKey(t time.Time, serial string) string {
	return fmt.Sprintf("%016x/%s", uint64(t.UnixNano()), serial)
}
func (s *Store) kRotate(t time.Time, serial string) string {
	return s.p + "by_rotate/" + timeKey(t, serial)
}
func (s *Store) kOverdue(t time.Time, serial string) string {
	return s.p + "by_overdue/" + timeKey(t, serial)
}

// getJSON reads one record with a linearizable read.
func (s *Store) getJSON(ctx context.Context, key string, v any, opts ...clientv3.OpOption) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, key, opts...)
	if err != nil {
		return unavailable("get", err)
	}
	if len(resp.Kvs) == 0 {
		return store.ErrNotFound
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, v); err != nil {
		return fmt.Errorf("store/etcd: decode %s: %w", key, err)
	}
	return nil
}

// Token returns a stored token by id: an unused one from the replica's
// copy when it has it, else from etcd (any member first, then through
// consensus). The copy may lag another replica's use of the token; using
// it is checked again under the compare-and-swap.
func (s *Store) Token(ctx context.Context, id string) (*store.Token, error) {
	if tok, ok := s.mirror.token(id); ok {
		return tok, nil
	}
	var tok store.Token
	err := s.getJSON(ctx, s.kToken(id), &tok, clientv3.WithSerializable())
	if errors.Is(err, store.ErrNotFound) {
		err = s.getJSON(ctx, s.kToken(id), &tok)
	}
	if err != nil {
		return nil, err
	}
	return &tok, nil
}

// NameOwner returns the node holding a certificate name, or "" when free,
// from the replica's copy of the names when it is loaded (else from any
// etcd member). It is a pre-check: it may lag another replica's claim by
// the watch delay, and Issue checks again under the compare-and-swap.
func (s *Store) NameOwner(ctx context.Context, cn string) (string, error) {
	if owner, ok := s.mirror.nameOwner(cn); ok {
		return owner, nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.kName(cn), clientv3.WithSerializable())
	if err != nil {
		return "", unavailable("get", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

type auditHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
	// Write names the transaction that wrote the head (writer.count):
	// the compare-and-swap of the next one tests the whole value.
	Write string `json:"write,omitempty"`
}

// scan calls fn for each key-value under prefix from `from` (inclusive)
// in key order, a page at a time, until fn returns false.
func (s *Store) scan(
	ctx context.Context,
	prefix, from string,
	keysOnly bool,
	fn func(key string, val []byte) (bool, error),
) error {
	const page = 500
	end := clientv3.GetPrefixRangeEnd(prefix)
	if from == "" {
		from = prefix
	}
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(page)}
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		cctx, cancel := s.ctx(ctx)
		resp, err := s.cli.Get(cctx, from, opts...)
		cancel()
		if err != nil {
			return unavailable("range", err)
		}
		for _, kv := range resp.Kvs {
			more, err := fn(string(kv.Key), kv.Value)
			if err != nil || !more {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
