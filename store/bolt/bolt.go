// Package bolt is the embedded store backend: one bbolt file in the data
// directory, written by one process.
//
// Bucket tree (schema version 1):
//
//	meta/
//	    schema_version   -> decimal uint
//	    audit_head       -> JSON {seq, hash} of the newest event
//	    rewritten_ca     -> SHA-256 of ca/current when Compact last rewrote the file
//	ca/
//	    current          -> JSON store.CA (root certificate and key)
//	certs/
//	    <serial>         -> JSON store.Cert
//	by_node/
//	    <node> 0x00 <serial>           -> ""   (every cert of a node)
//	by_rotate/
//	    <rotate_after: 8-byte BE unix ns> <serial> -> ""  (active node certs not yet due)
//	by_overdue/                                            (schema 2)
//	    <grace_until: 8-byte BE unix ns> <serial> -> ""   (due, not yet rotated nor overdue)
//	overdue/                                               (schema 2)
//	    <serial>         -> ""   (overdue: grace ended, still not rotated)
//	revoked/                                               (schema 2)
//	    <serial>         -> ""   (revoked certificates, for the CRL)
//	by_request/                                            (schema 2)
//	    <Kubernetes CSR UID> -> serial issued for it
//	active/                                                (schema 2)
//	    <kind> 0x00 <node> -> serial of the node's active certificate of that kind
//	nodes/                                                 (schema 2)
//	    <node>           -> JSON store.NodeInfo (reported NSS inventory)
//	names/
//	    <common name>    -> node identity holding it (lower case from schema 3)
//	tokens/
//	    <token id>       -> JSON store.Token (secret hash only)
//	events/
//	    <seq: 8-byte BE> -> JSON store.Event (hash-chained)
//
// The records and their rules live in package store (store.IssueTx, ...,
// store.ListCertsOf, ...); this package maps their keys to the buckets
// above (kv.go: big-endian times and sequence numbers, a 0 byte after a
// node or kind) and runs them. Writes go through one committer goroutine
// that runs every queued operation in one read-write transaction and one
// fsync (group commit), so durability costs one fsync per batch, not per
// request. Each operation's writes wait in an overlay until it succeeds,
// so a failed operation writes nothing and its error goes to its caller
// alone; a failing commit fails every operation in the batch.
package bolt

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/ipsecca/ipsecca/store"
)

// FileName is the name of the database file inside the data directory.
const FileName = "ipsecca.db"

var (
	bucketMeta     = []byte("meta")
	bucketCA       = []byte("ca")
	bucketCerts    = []byte("certs")
	bucketByNode   = []byte("by_node")
	bucketByRotate = []byte("by_rotate")
	bucketNames    = []byte("names")
	bucketTokens   = []byte("tokens")
	bucketEvents   = []byte("events")
	bucketOverdue  = []byte("by_overdue")
	bucketNodes    = []byte("nodes")
	bucketOverdueN = []byte("overdue")
	bucketRevoked  = []byte("revoked")
	bucketRequests = []byte("by_request")
	bucketActive   = []byte("active")

	keySchemaVersion = []byte("schema_version")
	keyAuditHead     = []byte("audit_head")
	keyCurrentCA     = []byte("current")
)

// migrations[i] moves a database from schema version i to i+1. Append
// only; never edit a step that has shipped.
var migrations = []func(tx *bbolt.Tx) error{
	// 0 -> 1: the initial bucket tree.
	func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketCA, bucketCerts, bucketByNode, bucketByRotate, bucketNames, bucketTokens, bucketEvents} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	// 1 -> 2: rotation tracking and node inventory.
	func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketOverdue, bucketNodes, bucketOverdueN, bucketRevoked, bucketRequests, bucketActive} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	// 2 -> 3: certificate names in canonical (lower-case) form.
	lowerNames,
}

// SchemaVersion is the schema version this code writes.
var SchemaVersion = len(migrations)

// maxBatch bounds how many operations share one transaction.
const maxBatch = 1024

// Store is a bbolt-backed store. It is safe for concurrent use.
type Store struct {
	store.Records // the record operations and queries, over this engine

	// dbMu guards db, which Compact replaces: transactions hold it shared,
	// Compact exclusively. A transaction's function must not start another.
	dbMu  sync.RWMutex
	db    *bbolt.DB
	path  string
	queue *store.Queue[*op]
	wg    sync.WaitGroup

	commits atomic.Uint64 // transactions committed by the committer

	closeOnce sync.Once
}

type op struct {
	fn   func(tx *bbolt.Tx) error
	done chan error
}

// rejectError marks an operation's own failure, raised before it wrote
// anything, so the rest of its batch can still commit.
type rejectError struct{ err error }

func (e rejectError) Error() string { return e.err.Error() }
func (e rejectError) Unwrap() error { return e.err }

func reject(err error) error { return rejectError{err} }

