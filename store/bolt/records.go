package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/ipsecca/ipsecca/store"
)

// CA returns the CA material, or store.ErrNotFound before init.
func (s *Store) CA(_ context.Context) (*store.CA, error) {
	var ca store.CA
	err := s.view(func(tx *bbolt.Tx) error { return getJSON(tx.Bucket(bucketCA), keyCurrentCA, &ca) })
	if err != nil {
		return nil, err
	}
	return &ca, nil
}

// CreateCA stores the CA material and its creation event; store.ErrExists
// if a CA is already there (the caller then loads that one).
func (s *Store) CreateCA(ctx context.Context, ca *store.CA, ev store.Event) error {
	return s.update(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketCA)
		if b.Get(keyCurrentCA) != nil {
			return reject(store.ErrExists)
		}
		if err := putJSON(b, keyCurrentCA, ca); err != nil {
			return err
		}
		return appendEvent(tx, &ev)
	})
}

// PutToken stores a new bootstrap token with its creation event.
func (s *Store) PutToken(ctx context.Context, t *store.Token, ev store.Event) error {
	return s.update(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketTokens)
		if b.Get([]byte(t.ID)) != nil {
			return reject(store.ErrExists)
		}
		info, err := nodeInfo(tx, t.Node)
		if err != nil {
			return err
		}
		if err := info.CheckToken(nil); err != nil {
			return reject(err)
		}
		if info != nil {
			t.Epoch = info.Epoch
		}
		if err := putJSON(b, []byte(t.ID), t); err != nil {
			return err
		}
		return appendEvent(tx, &ev)
	})
}

// Token returns a stored token by id.
func (s *Store) Token(_ context.Context, id string) (*store.Token, error) {
	var t store.Token
	if err := s.view(func(tx *bbolt.Tx) error { return getJSON(tx.Bucket(bucketTokens), []byte(id), &t) }); err != nil {
		return nil, err
	}
	return &t, nil
}

// Cert returns a certificate by serial.
func (s *Store) Cert(_ context.Context, serial string) (*store.Cert, error) {
	var c store.Cert
	if err := s.view(func(tx *bbolt.Tx) error { return getJSON(tx.Bucket(bucketCerts), []byte(serial), &c) }); err != nil {
		return nil, err
	}
	return &c, nil
}

// NameOwner returns the node holding a certificate name, or "" when free.
func (s *Store) NameOwner(_ context.Context, cn string) (string, error) {
	var owner string
	err := s.view(func(tx *bbolt.Tx) error {
		owner = string(tx.Bucket(bucketNames).Get([]byte(cn)))
		return nil
	})
	return owner, err
}

