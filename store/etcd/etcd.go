// Package etcd is the replicated store backend: every ipsecca replica
// keeps its records in one etcd cluster, under a key prefix (default
// /ipsecca), so any replica can serve any request and losing one loses
// nothing.
//
// The records and their rules live in package store (written once for both
// engines over store.Tx and store.View); this package runs them in batches
// committed with a compare-and-swap, adds the notices/ feed, the replicas'
// mirror of tokens and names, election and cluster status.
//
// Key tree (under the prefix; the record keys of package store, JSON values):
//
//	meta/schema_version           -> decimal uint
//	meta/audit_head               -> JSON {seq, hash, write} of the newest event; written by EVERY transaction
//	ca/current                    -> JSON store.CA (key sealed under the replicas' KEK)
//	certs/<serial>                -> JSON store.Cert
//	by_node/<node>/<serial>       -> ""   (every cert of a node)
//	by_rotate/<%016x ns>/<serial> -> ""   (active node certs not yet due)
//	by_overdue/<%016x ns>/<serial>-> ""   (due, not yet rotated nor overdue)
//	overdue/<serial>              -> ""
//	revoked/<serial>              -> ""
//	by_request/<CSR UID>          -> serial
//	active/<kind>/<node>          -> serial of the node's active certificate of that kind
//	nodes/<node>                  -> JSON store.NodeInfo
//	names/<common name>           -> node holding it
//	tokens/<id>                   -> JSON store.Token (secret hash only)
//	events/<%016x seq>            -> JSON store.Event (hash-chained)
//	notices/<%016x seq>           -> the same, for the events store.Notice selects (what replicas watch)
//	leader/<lease>                -> replica id (etcd concurrency election)
//	replicas/<id>                 -> JSON store.Replica, on the replica's session lease
//
// Writes are serialisable across replicas without any process-local lock:
// every write transaction puts meta/audit_head with a value no other
// transaction writes (it names its writer and write count) and commits
// only if the head still holds the value its reads were made against (a
// compare-and-swap), so between a transaction's reads and its commit
// nothing else can have been written. One committer goroutine per replica
// runs the queued operations of a batch against an overlay of a read
// cache and commits the batch as one etcd transaction: one round of
// consensus per batch, not per certificate; a batch that loses the
// compare-and-swap to another replica runs again on fresh reads. A
// certificate is returned to its caller only after the transaction holding
// it succeeded.
package etcd

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/ipsecca/ipsecca/store"
)

// Defaults of Options.
const (
	DefaultPrefix         = "/ipsecca"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	// DefaultMaxTxnOps is etcd's own default --max-txn-ops. Raise both
	// together for larger batches.
	DefaultMaxTxnOps = 128
	// DefaultSessionTTL is the lease TTL of a replica's election session:
	// how long a dead leader keeps the scheduler before another takes it.
	DefaultSessionTTL = 10 * time.Second
)

// SchemaVersion is the schema version this code writes.
const SchemaVersion = 1

// maxBatch bounds how many queued operations one batch considers.
const maxBatch = 1024

// maxCache bounds the read cache; it is dropped whole when exceeded.
const maxCache = 200_000

// Options configure a Store.
type Options struct {
	Endpoints []string
	// TLS for the etcd client connection; nil for plain HTTP endpoints.
	TLS *tls.Config
	// Prefix of every key; DefaultPrefix when empty.
	Prefix string
	// DialTimeout bounds the first connection; DefaultDialTimeout when zero.
	DialTimeout time.Duration
	// RequestTimeout bounds each etcd request; DefaultRequestTimeout when
	// zero. Without quorum, calls fail with store.ErrUnavailable after it.
	RequestTimeout time.Duration
	// MaxTxnOps must not exceed the cluster's --max-txn-ops;
	// DefaultMaxTxnOps when zero.
	MaxTxnOps int
	// SessionTTL of the leader election; DefaultSessionTTL when zero.
	SessionTTL time.Duration
	Logger     *slog.Logger
}

