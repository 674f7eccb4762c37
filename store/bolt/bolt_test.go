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
	"github.com/ipsecca/ipsecca/store/storetest"
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
	return s.Issue(
		context.Background(),
		store.Issuance{
			Cert:    c,
			TokenID: token,
			Event:   store.Event{Time: t0, Type: store.EventEnrolled, Node: c.Node, Serial: c.Serial},
		},
	)
}

// TestEngineConformance runs the engine suite: the Tx and View contract alone.
func TestEngineConformance(t *testing.T) {
	storetest.RunEngine(t, func(t *testing.T) store.Engine { return open(t) })
}

// TestConformance runs the backend-neutral store suite.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend { return open(t) })
}

var _ storetest.Backend = (*Store)(nil)

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
			for _, b := range [][]byte{bucketOverdue, bucketNodes, bucketOverdueN, bucketRevoked, bucketRequests, bucketActive} {
				if tx.Bucket(b) == nil {
					t.Errorf("bucket %s missing after step 2", b)
				}
			}
		},
		func(t *testing.T, tx *bbolt.Tx) { // 2 -> 3: TestMigrateLowerNames has the data
			if tx.Bucket(bucketNames) == nil {
				t.Error("names bucket missing after step 3")
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
	for s.queue.Len() < n {
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

// TestMigrateLowerNames: schema 3 stores held names in lower case, so a
// name held as "0A1B…" before is held as "0a1b…"; two nodes holding names
// that differ only in case keep one and the clash is audited.
func TestMigrateLowerNames(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "m.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const upper, lower = "0A1B2C3D-0000-4000-8000-00000000ABCD", "0a1b2c3d-0000-4000-8000-00000000abcd"
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, m := range migrations[:2] {
			if err := m(tx); err != nil {
				return err
			}
		}
		names := tx.Bucket(bucketNames)
		names.Put([]byte(upper), []byte("node-x"))
		names.Put([]byte("AAAAAAAA-0000-4000-8000-000000000000"), []byte("node-y"))
		names.Put([]byte("aaaaaaaa-0000-4000-8000-000000000000"), []byte("node-z"))
		names.Put([]byte("node-w"), []byte("node-w"))
		return migrations[2](tx)
	})
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bbolt.Tx) error {
		names := tx.Bucket(bucketNames)
		want := map[string]string{lower: "node-x", "aaaaaaaa-0000-4000-8000-000000000000": "node-z", "node-w": "node-w"}
		got := map[string]string{}
		names.ForEach(func(k, v []byte) error { got[string(k)] = string(v); return nil })
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("names after migration %v, want %v", got, want)
		}
		var ev store.Event
		if err := getJSON(tx.Bucket(bucketEvents), u64(1), &ev); err != nil || ev.Type != store.EventNameClash ||
			!strings.Contains(ev.Detail["clashes"], "node-y") {
			t.Errorf("clash event %+v %v", ev, err)
		}
		return nil
	})
}