// Issue commits one issuance atomically: the serial must be new, the name
// free or already the node's, the token (if any) unused; the node's earlier
// active certificates of the same kind become superseded.
func (s *Store) Issue(ctx context.Context, is store.Issuance) error {
	c := is.Cert
	return s.update(ctx, func(tx *bbolt.Tx) error {
		certs := tx.Bucket(bucketCerts)
		if certs.Get([]byte(c.Serial)) != nil {
			return reject(fmt.Errorf("%w: serial %s", store.ErrExists, c.Serial))
		}
		names := tx.Bucket(bucketNames)
		if c.Kind == store.KindNode {
			if owner := names.Get([]byte(c.CommonName)); owner != nil && string(owner) != c.Node {
				return reject(fmt.Errorf("%w: %q is held by node %q", store.ErrNameHeld, c.CommonName, owner))
			}
		}
		if is.RequestUID != "" {
			if prev := tx.Bucket(bucketRequests).Get([]byte(is.RequestUID)); prev != nil {
				return reject(fmt.Errorf("%w: request %s already has certificate %s", store.ErrExists, is.RequestUID, prev))
			}
		}
		if is.AuthSerial != "" && tx.Bucket(bucketRevoked).Get([]byte(is.AuthSerial)) != nil {
			return reject(fmt.Errorf("%w: certificate %s", store.ErrRevoked, is.AuthSerial))
		}
		var tok store.Token
		tokens := tx.Bucket(bucketTokens)
		if is.TokenID != "" {
			if err := getJSON(tokens, []byte(is.TokenID), &tok); err != nil {
				return reject(err)
			}
			if !tok.UsedAt.IsZero() {
				return reject(store.ErrTokenUsed)
			}
		}
		var info *store.NodeInfo
		if c.Kind == store.KindNode {
			var err error
			if info, err = nodeInfo(tx, c.Node); err != nil {
				return err
			}
			var used *store.Token
			if is.TokenID != "" {
				used = &tok
			}
			if err := info.CheckToken(used); err != nil {
				return reject(err)
			}
		}
		// Checks done; from here on every error aborts the batch.
		if is.TokenID != "" {
			tok.UsedAt = c.IssuedAt
			tok.UsedFor = c.Serial
			if err := putJSON(tokens, []byte(tok.ID), &tok); err != nil {
				return err
			}
		}
		superseded, err := supersede(tx, c)
		if err != nil {
			return err
		}
		if err := putJSON(certs, []byte(c.Serial), c); err != nil {
			return err
		}
		if err := tx.Bucket(bucketByNode).Put(nodeKey(c.Node, c.Serial), nil); err != nil {
			return err
		}
		if err := tx.Bucket(bucketActive).Put(activeKey(c.Kind, c.Node), []byte(c.Serial)); err != nil {
			return err
		}
		if is.RequestUID != "" {
			if err := tx.Bucket(bucketRequests).Put([]byte(is.RequestUID), []byte(c.Serial)); err != nil {
				return err
			}
		}
		if c.Kind == store.KindNode {
			if err := tx.Bucket(bucketByRotate).Put(rotateKey(c.RotateAfter, c.Serial), nil); err != nil {
				return err
			}
			if err := names.Put([]byte(c.CommonName), []byte(c.Node)); err != nil {
				return err
			}
			if info == nil {
				info = &store.NodeInfo{}
			}
			if info.Name == "" || info.CommonName != c.CommonName {
				info.Name, info.CommonName = c.Node, c.CommonName
				if err := putJSON(tx.Bucket(bucketNodes), []byte(c.Node), info); err != nil {
					return err
				}
			}
		}
		ev := is.Event
		if err := appendEvent(tx, &ev); err != nil {
			return err
		}
		for _, old := range superseded {
			if is.OnSupersede == nil {
				break
			}
			if e := is.OnSupersede(old); e != nil {
				if err := appendEvent(tx, e); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// supersede marks the node's active certificate of c's kind (found through
// the active index, so the cost does not grow with the node's history) as
// superseded by c, drops it from the rotation indexes and returns it.
func supersede(tx *bbolt.Tx, c *store.Cert) ([]*store.Cert, error) {
	active := tx.Bucket(bucketActive)
	key := activeKey(c.Kind, c.Node)
	serial := active.Get(key)
	if serial == nil {
		return nil, nil
	}
	old := new(store.Cert)
	if err := getJSON(tx.Bucket(bucketCerts), serial, old); err != nil {
		return nil, err
	}
	if old.State != store.StateActive {
		return nil, nil
	}
	old.State = store.StateSuperseded
	old.SupersededBy = c.Serial
	if err := putJSON(tx.Bucket(bucketCerts), serial, old); err != nil {
		return nil, err
	}
	if err := unindexRotation(tx, old); err != nil {
		return nil, err
	}
	return []*store.Cert{old}, nil
}

// unindexRotation removes c from whichever rotation index holds it.
func unindexRotation(tx *bbolt.Tx, c *store.Cert) error {
	if c.Kind != store.KindNode {
		return nil
	}
	if err := tx.Bucket(bucketByRotate).Delete(rotateKey(c.RotateAfter, c.Serial)); err != nil {
		return err
	}
	if !c.GraceUntil.IsZero() {
		if err := tx.Bucket(bucketOverdue).Delete(rotateKey(c.GraceUntil, c.Serial)); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketOverdueN).Delete([]byte(c.Serial))
}

// AppendEvent appends one audit event (for decisions that store nothing
// else, such as denials).
func (s *Store) AppendEvent(ctx context.Context, ev store.Event) error {
	return s.update(ctx, func(tx *bbolt.Tx) error { return appendEvent(tx, &ev) })
}

type auditHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

func appendEvent(tx *bbolt.Tx, ev *store.Event) error {
	meta := tx.Bucket(bucketMeta)
	var head auditHead
	if raw := meta.Get(keyAuditHead); raw != nil {
		if err := json.Unmarshal(raw, &head); err != nil {
			return fmt.Errorf("store: decode audit head: %w", err)
		}
	}
	ev.Seq = head.Seq + 1
	ev.Prev = head.Hash
	h, err := store.HashEvent(*ev)
	if err != nil {
		return err
	}
	ev.Hash = h
	if err := putJSON(tx.Bucket(bucketEvents), u64(ev.Seq), ev); err != nil {
		return err
	}
	return putJSON(meta, keyAuditHead, auditHead{Seq: ev.Seq, Hash: ev.Hash})
}

// ListCerts returns certificates matching f in serial order, and the
// cursor for the next page ("" when there is none).
func (s *Store) ListCerts(_ context.Context, f store.CertFilter) ([]*store.Cert, string, error) {
	limit := f.PageSize()
	var out []*store.Cert
	next := ""
	err := s.view(func(tx *bbolt.Tx) error {
		certs := tx.Bucket(bucketCerts)
		take := func(serial []byte) (bool, error) {
			var c store.Cert
			if err := getJSON(certs, serial, &c); err != nil {
				return false, err
			}
			if !f.Match(&c) {
				return true, nil
			}
			if len(out) == limit {
				next = out[len(out)-1].Serial
				return false, nil
			}
			out = append(out, &c)
			return true, nil
		}
		if f.Node != "" {
			prefix := nodeKey(f.Node, "")
			cur := tx.Bucket(bucketByNode).Cursor()
			k, _ := cur.Seek(nodeKey(f.Node, f.After))
			if f.After != "" && bytes.Equal(k, nodeKey(f.Node, f.After)) {
				k, _ = cur.Next()
			}
			for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
				if more, err := take(k[len(prefix):]); err != nil || !more {
					return err
				}
			}
			return nil
		}
		cur := certs.Cursor()
		k, _ := cur.First()
		if f.After != "" {
			k, _ = cur.Seek([]byte(f.After))
			if bytes.Equal(k, []byte(f.After)) {
				k, _ = cur.Next()
			}
		}
		for ; k != nil; k, _ = cur.Next() {
			if more, err := take(k); err != nil || !more {
				return err
			}
		}
		return nil
	})
	return out, next, err
}

// ListEvents returns audit events after f.AfterSeq in order, and whether
// more follow.
func (s *Store) ListEvents(_ context.Context, f store.EventFilter) ([]*store.Event, bool, error) {
	limit := f.PageSize()
	var out []*store.Event
	more := false
	err := s.view(func(tx *bbolt.Tx) error {
		cur := tx.Bucket(bucketEvents).Cursor()
		for k, v := cur.Seek(u64(f.AfterSeq + 1)); k != nil; k, v = cur.Next() {
			var e store.Event
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("store: decode event: %w", err)
			}
			if !f.Match(&e) {
				continue
			}
			if len(out) == limit {
				more = true
				return nil
			}
			out = append(out, &e)
		}
		return nil
	})
	return out, more, err
}

// VerifyAudit recomputes the hash chain over every event and returns the
// number of events checked, or an error naming the first broken record.
func (s *Store) VerifyAudit(_ context.Context) (uint64, error) {
	var v store.ChainVerifier
	err := s.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketEvents).ForEach(func(_, raw []byte) error { return v.Next(raw) })
	})
	return v.Count(), err
}

// CertCounts counts certificates by kind and state at now (scans the
// certificate bucket; callers cache the result).
func (s *Store) CertCounts(_ context.Context, now time.Time) (map[[2]string]int, error) {
	out := map[[2]string]int{}
	err := s.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketCerts).ForEach(func(_, v []byte) error {
			k, err := store.CountKey(v, now)
			out[k]++
			return err
		})
	})
	return out, err
}

// CertByRequest returns the certificate issued for a Kubernetes CSR UID.
func (s *Store) CertByRequest(_ context.Context, uid string) (*store.Cert, error) {
	var c store.Cert
	err := s.view(func(tx *bbolt.Tx) error {
		serial := tx.Bucket(bucketRequests).Get([]byte(uid))
		if serial == nil {
			return store.ErrNotFound
		}
		return getJSON(tx.Bucket(bucketCerts), serial, &c)
	})
	if err != nil {
		return nil, err
	}
	return &c, nil
}
