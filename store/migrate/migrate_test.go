package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/internal/etcdtest"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
	"github.com/ipsecca/ipsecca/store/etcd"
	"github.com/ipsecca/ipsecca/store/storetest"
)

// boltCA fills a bbolt data directory with a CA whose key is in the
// clear, six node certificates (one due), an unused token and their events.
func boltCA(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	src, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.CreateCA(ctx, &store.CA{CertPEM: []byte("root"), KeyPEM: []byte("clear"), KeyEncryption: "none"},
		store.Event{Type: store.EventCACreated, Time: storetest.T0}); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		c := storetest.Cert(
			fmt.Sprintf("%04x", i),
			fmt.Sprintf("node-%d", i),
			storetest.T0.Add(time.Duration(i)*time.Hour),
		)
		if err := src.Issue(ctx, store.Issuance{Cert: c, Event: store.Event{Type: store.EventEnrolled, Node: c.Node,
			Serial: c.Serial}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.PutToken(ctx, &store.Token{ID: "tok", Node: "node-9", CommonName: "node-9",
		ExpiresAt: storetest.T0.Add(time.Hour)}, store.Event{Type: store.EventTokenCreated}); err != nil {
		t.Fatal(err)
	}
	if err := src.MarkDue(ctx, "0002", storetest.T0, "scheduled", storetest.T0.Add(time.Hour),
		store.Event{Type: store.EventRotationDue}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// seal stands in for ca.SealForMove: it marks the key sealed.
func seal(m *store.CA) (*store.CA, bool, error) {
	if m.KeyEncryption == "sealed" {
		return m, false, nil
	}
	out := *m
	out.KeyPEM, out.KeyEncryption = []byte("sealed:"+string(m.KeyPEM)), "sealed"
	return &out, true, nil
}

var prefixes = 0

func options(c *etcdtest.Cluster, from string) Options {
	prefixes++
	return Options{
		From: from,
		Seal: seal,
		To: etcd.Options{
			Endpoints:      c.Endpoints(),
			Prefix:         fmt.Sprintf("/migrate-%d", prefixes),
			MaxTxnOps:      etcdtest.MaxTxnOps,
			RequestTimeout: 3 * time.Second,
		},
	}
}

// A bbolt CA moves whole: the report counts what was copied, every check
// matches, the key is sealed and its sealing audited; a second migration
// into the same prefix is refused and leaves it alone.
func TestFromBolt(t *testing.T) {
	ctx := context.Background()
	dir := boltCA(t)
	c := etcdtest.Start(t, etcdtest.Options{Members: 1})
	o := options(c, dir)
	rep, err := FromBolt(ctx, o)
	if err != nil {
		t.Fatalf("FromBolt: %v (report %+v)", err, rep)
	}
	want := etcd.ImportCounts{Certs: 6, Tokens: 1, Nodes: 6, Events: 1 + 6 + 1 + 1}
	if !rep.Imported || rep.Counts != want || rep.Prefix != o.To.Prefix+"/" || rep.Took <= 0 || !rep.KeySealed {
		t.Fatalf("report %+v; want counts %+v, prefix %s/, sealed", rep, want, o.To.Prefix)
	}
	var names []string
	for _, ch := range rep.Checks {
		names = append(names, ch.Name)
		if !ch.OK() {
			t.Errorf("check %s: source %s, copy %s", ch.Name, ch.Source, ch.Copy)
		}
	}
	if got := strings.Join(names, "|"); got != "audit chain|certificate counts|schedule (first 1000)" ||
		rep.Failed() != 0 {
		t.Fatalf("checks %s, %d failed", got, rep.Failed())
	}
	if rep.Checks[0].Source != "9" || !strings.HasPrefix(rep.Checks[2].Source, "6 certificates") {
		t.Fatalf("checks %+v", rep.Checks)
	}

	dst, err := etcd.Open(ctx, o.To)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	m, err := dst.CA(ctx)
	if err != nil || m.KeyEncryption != "sealed" || string(m.KeyPEM) != "sealed:clear" {
		t.Fatalf("the copy's CA: %+v, %v", m, err)
	}
	if n, err := dst.VerifyAudit(ctx); err != nil || n != 10 {
		t.Fatalf("the copy's audit chain: %d records, %v; want the 9 moved and ca.key_sealed", n, err)
	}
	evs, _, err := dst.ListEvents(ctx, store.EventFilter{Type: store.EventCAKeySealed})
	if err != nil || len(evs) != 1 || evs[0].Actor != Actor || evs[0].Detail["from"] != "bolt:"+dir {
		t.Fatalf("ca.key_sealed events %+v, %v", evs, err)
	}

	again, err := FromBolt(ctx, o)
	if !errors.Is(err, etcd.ErrNotEmpty) || again.Imported {
		t.Fatalf("second migration: %v, %+v; want etcd.ErrNotEmpty", err, again)
	}
	if n, err := dst.VerifyAudit(ctx); err != nil || n != 10 {
		t.Fatalf("after the refused migration: %d records, %v", n, err)
	}
}

// lying is a source whose certificate counts differ from what it exports.
type lying struct{ *bolt.Store }

func (l lying) CertCounts(ctx context.Context, now time.Time) (map[[2]string]int, error) {
	m, err := l.Store.CertCounts(ctx, now)
	m[[2]string{"node", "active"}]++
	return m, err
}

// A copy that differs from its source fails with a MismatchError naming
// the prefix, reports the failed check, and records no ca.key_sealed.
func TestMismatch(t *testing.T) {
	ctx := context.Background()
	dir := boltCA(t)
	src, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	c := etcdtest.Start(t, etcdtest.Options{Members: 1})
	o := options(c, dir)
	rep, err := run(ctx, lying{src}, o)
	var me *MismatchError
	if !errors.As(err, &me) || me.Failed != 1 || me.Prefix != rep.Prefix || rep.Failed() != 1 || rep.KeySealed {
		t.Fatalf("err %v, report %+v; want one failed check", err, rep)
	}
	if !strings.Contains(err.Error(), "holds a partial copy") || rep.Checks[1].OK() || !rep.Checks[0].OK() {
		t.Fatalf("err %v, checks %+v", err, rep.Checks)
	}
	dst, err := etcd.Open(ctx, o.To)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if evs, _, err := dst.ListEvents(ctx, store.EventFilter{Type: store.EventCAKeySealed}); err != nil ||
		len(evs) != 0 {
		t.Fatalf("ca.key_sealed after a mismatch: %+v, %v", evs, err)
	}
}

// Without a CA there is nothing to move; nothing is opened in etcd.
func TestNoCA(t *testing.T) {
	dir := t.TempDir()
	rep, err := FromBolt(
		context.Background(),
		Options{From: dir, Seal: seal, To: etcd.Options{Endpoints: []string{"127.0.0.1:1"}}},
	)
	if err == nil || !strings.Contains(err.Error(), dir+" holds no CA") || rep.Imported {
		t.Fatalf("err %v, report %+v", err, rep)
	}
}
