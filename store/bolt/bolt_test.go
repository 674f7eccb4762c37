package bolt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/ipsecca/ipsecca/store"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func cert(serial, node string, rotate time.Time) *store.Cert {
	return &store.Cert{Serial: serial, Kind: store.KindNode, Node: node, CommonName: node, State: store.StateActive,
		NotBefore: t0, NotAfter: t0.AddDate(5, 0, 0), RotateAfter: rotate, IssuedAt: t0, DER: []byte("der-" + serial)}
}

func issue(s *Store, c *store.Cert, token string) error {
	return s.Issue(context.Background(), store.Issuance{Cert: c, TokenID: token, Event: store.Event{Time: t0, Type: store.EventEnrolled, Node: c.Node, Serial: c.Serial}})
}

// TestMigrations applies each step on its own and checks what it must leave.
func TestMigrations(t *testing.T) {
	steps := []func(t *testing.T, tx *bbolt.Tx){
		func(t *testing.T, tx *bbolt.Tx) { // 0 -> 1
			for _, b := range [][]byte{bucketMeta, bucketCA, bucketCerts, bucketByNode, bucketByRotate, bucketNames, bucketTokens, bucketEvents} {
				if tx.Bucket(b) == nil {
					t.Errorf("bucket %s missing after step 1", b)
				}
			}
		},
		func(t *testing.T, tx *bbolt.Tx) { // 1 -> 2
			for _, b := range [][]byte{bucketOverdue, bucketNodes, bucketOverdueN, bucketRevoked} {
				if tx.Bucket(b) == nil {
					t.Errorf("bucket %s missing after step 2", b)
				}
			}
		},
	}
	if len(steps) != len(migrations) {
		t.Fatalf("%d migrations but %d step tests: add a test for the new step", len(migrations), len(steps))
	}
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "m.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i, m := range migrations {
		if err := db.Update(func(tx *bbolt.Tx) error { return m(tx) }); err != nil {
			t.Fatalf("step %d: %v", i+1, err)
		}
		db.View(func(tx *bbolt.Tx) error { steps[i](t, tx); return nil })
	}
}

func TestSchemaVersion(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.db.View(func(tx *bbolt.Tx) error {
		if got := string(tx.Bucket(bucketMeta).Get(keySchemaVersion)); got != strconv.Itoa(SchemaVersion) {
			t.Errorf("schema version %q, want %d", got, SchemaVersion)
		}
		return nil
	})
	// A database from a newer ipsecca is refused, not mangled.
	s.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchemaVersion, []byte("99")) })
	s.Close()
	if _, err := Open(dir); err == nil {
		t.Fatal("opened a database with a newer schema")
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("database file mode %v, want 0600 (%v)", fi.Mode(), err)
	}
}

func TestOneProcessPerDirectory(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(dir); err == nil {
		t.Fatal("a second open of the same directory succeeded")
	}
}

func TestIssueSupersedesAndIndexes(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	if err := issue(s, cert("a1", "node-a", t0.Add(3*time.Hour)), ""); err != nil {
		t.Fatal(err)
	}
	if err := issue(s, cert("a2", "node-a", t0.Add(2*time.Hour)), ""); err != nil {
		t.Fatal(err)
	}
	if err := issue(s, cert("b1", "node-b", t0.Add(1*time.Hour)), ""); err != nil {
		t.Fatal(err)
	}
	if err := issue(s, cert("a2", "node-a", t0), ""); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate serial: %v", err)
	}
	old, _ := s.Cert(ctx, "a1")
	if old.State != store.StateSuperseded || old.SupersededBy != "a2" {
		t.Fatalf("a1: %s by %q", old.State, old.SupersededBy)
	}
	// The rotation index holds only active node certs, in due order.
	var due []string
	s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketByRotate).ForEach(func(k, _ []byte) error { due = append(due, string(k[8:])); return nil })
	})
	if fmt.Sprint(due) != "[b1 a2]" {
		t.Fatalf("rotation index %v, want [b1 a2]", due)
	}
	// Another node may not take node-a's name.
	c := cert("x1", "node-x", t0)
	c.CommonName = "node-a"
	if err := issue(s, c, ""); !errors.Is(err, store.ErrNameHeld) {
		t.Fatalf("name held: %v", err)
	}
	if owner, _ := s.NameOwner(ctx, "node-a"); owner != "node-a" {
		t.Fatalf("owner %q", owner)
	}
}

func TestTokenSingleUseUnderConcurrency(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	if err := s.PutToken(ctx, &store.Token{ID: "tok", Node: "node-a", CommonName: "node-a", ExpiresAt: t0.Add(time.Hour)}, store.Event{Type: store.EventTokenCreated}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, used := 0, 0
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := issue(s, cert(fmt.Sprintf("s%02d", i), "node-a", t0), "tok")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, store.ErrTokenUsed):
				used++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok != 1 || used != 49 {
		t.Fatalf("%d issued, %d refused; want exactly one issued", ok, used)
	}
	tok, _ := s.Token(ctx, "tok")
	if tok.UsedAt.IsZero() || tok.UsedFor == "" {
		t.Fatal("token not marked used")
	}
}