// Store is an etcd-backed store. It is safe for concurrent use, and any
// number of Stores (replicas) may share one prefix.
type Store struct {
	store.Records // the record operations and queries, over this engine

	cli     *clientv3.Client
	p       string
	timeout time.Duration
	maxOps  int
	ttl     time.Duration
	log     *slog.Logger

	queue *store.Queue[*op]
	wg    sync.WaitGroup

	// Owned by the committer goroutine.
	cache     map[string][]byte // nil value: known absent
	headVal   []byte            // meta/audit_head as the cache knows it (nil: absent)
	headKnown bool              // headVal and the cache are valid
	rev       int64             // an etcd revision the cache is exactly the state of (0: unknown)
	writer    string            // unique per Store: makes every head value unique
	writes    uint64
	retry     []*op // operations to run again first

	mirror     mirror // unused tokens and held names, for the pre-checks
	stopMirror context.CancelFunc

	commits   atomic.Uint64 // etcd transactions committed
	conflicts atomic.Uint64 // commits refused because another replica wrote first
	readTime  atomic.Int64  // nanoseconds the committer spent fetching misses
	writeTime atomic.Int64  // nanoseconds batches spent awaiting etcd's answer

	closeOnce sync.Once
}

type op struct {
	fn       func(t *txn) error
	done     chan error
	attempts int // commits refused by a compare-and-swap so far
}

// Batches are committed one at a time. Sending the next before the
// previous one is answered does not pay: etcd does not apply one client's
// concurrent requests in the order they were sent, so a second batch in
// flight often arrives first and fails its compare-and-swap (measured, 64
// writers on a local 3-member cluster: 3,009 certs/s with one batch in
// flight, 2,607/s with two, 2,386/s with four).

// maxAttempts bounds how often one operation is run again after other
// replicas won the compare-and-swap.
const maxAttempts = 50

// rejectError marks an operation's own refusal; the rest of its batch
// still commits.
type rejectError struct{ err error }

func (e rejectError) Error() string { return e.err.Error() }
func (e rejectError) Unwrap() error { return e.err }

func reject(err error) error { return rejectError{err} }

// Open connects to the etcd cluster and checks (or writes) the schema
// version under the prefix.
func Open(ctx context.Context, o Options) (*Store, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("store/etcd: no endpoints")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !strings.HasPrefix(o.Prefix, "/") {
		return nil, fmt.Errorf("store/etcd: prefix %q must start with /", o.Prefix)
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.MaxTxnOps <= 0 {
		o.MaxTxnOps = DefaultMaxTxnOps
	}
	if o.MaxTxnOps < 16 {
		return nil, fmt.Errorf("store/etcd: max txn ops %d is too small (at least 16)", o.MaxTxnOps)
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   o.Endpoints,
		TLS:         o.TLS,
		DialTimeout: o.DialTimeout,
		// Fail Open on an unreachable cluster, saying why (TLS, refused, ...).
		DialOptions: []grpc.DialOption{
			grpc.WithBlock(),
			grpc.WithReturnConnectionError(),
		}, //nolint:staticcheck // the reason a dial failed is what an operator needs
		// Failures reach callers as errors; the client's warnings and
		// errors go to the process's log, its retry chatter nowhere.
		Logger: zapLogger(o.Logger),
		// Large batches: stay within etcd's default 1.5 MiB request limit.
		MaxCallSendMsgSize: 2 << 20,
		MaxCallRecvMsgSize: 64 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf(
			"%w: store/etcd: connect to %s: %v",
			store.ErrUnavailable,
			strings.Join(o.Endpoints, ","),
			err,
		)
	}
	s := &Store{
		cli:     cli,
		p:       strings.TrimSuffix(o.Prefix, "/") + "/",
		timeout: o.RequestTimeout,
		maxOps:  o.MaxTxnOps,
		ttl:     o.SessionTTL,
		log:     o.Logger,
		queue:   store.NewQueue[*op](maxBatch),
		cache:   map[string][]byte{},
		writer:  randomID(),
	}
	s.Records = store.Records{E: s}
	if err := s.initSchema(ctx); err != nil {
		cli.Close()
		return nil, err
	}
	s.mirror.tokens, s.mirror.names = map[string]tokenEntry{}, map[string]string{}
	mctx, stop := context.WithCancel(context.Background())
	s.stopMirror = stop
	s.wg.Add(2)
	go s.committer()
	go s.runMirror(mctx)
	if err := s.lowerNames(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// initSchema writes the schema version on an empty prefix, or checks it.
func (s *Store) initSchema(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	key := s.p + "meta/schema_version"
	want := fmt.Sprint(SchemaVersion)
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, want)).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return unavailable("check schema version", err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 1 && string(kvs[0].Value) != want {
		return fmt.Errorf(
			"store/etcd: schema version %s under %s is not %s; use a matching ipsecca",
			kvs[0].Value,
			s.p,
			want,
		)
	}
	return nil
}

// Client is the etcd client, for status and migration.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix is the key prefix, with a trailing slash.
func (s *Store) Prefix() string { return s.p }

// Stats reports committed transactions and refused compare-and-swaps.
func (s *Store) Stats() (commits, conflicts uint64) { return s.commits.Load(), s.conflicts.Load() }

// Times reports how long the committer spent reading what batches missed
// and how long batches waited for their commit, in total.
func (s *Store) Times() (read, write time.Duration) {
	return time.Duration(s.readTime.Load()), time.Duration(s.writeTime.Load())
}

// Close stops the committer (pending writes fail) and the client.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.queue.Close()
		s.stopMirror()
		s.wg.Wait()
		err = s.cli.Close()
	})
	return err
}

