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