// TestGroupCommit: operations queued while a commit is in progress share
// the next transaction, every one is stored, and one rejected operation
// does not fail its batch.
func TestGroupCommit(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	// Hold the committer inside a first transaction so the rest queue up.
	release := make(chan struct{})
	holding := make(chan struct{})
	go s.update(ctx, func(*bbolt.Tx) error { close(holding); <-release; return nil })
	<-holding
	before := s.commits.Load()

	const n = 400
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			serial := fmt.Sprintf("g%04d", i)
			if i == 7 {
				serial = "g0006" // duplicate of another: rejected alone
			}
			errs[i] = issue(s, cert(serial, fmt.Sprintf("node-%d", i), t0), "")
		}()
	}
	for len(s.queue) < n {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if got := s.commits.Load() - before; got != 2 {
		t.Errorf("%d commits for %d queued operations, want 2 (the held one, then one batch)", got, n)
	}
	failed := 0
	for _, err := range errs {
		if err != nil {
			if !errors.Is(err, store.ErrExists) {
				t.Fatal(err)
			}
			failed++
		}
	}
	if failed != 1 {
		t.Fatalf("%d failed, want exactly the duplicate", failed)
	}
	certs, _, err := s.ListCerts(ctx, store.CertFilter{Limit: 1000})
	if err != nil || len(certs) != n-1 {
		t.Fatalf("%d stored (%v), want %d", len(certs), err, n-1)
	}
	if n, err := s.VerifyAudit(ctx); err != nil || n != uint64(len(certs)) {
		t.Fatalf("audit: %d %v", n, err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestListCertsPaginationAndFilters(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	const nodes, per = 50, 3
	for n := range nodes {
		for i := range per {
			if err := issue(s, cert(fmt.Sprintf("%03d%d", n, i), fmt.Sprintf("node-%03d", n), t0), ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	seen := map[string]bool{}
	after := ""
	pages := 0
	for {
		page, next, err := s.ListCerts(ctx, store.CertFilter{After: after, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, c := range page {
			if seen[c.Serial] {
				t.Fatalf("serial %s on two pages", c.Serial)
			}
			seen[c.Serial] = true
		}
		if next == "" {
			break
		}
		after = next
	}
	if len(seen) != nodes*per || pages != (nodes*per+6)/7 {
		t.Fatalf("%d certs over %d pages", len(seen), pages)
	}
	byNode, _, _ := s.ListCerts(ctx, store.CertFilter{Node: "node-007"})
	if len(byNode) != per {
		t.Fatalf("node filter: %d", len(byNode))
	}
	active, _, _ := s.ListCerts(ctx, store.CertFilter{State: store.StateActive, Now: t0, Limit: 1000})
	if len(active) != nodes {
		t.Fatalf("active: %d, want one per node", len(active))
	}
	expired, _, _ := s.ListCerts(ctx, store.CertFilter{State: store.StateExpired, Now: t0.AddDate(6, 0, 0), Limit: 1000})
	if len(expired) != nodes {
		t.Fatalf("expired after 6 years: %d", len(expired))
	}
}

func TestAuditChainDetectsTampering(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	for i := range 20 {
		if err := s.AppendEvent(ctx, store.Event{Time: t0, Type: store.EventDenied, Node: "node-a", Reason: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.VerifyAudit(ctx); err != nil || n != 20 {
		t.Fatalf("clean log: %d %v", n, err)
	}
	// Flip one byte inside record 11's JSON.
	s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		v := append([]byte(nil), b.Get(u64(11))...)
		for i := range v {
			if v[i] == '1' {
				v[i] = '2'
				break
			}
		}
		return b.Put(u64(11), v)
	})
	_, err := s.VerifyAudit(ctx)
	if err == nil || !strings.Contains(err.Error(), "record 11") {
		t.Fatalf("tampering not reported at record 11: %v", err)
	}
}

func TestClosedStoreIsUnavailable(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.AppendEvent(context.Background(), store.Event{}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("write after close: %v", err)
	}
}

// TestQueriesOnThousands: filters and pagination over a few thousand
// certificates and events.
func TestQueriesOnThousands(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	const n = 3000
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cert(fmt.Sprintf("%05d", i), fmt.Sprintf("node-%04d", i%1000), t0.Add(time.Duration(i)*time.Hour))
			c.IssuedAt = t0.Add(time.Duration(i) * time.Minute)
			if err := s.Issue(ctx, store.Issuance{Cert: c, Event: store.Event{Time: c.IssuedAt, Type: store.EventEnrolled, Node: c.Node, Serial: c.Serial}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// Due before: rotate_after = t0 + i hours, so 500 certs before t0+500h,
	// of which only the active (newest per node) count under state=active.
	due, _, err := s.ListCerts(ctx, store.CertFilter{DueBefore: t0.Add(500 * time.Hour), Limit: 1000})
	if err != nil || len(due) != 500 {
		t.Fatalf("due before: %d %v", len(due), err)
	}
	// Events: since/until window of 100 minutes, type prefix, node filter, pages of 37.
	var got []*store.Event
	after := uint64(0)
	for {
		page, more, err := s.ListEvents(ctx, store.EventFilter{Type: "cert.", Since: t0.Add(1000 * time.Minute), Until: t0.Add(1100 * time.Minute), AfterSeq: after, Limit: 37})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page...)
		if !more {
			break
		}
		after = page[len(page)-1].Seq
	}
	if len(got) != 100 {
		t.Fatalf("window: %d events, want 100", len(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatal("events out of order across pages")
		}
	}
	byNode, _, _ := s.ListEvents(ctx, store.EventFilter{Node: "node-0042", Limit: 1000})
	if len(byNode) != 3 {
		t.Fatalf("node filter: %d events, want 3", len(byNode))
	}
	none, _, _ := s.ListEvents(ctx, store.EventFilter{Type: "rotation.", Limit: 1000})
	if len(none) != 0 {
		t.Fatalf("type prefix rotation.: %d", len(none))
	}
	if n, err := s.VerifyAudit(ctx); err != nil || n != 3000 {
		t.Fatalf("audit %d %v", n, err)
	}
}