// unavailable wraps an etcd failure as store.ErrUnavailable.
func unavailable(what string, err error) error {
	if errors.Is(err, rpctypes.ErrTooManyOps) || errors.Is(err, rpctypes.ErrGRPCTooManyOps) {
		return fmt.Errorf("store/etcd: %s: %v (raise etcd's --max-txn-ops or lower --etcd-max-txn-ops)", what, err)
	}
	return fmt.Errorf("%w: etcd: %s: %v", store.ErrUnavailable, what, err)
}

func (s *Store) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// update queues fn for the committer and waits for its outcome.
func (s *Store) update(ctx context.Context, fn func(t *txn) error) error {
	o := &op{fn: fn, done: make(chan error, 1)}
	if err := s.queue.Submit(ctx, o); err != nil {
		return err
	}
	// Once queued it is committed or failed; wait for which, so a caller
	// never mistakes a stored certificate for a lost one.
	return <-o.done
}

func (s *Store) committer() {
	defer s.wg.Done()
	for {
		var batch []*op
		if len(s.retry) > 0 {
			batch = s.retry[:min(len(s.retry), maxBatch)]
			s.retry = append([]*op(nil), s.retry[len(batch):]...)
		} else if batch = s.queue.Next(maxBatch, func(o *op) { o.done <- store.ErrUnavailable }); batch == nil {
			return
		}
		s.commit(batch)
	}
}

// commit runs one batch through its steps:
//
//  1. evaluate: run a prefix of batch against the cache (fetching what it
//     misses); the rest of the batch goes to the front of the retry list;
//  2. stampHead: write a head value no other transaction writes, so the
//     next compare-and-swap covers this one even if it appends no event;
//  3. compareAndSwap: commit the overlay if the head is still what the
//     reads saw;
//  4. settle: answer the operations (applied), retry them (another replica
//     wrote first) or tell them the outcome is unknown (no answer).
func (s *Store) commit(batch []*op) {
	if len(s.cache) > maxCache {
		s.reset()
	}
	n, errs, t, err := s.run(batch)
	if err != nil {
		s.fail(batch, err)
		return
	}
	if n < len(batch) {
		s.retry = append(append([]*op(nil), batch[n:]...), s.retry...)
	}
	batch = batch[:n]
	newHead, err := s.stampHead(t)
	if err != nil {
		s.fail(batch, err)
		return
	}
	keys, resp, err := s.compareAndSwap(t)
	s.settle(batch, errs, t, keys, newHead, resp, err)
}

// stampHead puts the audit head back with this transaction's write stamp.
func (s *Store) stampHead(t *txn) ([]byte, error) {
	head := s.kHead()
	cur, ok := t.over[head]
	if !ok {
		cur = entry{val: s.cache[head]}
	}
	var h auditHead
	if len(cur.val) > 0 {
		if err := json.Unmarshal(cur.val, &h); err != nil {
			return nil, fmt.Errorf("store/etcd: decode audit head: %w", err)
		}
	}
	s.writes++
	h.Write = fmt.Sprintf("%s.%d", s.writer, s.writes)
	newHead, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	t.over[head] = entry{val: newHead}
	return newHead, nil
}

// compareAndSwap commits t's overlay (keys in order) if the head holds the
// value the batch's reads were made against.
func (s *Store) compareAndSwap(t *txn) ([]string, *clientv3.TxnResponse, error) {
	keys := make([]string, 0, len(t.over))
	for k := range t.over {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ops := make([]clientv3.Op, 0, len(keys))
	for _, k := range keys {
		if e := t.over[k]; e.del {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, string(e.val)))
		}
	}
	head := s.kHead()
	cmp := clientv3.Compare(clientv3.CreateRevision(head), "=", 0)
	if s.headVal != nil {
		cmp = clientv3.Compare(clientv3.Value(head), "=", string(s.headVal))
	}
	ctx, cancel := s.ctx(context.Background())
	defer cancel()
	t0 := time.Now()
	resp, err := s.cli.Txn(ctx).If(cmp).Then(ops...).Commit()
	s.writeTime.Add(int64(time.Since(t0)))
	return keys, resp, err
}

