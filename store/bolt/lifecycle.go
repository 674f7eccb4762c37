package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/ipsecca/ipsecca/store"
)

// nodeInfo returns the node's record, or nil when it has none.
func nodeInfo(tx *bbolt.Tx, node string) (*store.NodeInfo, error) {
	info := new(store.NodeInfo)
	err := getJSON(tx.Bucket(bucketNodes), []byte(node), info)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return info, nil
}

// revokedNode returns the record of a revoked node, or store.ErrNotRevoked.
func revokedNode(tx *bbolt.Tx, node string) (*store.NodeInfo, error) {
	info, err := nodeInfo(tx, node)
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
	return s.update(ctx, func(tx *bbolt.Tx) error {
		info, err := revokedNode(tx, node)
		if err != nil {
			return err
		}
		info.Revoked = false
		if err := putJSON(tx.Bucket(bucketNodes), []byte(node), info); err != nil {
			return err
		}
		return appendEvent(tx, &ev)
	})
}

// ForgetNode releases every certificate name a revoked node holds, so
// another node (a re-provisioned chassis) may take them. The node stays
// revoked; its certificates stay in the store for the record. It returns
// the names released.
func (s *Store) ForgetNode(ctx context.Context, node string, at time.Time, ev store.Event) ([]string, error) {
	var released []string
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		released = nil
		info, err := revokedNode(tx, node)
		if err != nil {
			return err
		}
		names := tx.Bucket(bucketNames)
		seen := map[string]bool{}
		release := func(cn string) error {
			if cn == "" || seen[cn] || string(names.Get([]byte(cn))) != node {
				return nil
			}
			seen[cn] = true
			released = append(released, cn)
			return names.Delete([]byte(cn))
		}
		certs := tx.Bucket(bucketCerts)
		prefix := nodeKey(node, "")
		cur := tx.Bucket(bucketByNode).Cursor()
		var cns []string
		for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
			var c store.Cert
			if err := getJSON(certs, k[len(prefix):], &c); err != nil {
				return err
			}
			if c.Kind == store.KindNode {
				cns = append(cns, c.CommonName)
			}
		}
		for _, cn := range append(cns, info.CommonName) {
			if err := release(cn); err != nil {
				return err
			}
		}
		info.CommonName, info.ForgottenAt = "", at.UTC()
		if err := putJSON(tx.Bucket(bucketNodes), []byte(node), info); err != nil {
			return err
		}
		ev.Detail = store.ForgetDetail(ev.Detail, released)
		return appendEvent(tx, &ev)
	})
	return released, err
}

// RevokeCert revokes one certificate (an admin's): it no longer
// authenticates and is listed in the CRL. store.ErrNotFound when there is
// no such certificate, store.ErrRevoked when it already is.
func (s *Store) RevokeCert(ctx context.Context, serial string, at time.Time, ev store.Event) (*store.Cert, error) {
	var out *store.Cert
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		certs := tx.Bucket(bucketCerts)
		c := new(store.Cert)
		if err := getJSON(certs, []byte(serial), c); err != nil {
			return reject(err)
		}
		if c.State == store.StateRevoked {
			return reject(fmt.Errorf("%w: certificate %s is already revoked", store.ErrRevoked, serial))
		}
		active := tx.Bucket(bucketActive)
		if key := activeKey(c.Kind, c.Node); string(active.Get(key)) == serial {
			if err := active.Delete(key); err != nil {
				return err
			}
		}
		if err := unindexRotation(tx, c); err != nil {
			return err
		}
		c.State, c.RevokedAt = store.StateRevoked, at.UTC()
		if err := putJSON(certs, []byte(serial), c); err != nil {
			return err
		}
		if err := tx.Bucket(bucketRevoked).Put([]byte(serial), nil); err != nil {
			return err
		}
		out = c
		return appendEvent(tx, &ev)
	})
	return out, err
}

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
		return appendEvent(tx, &ev)
	}
	return nil
}
