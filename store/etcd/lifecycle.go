package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ipsecca/ipsecca/store"
)

// nodeInfo returns the node's record as the batch sees it, or nil.
func (s *Store) nodeInfo(t *txn, node string) (*store.NodeInfo, error) {
	info := new(store.NodeInfo)
	err := t.getJSON(s.kNode(node), info)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return info, nil
}

// revokedNode returns the record of a revoked node, or store.ErrNotRevoked.
func (s *Store) revokedNode(t *txn, node string) (*store.NodeInfo, error) {
	info, err := s.nodeInfo(t, node)
	if err != nil {
		return nil, err
	}
	if info == nil || !info.Revoked {
		return nil, reject(fmt.Errorf("%w: node %q", store.ErrNotRevoked, node))
	}
	return info, nil
}

// ReadmitNode lets a revoked node be issued certificates again (with a
// token made after this call: earlier ones stay void).
func (s *Store) ReadmitNode(ctx context.Context, node string, ev store.Event) error {
	return s.update(ctx, func(t *txn) error {
		info, err := s.revokedNode(t, node)
		if err != nil {
			return err
		}
		info.Revoked = false
		if err := t.putJSON(s.kNode(node), info); err != nil {
			return err
		}
		return s.appendEvent(t, &ev)
	})
}

// ForgetNode releases every certificate name a revoked node holds (see
// store/bolt); it returns the names released.
func (s *Store) ForgetNode(ctx context.Context, node string, at time.Time, ev store.Event) ([]string, error) {
	var released []string
	err := s.update(ctx, func(t *txn) error {
		released = nil
		info, err := s.revokedNode(t, node)
		if err != nil {
			return err
		}
		prefix := s.kByNode(node, "")
		keys, err := t.keys(prefix)
		if err != nil {
			return reject(err)
		}
		var cns []string
		for _, k := range keys {
			var c store.Cert
			if err := t.getJSON(s.kCert(strings.TrimPrefix(k, prefix)), &c); err != nil {
				if len(t.misses) > 0 {
					continue // fetched for the next round
				}
				return reject(err)
			}
			if c.Kind == store.KindNode {
				cns = append(cns, c.CommonName)
			}
		}
		seen := map[string]bool{}
		for _, cn := range append(cns, info.CommonName) {
			if owner, ok := t.get(s.kName(cn)); cn == "" || seen[cn] || !ok || string(owner) != node {
				continue
			}
			seen[cn] = true
			released = append(released, cn)
			t.del(s.kName(cn))
		}
		info.CommonName, info.ForgottenAt = "", at.UTC()
		if err := t.putJSON(s.kNode(node), info); err != nil {
			return err
		}
		ev.Detail = store.ForgetDetail(ev.Detail, released)
		return s.appendEvent(t, &ev)
	})
	return released, err
}

// RevokeCert revokes one certificate (an admin's); see store/bolt.
func (s *Store) RevokeCert(ctx context.Context, serial string, at time.Time, ev store.Event) (*store.Cert, error) {
	var out *store.Cert
	err := s.update(ctx, func(t *txn) error {
		c := new(store.Cert)
		if err := t.getJSON(s.kCert(serial), c); err != nil {
			return reject(err)
		}
		if c.State == store.StateRevoked {
			return reject(fmt.Errorf("%w: certificate %s is already revoked", store.ErrRevoked, serial))
		}
		if cur, ok := t.get(s.kActive(c.Kind, c.Node)); ok && string(cur) == serial {
			t.del(s.kActive(c.Kind, c.Node))
		}
		s.unindexRotation(t, c)
		c.State, c.RevokedAt = store.StateRevoked, at.UTC()
		if err := t.putJSON(s.kCert(serial), c); err != nil {
			return err
		}
		t.put(s.kRevoked(serial), nil)
		out = c
		return s.appendEvent(t, &ev)
	})
	return out, err
}

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
		return s.appendEvent(t, &ev)
	})
}