// settle answers a batch after its compare-and-swap.
func (s *Store) settle(
	batch []*op,
	errs []error,
	t *txn,
	keys []string,
	newHead []byte,
	resp *clientv3.TxnResponse,
	err error,
) {
	switch {
	case err != nil:
		// The outcome is unknown: fail the batch, forget everything. The
		// callers are told so (it may have applied): a retry with the same
		// credential and key is answered with what was stored.
		s.reset()
		s.fail(batch, fmt.Errorf("%w: %w", store.ErrOutcomeUnknown, unavailable("commit", err)))
	case !resp.Succeeded:
		// Another replica wrote first: run the operations again on
		// fresh reads.
		s.conflicts.Add(1)
		s.reset()
		for _, o := range batch {
			if o.attempts++; o.attempts > maxAttempts {
				o.done <- fmt.Errorf("%w: store/etcd: gave up after %d write conflicts with other replicas",
					store.ErrUnavailable, maxAttempts)
				continue
			}
			s.retry = append(s.retry, o)
		}
	default:
		s.commits.Add(1)
		for _, k := range keys {
			if e := t.over[k]; e.del {
				s.cache[k] = nil
			} else {
				s.cache[k] = e.val
			}
		}
		s.headVal, s.rev = newHead, resp.Header.Revision
		s.wrote(keys, t.over, resp.Header.Revision)
		for i, o := range batch {
			o.done <- errs[i]
		}
	}
}

func (s *Store) fail(ops []*op, err error) {
	for _, o := range ops {
		o.done <- err
	}
}

// entry is an overlay value; del marks a deletion.
type entry struct {
	val []byte
	del bool
}

// txn is what an operation reads and writes: reads go to the batch's
// overlay, then the committer's cache; a key in neither is recorded as a
// miss (and reads as absent), fetched, and the batch is run again.
type txn struct {
	s       *Store
	over    map[string]entry
	journal []undo
	misses  map[string]struct{}
	ctx     context.Context
}

type undo struct {
	key  string
	prev entry
	had  bool
}

func (t *txn) get(key string) ([]byte, bool) {
	if e, ok := t.over[key]; ok {
		return e.val, !e.del
	}
	if v, ok := t.s.cache[key]; ok {
		return v, v != nil
	}
	t.misses[key] = struct{}{}
	return nil, false
}

func (t *txn) set(key string, e entry) {
	prev, had := t.over[key]
	t.journal = append(t.journal, undo{key: key, prev: prev, had: had})
	t.over[key] = e
}

func (t *txn) put(key string, val []byte) {
	if val == nil {
		val = []byte{} // nil means absent in the cache
	}
	t.set(key, entry{val: val})
}
func (t *txn) del(key string) { t.set(key, entry{del: true}) }

func (t *txn) getJSON(key string, v any) error {
	raw, ok := t.get(key)
	if !ok {
		return store.ErrNotFound
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("store/etcd: decode %s: %w", key, err)
	}
	return nil
}

func (t *txn) putJSON(key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	t.put(key, raw)
	return nil
}