// Open opens (creating if needed) the database in dir and migrates it to
// the current schema. The file is created 0600.
func Open(dir string) (*Store, error) {
	path := filepath.Join(dir, FileName)
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 2 * time.Second, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf(
				"store: %s is locked by another process (one ipsecca serve per data directory)",
				path,
			)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := migrate(db); err != nil {
		db.Close()
		return nil, err
	}
	if err := removeStaleRewrite(path); err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db, path: path, queue: store.NewQueue[*op](maxBatch)}
	s.Records = store.Records{E: s}
	s.wg.Add(1)
	go s.committer()
	return s, nil
}

func migrate(db *bbolt.DB) error {
	return db.Update(func(tx *bbolt.Tx) error {
		v := 0
		if m := tx.Bucket(bucketMeta); m != nil {
			if raw := m.Get(keySchemaVersion); raw != nil {
				n, err := strconv.Atoi(string(raw))
				if err != nil {
					return fmt.Errorf("store: bad schema version %q", raw)
				}
				v = n
			}
		}
		if v > len(migrations) {
			return fmt.Errorf(
				"store: database schema version %d is newer than this ipsecca (%d); upgrade ipsecca",
				v,
				len(migrations),
			)
		}
		for ; v < len(migrations); v++ {
			if err := migrations[v](tx); err != nil {
				return fmt.Errorf("store: migrate to schema %d: %w", v+1, err)
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchemaVersion, []byte(strconv.Itoa(v)))
	})
}

// Close stops the committer and closes the file. Pending writes fail.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.queue.Close()
		s.wg.Wait()
		s.dbMu.Lock()
		err = s.db.Close()
		s.dbMu.Unlock()
	})
	return err
}

// Stats reports the write transactions committed (each holds a batch of
// operations); a single-writer file has no conflicts.
func (s *Store) Stats() (commits, conflicts uint64) { return s.commits.Load(), 0 }

// Path is the database file.
func (s *Store) Path() string { return s.path }

func (s *Store) committer() {
	defer s.wg.Done()
	for {
		batch := s.queue.Next(maxBatch, func(o *op) { o.done <- store.ErrUnavailable })
		if batch == nil {
			return
		}
		s.commit(batch)
	}
}

func (s *Store) commit(batch []*op) {
	errs := make([]error, len(batch))
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for _, name := range ascendingBuckets {
			tx.Bucket(name).FillPercent = ascendingFill
		}
		for i, o := range batch {
			err := o.fn(tx)
			var rej rejectError
			if errors.As(err, &rej) {
				errs[i] = rej.err
				continue
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	s.commits.Add(1)
	for i, o := range batch {
		switch {
		case err != nil:
			o.done <- fmt.Errorf("%w: commit: %v", store.ErrUnavailable, err)
		default:
			o.done <- errs[i]
		}
	}
}

// ascendingBuckets are keyed by ascending values (serials that start with
// the issue time, event sequence numbers, due times): new keys land in the
// last page, so a page split leaves the left page ascendingFill full
// instead of bbolt's default half, for fewer pages to write and keep.
var ascendingBuckets = [][]byte{bucketCerts, bucketEvents, bucketByRotate}

const ascendingFill = 0.9

// update runs fn in a group-committed write transaction and returns once
// the transaction is durable (or failed). fn must return reject(err) for
// failures found before it wrote anything.
func (s *Store) update(ctx context.Context, fn func(tx *bbolt.Tx) error) error {
	o := &op{fn: fn, done: make(chan error, 1)}
	if err := s.queue.Submit(ctx, o); err != nil {
		return err
	}
	// Once queued the operation will be committed or failed; wait for the
	// outcome even if ctx ends, so a caller never mistakes a stored
	// certificate for a lost one.
	return <-o.done
}

func (s *Store) view(fn func(tx *bbolt.Tx) error) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	return s.db.View(fn)
}

func getJSON(b *bbolt.Bucket, key []byte, v any) error {
	raw := b.Get(key)
	if raw == nil {
		return store.ErrNotFound
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("store: decode %s/%s: %w", "record", key, err)
	}
	return nil
}

func putJSON(b *bbolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

func u64(n uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return b[:]
}

func rotateKey(t time.Time, serial string) []byte {
	return append(u64(uint64(t.UnixNano())), serial...)
}

func nodeKey(node, serial string) []byte {
	k := make([]byte, 0, len(node)+1+len(serial))
	k = append(k, node...)
	k = append(k, 0)
	return append(k, serial...)
}

// Check runs bbolt's consistency check over the whole file.
func (s *Store) Check() error {
	return s.view(func(tx *bbolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}

// Stat reports the size of the database file (for logs and metrics).
func (s *Store) Stat() (os.FileInfo, error) { return os.Stat(s.path) }

func activeKey(kind store.Kind, node string) []byte {
	k := make([]byte, 0, len(kind)+1+len(node))
	k = append(k, kind...)
	k = append(k, 0)
	return append(k, node...)
}
