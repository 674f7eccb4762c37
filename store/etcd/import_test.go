package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/internal/etcdtest"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
	"github.com/ipsecca/ipsecca/store/etcd"
	"github.com/ipsecca/ipsecca/store/storetest"
)

// A bolt store with every kind of record moves to etcd whole: the same
// answers to every query, the same audit chain, which then goes on.
func TestImportFromBolt(t *testing.T) {
	ctx := context.Background()
	src, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.CreateCA(ctx, &store.CA{CertPEM: []byte("root"), KeyPEM: []byte("sealed"), KeyEncryption: "aes-256-gcm"}, store.Event{Type: store.EventCACreated, Time: storetest.T0}); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		node := fmt.Sprintf("node-%02d", i%15)
		if i%10 == 0 {
			if err := src.PutToken(ctx, &store.Token{ID: fmt.Sprintf("tok%d", i), Node: node, CommonName: node, ExpiresAt: storetest.T0.Add(time.Hour)}, store.Event{Type: store.EventTokenCreated}); err != nil {
				t.Fatal(err)
			}
		}
		c := storetest.Cert(fmt.Sprintf("%04x", i), node, storetest.T0.Add(time.Duration(i)*time.Hour))
		tok := ""
		if i%10 == 0 {
			tok = fmt.Sprintf("tok%d", i)
		}
		is := store.Issuance{
			Cert:    c,
			TokenID: tok,
			Event:   store.Event{Type: store.EventEnrolled, Node: node, Serial: c.Serial},
		}
		if i == 7 {
			c.RequestUID, is.RequestUID = "uid-7", "uid-7"
		}
		if err := src.Issue(ctx, is); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.MarkDue(ctx, "0025", storetest.T0, "scheduled", storetest.T0.Add(time.Hour), store.Event{Type: store.EventRotationDue}); err != nil {
		t.Fatal(err)
	}
	if err := src.MarkDue(ctx, "0026", storetest.T0, "scheduled", storetest.T0.Add(time.Hour), store.Event{Type: store.EventRotationDue}); err != nil {
		t.Fatal(err)
	}
	if err := src.MarkOverdue(ctx, "0026", storetest.T0.Add(time.Hour), store.Event{Type: store.EventRotationOverdue}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.RevokeNode(ctx, "node-03", storetest.T0, store.Event{Type: store.EventNodeRevoked, Node: "node-03"}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.PutInventory(ctx, "node-04",
		store.Report{Entries: []store.InventoryEntry{{Nickname: "ovs_cert_cacert", Serial: "1", Trust: "CT,,"}}},
		storetest.T0, store.Event{Type: store.EventInventoryChanged}); err != nil {
		t.Fatal(err)
	}

	c := etcdtest.Start(t, etcdtest.Options{})
	dst := open(t, c, freshPrefix())
	im, err := dst.NewImporter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Export(im); err != nil {
		t.Fatal(err)
	}
	if err := im.Finish(); err != nil {
		t.Fatal(err)
	}
	if im.Counts.Certs != 40 || im.Counts.Tokens != 4 || im.Counts.Requests != 1 {
		t.Fatalf("counts %+v", im.Counts)
	}

	same := func(what string, a, b any) {
		t.Helper()
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s differs after the move:\nbolt: %v\netcd: %v", what, a, b)
		}
	}
	var backends = []storetest.Backend{src, dst}
	results := make([][]any, 2)
	for i, b := range backends {
		ca, err := b.CA(ctx)
		certs, _, err2 := b.ListCerts(ctx, store.CertFilter{Limit: 1000})
		n, err3 := b.VerifyAudit(ctx)
		sched, err4 := b.Schedule(ctx, 100)
		rot, grace, err5 := b.NextTimes(ctx)
		revoked, err6 := b.Revoked(ctx)
		cur, err7 := b.CurrentCert(ctx, "node-05")
		owner, err8 := b.NameOwner(ctx, "node-03")
		tok, err9 := b.Token(ctx, "tok20")
		node, err10 := b.Node(ctx, "node-04")
		byReq, err11 := b.CertByRequest(ctx, "uid-7")
		over, err12 := b.OverdueCount(ctx)
		counts, err13 := b.CertCounts(ctx, storetest.T0)
		events, _, err14 := b.ListEvents(ctx, store.EventFilter{Limit: 1000})
		if err := errors.Join(err, err2, err3, err4, err5, err6, err7, err8, err9, err10, err11, err12, err13, err14); err != nil {
			t.Fatal(err)
		}
		results[i] = []any{ca, certs, n, sched, rot, grace, revoked, cur, owner, tok, node, byReq, over, counts, events}
	}
	for i, what := range []string{"CA", "certificates", "audit count", "schedule", "next rotation", "next grace end", "revoked", "current cert", "name owner", "token", "node", "cert by request", "overdue count", "counts", "events"} {
		same(what, results[0][i], results[1][i])
	}
	// The chain goes on in etcd.
	if err := storetest.Issue(dst, storetest.Cert("ffff", "node-05", storetest.T0), ""); err != nil {
		t.Fatal(err)
	}
	if n, err := dst.VerifyAudit(ctx); err != nil || n != results[0][2].(uint64)+1 {
		t.Fatalf("audit after the move and one issue: %d %v", n, err)
	}
	// A second import into the same prefix is refused.
	if _, err := dst.NewImporter(ctx); !errors.Is(err, etcd.ErrNotEmpty) {
		t.Fatalf("second import: %v, want ErrNotEmpty", err)
	}
}
