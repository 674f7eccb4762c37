package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/internal/etcdtest"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/etcd"
	"github.com/ipsecca/ipsecca/store/storetest"
)

var _ storetest.Backend = (*etcd.Store)(nil)

var prefixes atomic.Int64

// open opens a store on a fresh prefix of the shared cluster.
func open(t *testing.T, c *etcdtest.Cluster, prefix string) *etcd.Store {
	t.Helper()
	s, err := etcd.Open(
		context.Background(),
		etcd.Options{
			Endpoints:      c.Endpoints(),
			Prefix:         prefix,
			MaxTxnOps:      etcdtest.MaxTxnOps,
			RequestTimeout: 3 * time.Second,
		},
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func freshPrefix() string { return fmt.Sprintf("/test-%d", prefixes.Add(1)) }

// TestEngineConformance runs the engine suite: the Tx and View contract alone.
func TestEngineConformance(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	storetest.RunEngine(t, func(t *testing.T) store.Engine { return open(t, c, freshPrefix()) })
}

func TestConformance(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	storetest.Run(t, func(t *testing.T) storetest.Backend { return open(t, c, freshPrefix()) })
}

// Two replicas on one prefix: the guarantees hold across them through
// etcd alone (no process-local lock is shared).
func TestTwoReplicas(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	prefix := freshPrefix()
	a, b := open(t, c, prefix), open(t, c, prefix)
	ctx := context.Background()
	for i := range 5 {
		id := fmt.Sprintf("tok%d", i)
		if err := a.PutToken(ctx, &store.Token{ID: id, Node: "node-a", CommonName: "node-a", ExpiresAt: storetest.T0.Add(time.Hour)}, store.Event{Type: store.EventTokenCreated}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var issued, used, held atomic.Int64
	// One token, many attempts on both replicas at once.
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := []*etcd.Store{a, b}[i%2]
			err := storetest.Issue(r, storetest.Cert(fmt.Sprintf("t%02d", i), "node-a", storetest.T0), "tok0")
			switch {
			case err == nil:
				issued.Add(1)
			case errors.Is(err, store.ErrTokenUsed):
				used.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	// Two nodes claiming one name, on the two replicas.
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := []*etcd.Store{a, b}[i%2]
			cert := storetest.Cert(fmt.Sprintf("n%02d", i), fmt.Sprintf("claimant-%d", i%2), storetest.T0)
			cert.CommonName = "contested"
			err := storetest.Issue(r, cert, "")
			switch {
			case err == nil:
			case errors.Is(err, store.ErrNameHeld):
				held.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	// Plain load on both.
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := []*etcd.Store{a, b}[i%2]
			if err := storetest.Issue(r, storetest.Cert(fmt.Sprintf("p%03d", i), fmt.Sprintf("node-p%03d", i), storetest.T0), ""); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if issued.Load() != 1 || used.Load() != 39 {
		t.Fatalf("one token on two replicas: %d issued, %d refused", issued.Load(), used.Load())
	}
	owner, err := b.NameOwner(ctx, "contested")
	if err != nil || (owner != "claimant-0" && owner != "claimant-1") {
		t.Fatalf("owner %q %v", owner, err)
	}
	certs, _, err := a.ListCerts(ctx, store.CertFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range certs {
		if c.CommonName == "contested" && c.Node != owner {
			t.Fatalf("certificate %s for %q issued to %s, but %s holds the name", c.Serial, c.CommonName, c.Node, owner)
		}
	}
	// 5 token events, 1 + 200 + the name winners' certificates.
	want := uint64(5 + 1 + 200 + (20 - held.Load()))
	if n, err := b.VerifyAudit(ctx); err != nil || n != want {
		t.Fatalf("audit across replicas: %d events (%v), want %d", n, err, want)
	}
	ca, cb := a.Stats()
	cb2, cfb := b.Stats()
	t.Logf("replica a: %d commits, %d conflicts; b: %d commits, %d conflicts", ca, cb, cb2, cfb)
}

// Without quorum writes fail with store.ErrUnavailable within the request
// timeout and nothing half-done remains; with quorum back they succeed.
func TestQuorumLoss(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	s := open(t, c, freshPrefix())
	ctx := context.Background()
	if err := storetest.Issue(s, storetest.Cert("q1", "node-q", storetest.T0), ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Healthy(ctx); err != nil {
		t.Fatalf("health check with quorum: %v", err)
	}
	c.Kill(1)
	c.Kill(2)
	start := time.Now()
	err := storetest.Issue(s, storetest.Cert("q2", "node-q", storetest.T0), "")
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("issue without quorum: %v, want store.ErrUnavailable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("failing took %s", d)
	}
	// The health check fails too, within the bound its caller gives.
	hctx, cancel := context.WithTimeout(ctx, time.Second)
	start = time.Now()
	err = s.Healthy(hctx)
	cancel()
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("health check without quorum: %v, want store.ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("failed health check took %s, bound 1s", d)
	}
	t.Logf("health check without quorum: %v", err)
	for _, i := range []int{1, 2} {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err = storetest.Issue(s, storetest.Cert("q3", "node-q", storetest.T0), "")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("after quorum returned: %v", err)
	}
	if err := s.Healthy(ctx); err != nil {
		t.Fatalf("health check after quorum returned: %v", err)
	}
	if cur, err := s.CurrentCert(ctx, "node-q"); err != nil || cur.Serial != "q3" {
		t.Fatalf("current %v %v", cur, err)
	}
	if _, err := s.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// The token and name copy each replica keeps: its own writes show at
// once; another replica's within the watch delay; a used token is never
// answered as unused once the use is seen.
func TestTokenAndNameCopy(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	prefix := freshPrefix()
	a, b := open(t, c, prefix), open(t, c, prefix)
	ctx := context.Background()
	eventually := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5 s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	tok := &store.Token{ID: "t1", Node: "node-a", CommonName: "node-a", ExpiresAt: storetest.T0.Add(time.Hour)}
	if err := a.PutToken(ctx, tok, store.Event{Type: store.EventTokenCreated}); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Token(ctx, "t1"); err != nil || got.Node != "node-a" {
		t.Fatalf("own token at once: %v %v", got, err)
	}
	eventually(
		"replica b sees the token",
		func() bool { got, err := b.Token(ctx, "t1"); return err == nil && got.UsedAt.IsZero() },
	)
	if err := storetest.Issue(a, storetest.Cert("s1", "node-a", storetest.T0), "t1"); err != nil {
		t.Fatal(err)
	}
	if owner, _ := a.NameOwner(ctx, "node-a"); owner != "node-a" {
		t.Fatalf("own name at once: %q", owner)
	}
	eventually(
		"replica b sees the token used",
		func() bool { got, err := b.Token(ctx, "t1"); return err == nil && !got.UsedAt.IsZero() },
	)
	eventually(
		"replica b sees the name held",
		func() bool { owner, _ := b.NameOwner(ctx, "node-a"); return owner == "node-a" },
	)
	// A stale copy cannot issue twice: the compare-and-swap decides.
	if err := storetest.Issue(b, storetest.Cert("s2", "node-a", storetest.T0), "t1"); !errors.Is(
		err,
		store.ErrTokenUsed,
	) {
		t.Fatalf("second use on the other replica: %v", err)
	}
	if _, err := b.Token(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown token: %v", err)
	}
}

// TestOpenLowerCasesNames: names held in upper case by an earlier version
// are held in lower case after Open (as bbolt's schema 3 does), and a clash
// between two nodes is audited.
func TestOpenLowerCasesNames(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	prefix := freshPrefix()
	s := open(t, c, prefix)
	const upper, lower = "0A1B2C3D-0000-4000-8000-00000000ABCD", "0a1b2c3d-0000-4000-8000-00000000abcd"
	ctx := context.Background()
	for k, v := range map[string]string{"names/" + upper: "node-x", "names/BBBBBBBB-0000-4000-8000-000000000000": "node-y",
		"names/bbbbbbbb-0000-4000-8000-000000000000": "node-z"} {
		if _, err := s.Client().Put(ctx, prefix+"/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = open(t, c, prefix)
	for cn, want := range map[string]string{lower: "node-x", upper: "", "bbbbbbbb-0000-4000-8000-000000000000": "node-z",
		"BBBBBBBB-0000-4000-8000-000000000000": ""} {
		resp, err := s.Client().Get(ctx, prefix+"/names/"+cn)
		owner := ""
		if err == nil && len(resp.Kvs) == 1 {
			owner = string(resp.Kvs[0].Value)
		}
		if err != nil || owner != want {
			t.Errorf("name %s: held by %q (%v), want %q", cn, owner, err, want)
		}
	}
	events, _, err := s.ListEvents(ctx, store.EventFilter{Type: store.EventNameClash})
	if err != nil || len(events) != 1 {
		t.Fatalf("clash events: %v %v", events, err)
	}
}
