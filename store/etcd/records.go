package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
func (s *Store) kEvent(seq uint64) string  { return fmt.Sprintf("%sevents/%016x", s.p, seq) }
func (s *Store) kNotice(seq uint64) string { return fmt.Sprintf("%snotices/%016x", s.p, seq) }

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

// getCerts reads certificates by serial in one transaction per chunk,
// keeping the order.
func (s *Store) getCerts(ctx context.Context, serials []string) ([]*store.Cert, error) {
	out := make([]*store.Cert, 0, len(serials))
	for len(serials) > 0 {
		part := serials[:min(len(serials), s.maxOps)]
		serials = serials[len(part):]
		ops := make([]clientv3.Op, len(part))
		for i, sn := range part {
			ops[i] = clientv3.OpGet(s.kCert(sn))
		}
		cctx, cancel := s.ctx(ctx)
		resp, err := s.cli.Txn(cctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return nil, unavailable("get certificates", err)
		}
		for i, r := range resp.Responses {
			kvs := r.GetResponseRange().Kvs
			if len(kvs) == 0 {
				return nil, fmt.Errorf("store/etcd: index names certificate %s, which is missing", part[i])
			}
			c := new(store.Cert)
			if err := json.Unmarshal(kvs[0].Value, c); err != nil {
				return nil, fmt.Errorf("store/etcd: decode certificate %s: %w", part[i], err)
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// CA returns the CA material, or store.ErrNotFound before init.
func (s *Store) CA(ctx context.Context) (*store.CA, error) {
	var ca store.CA
	if err := s.getJSON(ctx, s.kCA(), &ca); err != nil {
		return nil, err
	}
	return &ca, nil
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

// Cert returns a certificate by serial.
func (s *Store) Cert(ctx context.Context, serial string) (*store.Cert, error) {
	var c store.Cert
	if err := s.getJSON(ctx, s.kCert(serial), &c); err != nil {
		return nil, err
	}
	return &c, nil
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
func (s *Store) scan(ctx context.Context, prefix, from string, keysOnly bool, fn func(key string, val []byte) (bool, error)) error {
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

// ListCerts returns certificates matching f in serial order, and the
// cursor for the next page ("" when there is none).
func (s *Store) ListCerts(ctx context.Context, f store.CertFilter) ([]*store.Cert, string, error) {
	limit := f.PageSize()
	var out []*store.Cert
	next := ""
	take := func(c *store.Cert) bool {
		if !f.Match(c) {
			return true
		}
		if len(out) == limit {
			next = out[len(out)-1].Serial
			return false
		}
		out = append(out, c)
		return true
	}
	if f.Node != "" {
		prefix := s.kByNode(f.Node, "")
		from := ""
		if f.After != "" {
			from = prefix + f.After + "\x00"
		}
		var serials []string
		if err := s.scan(ctx, prefix, from, true, func(k string, _ []byte) (bool, error) {
			serials = append(serials, strings.TrimPrefix(k, prefix))
			return true, nil
		}); err != nil {
			return nil, "", err
		}
		certs, err := s.getCerts(ctx, serials)
		if err != nil {
			return nil, "", err
		}
		for _, c := range certs {
			if !take(c) {
				break
			}
		}
		return out, next, nil
	}
	prefix := s.kCert("")
	from := ""
	if f.After != "" {
		from = prefix + f.After + "\x00"
	}
	err := s.scan(ctx, prefix, from, false, func(k string, v []byte) (bool, error) {
		c := new(store.Cert)
		if err := json.Unmarshal(v, c); err != nil {
			return false, fmt.Errorf("store/etcd: decode %s: %w", k, err)
		}
		return take(c), nil
	})
	return out, next, err
}

// ListEvents returns audit events after f.AfterSeq in order, and whether
// more follow.
func (s *Store) ListEvents(ctx context.Context, f store.EventFilter) ([]*store.Event, bool, error) {
	limit := f.PageSize()
	var out []*store.Event
	more := false
	err := s.scan(ctx, s.p+"events/", s.kEvent(f.AfterSeq+1), false, func(_ string, v []byte) (bool, error) {
		var e store.Event
		if err := json.Unmarshal(v, &e); err != nil {
			return false, fmt.Errorf("store/etcd: decode event: %w", err)
		}
		if !f.Match(&e) {
			return true, nil
		}
		if len(out) == limit {
			more = true
			return false, nil
		}
		out = append(out, &e)
		return true, nil
	})
	return out, more, err
}

// VerifyAudit recomputes the hash chain over every event.
func (s *Store) VerifyAudit(ctx context.Context) (uint64, error) {
	var v store.ChainVerifier
	err := s.scan(ctx, s.p+"events/", "", false, func(_ string, raw []byte) (bool, error) { return true, v.Next(raw) })
	return v.Count(), err
}

// CertCounts counts certificates by kind and state at now (a full scan;
// callers cache the result).
func (s *Store) CertCounts(ctx context.Context, now time.Time) (map[[2]string]int, error) {
	out := map[[2]string]int{}
	err := s.scan(ctx, s.kCert(""), "", false, func(_ string, v []byte) (bool, error) {
		k, err := store.CountKey(v, now)
		out[k]++
		return err == nil, err
	})
	return out, err
}

// CertByRequest returns the certificate issued for a Kubernetes CSR UID.
func (s *Store) CertByRequest(ctx context.Context, uid string) (*store.Cert, error) {
	cctx, cancel := s.ctx(ctx)
	resp, err := s.cli.Get(cctx, s.kRequest(uid))
	cancel()
	if err != nil {
		return nil, unavailable("get", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, store.ErrNotFound
	}
	return s.Cert(ctx, string(resp.Kvs[0].Value))
}

// Node returns what is known about a node.
func (s *Store) Node(ctx context.Context, name string) (*store.NodeInfo, error) {
	var n store.NodeInfo
	if err := s.getJSON(ctx, s.kNode(name), &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// ActiveNodes returns the names of known nodes, in order.
func (s *Store) ActiveNodes(ctx context.Context) ([]string, error) {
	var out []string
	prefix := s.kNode("")
	err := s.scan(ctx, prefix, "", true, func(k string, _ []byte) (bool, error) {
		out = append(out, strings.TrimPrefix(k, prefix))
		return true, nil
	})
	return out, err
}