// keys returns the keys under prefix as the batch sees them: read from
// etcd (the compare-and-swap at commit makes the read consistent) and
// merged with the overlay.
func (t *txn) keys(prefix string) ([]string, error) {
	ctx, cancel := t.s.ctx(t.ctx)
	defer cancel()
	resp, err := t.s.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, unavailable("range "+prefix, err)
	}
	set := map[string]bool{}
	for _, kv := range resp.Kvs {
		set[string(kv.Key)] = true
	}
	for k, e := range t.over {
		if strings.HasPrefix(k, prefix) {
			set[k] = !e.del
		}
	}
	var out []string
	for k, ok := range set {
		if ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (t *txn) savepoint() int { return len(t.journal) }

func (t *txn) rollback(sp int) {
	for i := len(t.journal) - 1; i >= sp; i-- {
		u := t.journal[i]
		if u.had {
			t.over[u.key] = u.prev
		} else {
			delete(t.over, u.key)
		}
	}
	t.journal = t.journal[:sp]
}

// errTooLarge: one operation alone writes more keys than a transaction may hold.
var errTooLarge = errors.New("store/etcd: operation writes more keys than --etcd-max-txn-ops allows")

// maxRounds bounds the fetch-and-rerun rounds of one batch.
const maxRounds = 8

// run evaluates ops against the cache, fetching what they miss, until a
// round misses nothing. It returns how many of them fit one transaction,
// their own errors, and the overlay to commit.
func (s *Store) run(ops []*op) (int, []error, *txn, error) {
	head := s.p + "meta/audit_head"
	want := map[string]struct{}{}
	for range maxRounds {
		t := &txn{s: s, over: map[string]entry{}, misses: map[string]struct{}{}, ctx: context.Background()}
		if !s.headKnown {
			t.misses[head] = struct{}{}
		}
		errs := make([]error, len(ops))
		n := len(ops)
		for i, o := range ops {
			sp := t.savepoint()
			err := o.fn(t)
			if err != nil {
				t.rollback(sp)
				var rej rejectError
				if errors.As(err, &rej) {
					err = rej.err
				}
				errs[i] = err
				continue
			}
			if len(t.over)+1 > s.maxOps { // +1: the head, always written
				t.rollback(sp)
				if i == 0 {
					errs[0], n = errTooLarge, 1
				} else {
					n = i
				}
				break
			}
		}
		if len(t.misses) == 0 {
			return n, errs[:n], t, nil
		}
		for k := range t.misses {
			want[k] = struct{}{}
		}
		keys := t.misses
		for try := 0; ; try++ {
			t0 := time.Now()
			moved, err := s.fetch(keys)
			s.readTime.Add(int64(time.Since(t0)))
			if err != nil {
				return 0, nil, nil, err
			}
			if !moved {
				break
			}
			if try == maxRounds {
				return 0, nil, nil, fmt.Errorf(
					"%w: store/etcd: reads did not settle under concurrent writes",
					store.ErrUnavailable,
				)
			}
			keys = want // the cache was dropped: read everything again
		}
	}
	return 0, nil, nil, fmt.Errorf("%w: store/etcd: reads did not settle", store.ErrUnavailable)
}

// fetch reads keys into the cache, each read transaction with the audit
// head. When another replica moved the head since the cache was read, the
// cache is dropped and fetch reports moved: the caller reads again.
func (s *Store) fetch(keys map[string]struct{}) (moved bool, err error) {
	head := s.p + "meta/audit_head"
	all := make([]string, 0, len(keys))
	for k := range keys {
		if k != head {
			all = append(all, k)
		}
	}
	sort.Strings(all)
	chunk := s.maxOps - 1
	for first := true; first || len(all) > 0; first = false {
		part := all[:min(chunk, len(all))]
		all = all[len(part):]
		resp, err := s.readAt(s.rev, head, part)
		if err != nil && s.rev != 0 {
			// The member asked has not applied s.rev yet (or compacted
			// it): read the present through consensus instead.
			resp, err = s.readAt(0, head, part)
		}
		if err != nil {
			s.reset()
			return false, unavailable("read", err)
		}
		hk := resp.Responses[0].GetResponseRange().Kvs
		var hv []byte
		if len(hk) == 1 {
			hv = hk[0].Value
		}
		if s.headKnown && !bytes.Equal(hv, s.headVal) {
			// Another replica wrote since the cache was read.
			s.reset()
			moved = true
		}
		if !s.headKnown {
			s.headVal, s.headKnown = hv, true
			s.cache[head] = hv
			s.rev = resp.Header.Revision
		}
		for i, k := range part {
			var v []byte
			if kvs := resp.Responses[i+1].GetResponseRange().Kvs; len(kvs) == 1 {
				v = kvs[0].Value
				if v == nil {
					v = []byte{}
				}
			}
			s.cache[k] = v
		}
	}
	return moved, nil
}

// readAt reads head and keys in one transaction: at revision rev, from
// whichever member the client picks and without a round of consensus (the
// state at rev is what the cache holds, and the compare-and-swap at commit
// catches any write after it); or, when rev is 0, the present, through
// consensus.
func (s *Store) readAt(rev int64, head string, keys []string) (*clientv3.TxnResponse, error) {
	var opts []clientv3.OpOption
	if rev != 0 {
		opts = []clientv3.OpOption{clientv3.WithRev(rev), clientv3.WithSerializable()}
	}
	ops := []clientv3.Op{clientv3.OpGet(head, opts...)}
	for _, k := range keys {
		ops = append(ops, clientv3.OpGet(k, opts...))
	}
	ctx, cancel := s.ctx(context.Background())
	defer cancel()
	return s.cli.Txn(ctx).Then(ops...).Commit()
}

// reset forgets the cache (another replica wrote, or the outcome of a
// write is unknown).
func (s *Store) reset() {
	clear(s.cache)
	s.headVal, s.headKnown, s.rev = nil, false, 0
}

// randomID names a Store instance in the head values it writes.
func randomID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
