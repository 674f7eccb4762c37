// Package storetest is the conformance suite every store backend passes:
// the same tests, parameterised by how to open a fresh backend.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/store"
)

// Backend is the whole contract of a store backend, as the ca, rotation
// and server packages use it.
type Backend interface {
	CA(ctx context.Context) (*store.CA, error)
	CreateCA(ctx context.Context, ca *store.CA, ev store.Event) error
	RenewCA(ctx context.Context, ca *store.CA, ev store.Event) error
	PutToken(ctx context.Context, t *store.Token, ev store.Event) error
	Token(ctx context.Context, id string) (*store.Token, error)
	Cert(ctx context.Context, serial string) (*store.Cert, error)
	NameOwner(ctx context.Context, cn string) (string, error)
	Issue(ctx context.Context, is store.Issuance) error
	AppendEvent(ctx context.Context, ev store.Event) error
	ListCerts(ctx context.Context, f store.CertFilter) ([]*store.Cert, string, error)
	ListEvents(ctx context.Context, f store.EventFilter) ([]*store.Event, bool, error)
	VerifyAudit(ctx context.Context) (uint64, error)
	DueBefore(ctx context.Context, t time.Time, limit int) ([]*store.Cert, error)
	GraceEndedBefore(ctx context.Context, t time.Time, limit int) ([]*store.Cert, error)
	NextTimes(ctx context.Context) (rotate, grace time.Time, err error)
	MarkDue(ctx context.Context, serial string, at time.Time, reason string, graceUntil time.Time, ev store.Event) error
	MarkOverdue(ctx context.Context, serial string, at time.Time, ev store.Event) error
	Reschedule(ctx context.Context, serial string, at time.Time, ev store.Event) error
	CurrentCert(ctx context.Context, node string) (*store.Cert, error)
	ActiveNodes(ctx context.Context) ([]string, error)
	Node(ctx context.Context, name string) (*store.NodeInfo, error)
	PutInventory(ctx context.Context, node string, rep store.Report, at time.Time, ev store.Event) (bool, error)
	NodeInfos(ctx context.Context) ([]*store.NodeInfo, error)
	NameCerts(ctx context.Context, names []string) (map[string][]*store.Cert, error)
	Schedule(ctx context.Context, limit int) ([]*store.Cert, error)
	OverdueCount(ctx context.Context) (int, error)
	CertCounts(ctx context.Context, now time.Time) (map[[2]string]int, error)
	RevokeNode(ctx context.Context, node string, at time.Time, ev store.Event) (int, error)
	ReadmitNode(ctx context.Context, node string, ev store.Event) error
	ForgetNode(ctx context.Context, node string, at time.Time, ev store.Event) ([]string, error)
	RevokeCert(ctx context.Context, serial string, at time.Time, ev store.Event) (*store.Cert, error)
	Revoked(ctx context.Context) ([]*store.Cert, error)
	CertByRequest(ctx context.Context, uid string) (*store.Cert, error)
	RevokeSerial(
		ctx context.Context,
		serial string,
		code int,
		at time.Time,
		ev store.Event,
	) (store.CertRevocation, error)
	RevokeToken(ctx context.Context, id, by string, at time.Time, ev store.Event) (*store.Token, bool, error)
	ListTokens(ctx context.Context, f store.TokenFilter) ([]*store.Token, string, error)
	Close() error
}

// T0 is the suite's reference time.
var T0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Cert makes an active node certificate record.
func Cert(serial, node string, rotate time.Time) *store.Cert {
	return &store.Cert{Serial: serial, Kind: store.KindNode, Node: node, CommonName: node, State: store.StateActive,
		NotBefore: T0, NotAfter: T0.AddDate(5, 0, 0), RotateAfter: rotate, IssuedAt: T0, DER: []byte("der-" + serial)}
}

// Issue stores c (consuming token when set) with an enrolment event.
func Issue(s Backend, c *store.Cert, token string) error {
	return s.Issue(
		context.Background(),
		store.Issuance{
			Cert:    c,
			TokenID: token,
			Event:   store.Event{Time: c.IssuedAt, Type: store.EventEnrolled, Node: c.Node, Serial: c.Serial},
		},
	)
}

// Run runs the suite; open returns a fresh, empty backend for each test
// and arranges its cleanup.
func Run(t *testing.T, open func(t *testing.T) Backend) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Backend)
	}{
		{"CA", testCA},
		{"IssueSupersedesAndIndexes", testIssueSupersedes},
		{"TokenSingleUseUnderConcurrency", testTokenSingleUse},
		{"ConcurrentIssuesAllStored", testConcurrentIssues},
		{"ListCertsPaginationAndFilters", testListCerts},
		{"QueriesOnThousands", testQueriesOnThousands},
		{"RotationMarks", testRotationMarks},
		{"RevokeNode", testRevoke},
		{"RevokedNodeGetsNothing", testRevokedNodeGetsNothing},
		{"ForgetReleasesNames", testForget},
		{"RevokeCert", testRevokeCert},
		{"RevokeNodeIdempotent", testRevokeNodeIdempotent},
		{"RevokeSerial", testRevokeSerial},
		{"TokenLifecycle", testTokenLifecycle},
		{"Inventory", testInventory},
		{"InventoryTunnels", testInventoryTunnels},
		{"NameCerts", testNameCerts},
		{"RequestUID", testRequestUID},
		{"Closed", testClosed},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

func testCA(t *testing.T, s Backend) {
	ctx := context.Background()
	if _, err := s.CA(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("empty store CA: %v", err)
	}
	if err := s.RenewCA(ctx, &store.CA{CertPEM: []byte("x")}, store.Event{Type: store.EventCARenewed}); !errors.Is(
		err,
		store.ErrNotFound,
	) {
		t.Fatalf("renew before create: %v", err)
	}
	if err := s.CreateCA(ctx, &store.CA{CertPEM: []byte("c1"), KeyPEM: []byte("k1")},
		store.Event{Type: store.EventCACreated}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateCA(ctx, &store.CA{CertPEM: []byte("c2")}, store.Event{Type: store.EventCACreated}); !errors.Is(
		err,
		store.ErrExists,
	) {
		t.Fatalf("second create: %v", err)
	}
	if err := s.RenewCA(ctx, &store.CA{CertPEM: []byte("c3"), KeyPEM: []byte("k1"), Previous: [][]byte{[]byte("c1")}},
		store.Event{Type: store.EventCARenewed}); err != nil {
		t.Fatal(err)
	}
	got, err := s.CA(ctx)
	if err != nil || string(got.CertPEM) != "c3" || len(got.Previous) != 1 {
		t.Fatalf("CA after renew: %+v %v", got, err)
	}
	if n, err := s.VerifyAudit(ctx); err != nil || n != 2 {
		t.Fatalf("audit: %d %v", n, err)
	}
}

func testIssueSupersedes(t *testing.T, s Backend) {
	ctx := context.Background()
	for _, c := range []*store.Cert{Cert("a1", "node-a", T0.Add(3*time.Hour)), Cert("a2", "node-a",
		T0.Add(2*time.Hour)), Cert("b1", "node-b", T0.Add(time.Hour))} {
		c.IssuedAt = c.RotateAfter
		if err := Issue(s, c, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := Issue(s, Cert("a2", "node-a", T0), ""); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate serial: %v", err)
	}
	old, _ := s.Cert(ctx, "a1")
	if old.State != store.StateSuperseded || old.SupersededBy != "a2" {
		t.Fatalf("a1: %s by %q", old.State, old.SupersededBy)
	}
	due, err := s.DueBefore(ctx, T0.Add(24*time.Hour), 10)
	if err != nil || len(due) != 2 || due[0].Serial != "b1" || due[1].Serial != "a2" {
		t.Fatalf("due index %v %v, want [b1 a2]", serials(due), err)
	}
	if cur, err := s.CurrentCert(ctx, "node-a"); err != nil || cur.Serial != "a2" {
		t.Fatalf("current: %v %v", cur, err)
	}
	c := Cert("x1", "node-x", T0)
	c.CommonName = "node-a"
	if err := Issue(s, c, ""); !errors.Is(err, store.ErrNameHeld) {
		t.Fatalf("name held: %v", err)
	}
	if owner, _ := s.NameOwner(ctx, "node-a"); owner != "node-a" {
		t.Fatalf("owner %q", owner)
	}
	nodes, _ := s.ActiveNodes(ctx)
	if fmt.Sprint(nodes) != "[node-a node-b]" {
		t.Fatalf("nodes %v", nodes)
	}
}

func serials(cs []*store.Cert) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Serial)
	}
	return out
}

func testTokenSingleUse(t *testing.T, s Backend) {
	ctx := context.Background()
	if err := s.PutToken(ctx, &store.Token{ID: "tok", Node: "node-a", CommonName: "node-a",
		ExpiresAt: T0.Add(time.Hour)}, store.Event{Type: store.EventTokenCreated}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutToken(ctx, &store.Token{ID: "tok"}, store.Event{Type: store.EventTokenCreated}); !errors.Is(
		err,
		store.ErrExists,
	) {
		t.Fatalf("duplicate token id: %v", err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, used := 0, 0
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := Issue(s, Cert(fmt.Sprintf("s%02d", i), "node-a", T0), "tok")
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

func testConcurrentIssues(t *testing.T, s Backend) {
	ctx := context.Background()
	const n = 300
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			serial := fmt.Sprintf("g%04d", i)
			if i == 7 {
				serial = "g0006"
			}
			errs[i] = Issue(s, Cert(serial, fmt.Sprintf("node-%d", i), T0), "")
		}()
	}
	wg.Wait()
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
		t.Fatalf("%d failed, want exactly the duplicate serial", failed)
	}
	certs, _, err := s.ListCerts(ctx, store.CertFilter{Limit: 1000})
	if err != nil || len(certs) != n-1 {
		t.Fatalf("%d stored (%v), want %d", len(certs), err, n-1)
	}
	if got, err := s.VerifyAudit(ctx); err != nil || got != uint64(n-1) {
		t.Fatalf("audit: %d %v", got, err)
	}
}

func testListCerts(t *testing.T, s Backend) {
	ctx := context.Background()
	const nodes, per = 50, 3
	for n := range nodes {
		for i := range per {
			c := Cert(fmt.Sprintf("%03d%d", n, i), fmt.Sprintf("node-%03d", n), T0)
			c.IssuedAt = T0.Add(time.Duration(i) * time.Second)
			if err := Issue(s, c, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	seen := map[string]bool{}
	after := ""
	for {
		page, next, err := s.ListCerts(ctx, store.CertFilter{After: after, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
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
	if len(seen) != nodes*per {
		t.Fatalf("%d certs over all pages", len(seen))
	}
	if byNode, _, _ := s.ListCerts(ctx, store.CertFilter{Node: "node-007"}); len(byNode) != per {
		t.Fatalf("node filter: %d", len(byNode))
	}
	if active, _, _ := s.ListCerts(ctx, store.CertFilter{State: store.StateActive, Now: T0, Limit: 1000}); len(
		active,
	) != nodes {
		t.Fatalf("active: %d, want one per node", len(active))
	}
	if expired, _, _ := s.ListCerts(ctx, store.CertFilter{State: store.StateExpired, Now: T0.AddDate(6, 0, 0),
		Limit: 1000}); len(
		expired,
	) != nodes {
		t.Fatalf("expired after 6 years: %d", len(expired))
	}
	counts, err := s.CertCounts(ctx, T0)
	if err != nil || counts[[2]string{"node", "active"}] != nodes ||
		counts[[2]string{"node", "superseded"}] != nodes*(per-1) {
		t.Fatalf("counts %v %v", counts, err)
	}
}

func testQueriesOnThousands(t *testing.T, s Backend) {
	ctx := context.Background()
	const n = 3000
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c := Cert(fmt.Sprintf("%05d", i), fmt.Sprintf("node-%04d", i%1000), T0.Add(time.Duration(i)*time.Hour))
			c.IssuedAt = T0.Add(time.Duration(i) * time.Minute)
			if err := Issue(s, c, ""); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	due, _, err := s.ListCerts(ctx, store.CertFilter{DueBefore: T0.Add(500 * time.Hour), Limit: 1000})
	if err != nil || len(due) != 500 {
		t.Fatalf("due before: %d %v", len(due), err)
	}
	var got []*store.Event
	after := uint64(0)
	for {
		page, more, err := s.ListEvents(
			ctx,
			store.EventFilter{
				Type:     "cert.",
				Since:    T0.Add(1000 * time.Minute),
				Until:    T0.Add(1100 * time.Minute),
				AfterSeq: after,
				Limit:    37,
			},
		)
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
	if byNode, _, _ := s.ListEvents(ctx, store.EventFilter{Node: "node-0042", Limit: 1000}); len(byNode) != 3 {
		t.Fatalf("node filter: %d events, want 3", len(byNode))
	}
	if none, _, _ := s.ListEvents(ctx, store.EventFilter{Type: "rotation.", Limit: 1000}); len(none) != 0 {
		t.Fatalf("type prefix rotation.: %d", len(none))
	}
	if got, err := s.VerifyAudit(ctx); err != nil || got != n {
		t.Fatalf("audit %d %v", got, err)
	}
}

func testRotationMarks(t *testing.T, s Backend) {
	ctx := context.Background()
	for i, node := range []string{"node-a", "node-b", "node-c"} {
		if err := Issue(s, Cert("s"+node, node, T0.Add(time.Duration(i+1)*time.Hour)), ""); err != nil {
			t.Fatal(err)
		}
	}
	rot, grace, err := s.NextTimes(ctx)
	if err != nil || !rot.Equal(T0.Add(time.Hour)) || !grace.IsZero() {
		t.Fatalf("next times %s %s %v", rot, grace, err)
	}
	// node-a due now, grace 1h.
	if err := s.MarkDue(ctx, "snode-a", T0.Add(time.Hour), "scheduled", T0.Add(2*time.Hour),
		store.Event{Type: store.EventRotationDue}); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDue(ctx, "snode-a", T0.Add(time.Hour), "scheduled", T0.Add(2*time.Hour),
		store.Event{Type: store.EventRotationDue}); !errors.Is(
		err,
		store.ErrExists,
	) {
		t.Fatalf("marking due twice: %v", err)
	}
	if ended, _ := s.GraceEndedBefore(ctx, T0.Add(2*time.Hour), 10); len(ended) != 1 {
		t.Fatalf("grace ended: %v", serials(ended))
	}
	if err := s.MarkOverdue(ctx, "snode-a", T0.Add(2*time.Hour),
		store.Event{Type: store.EventRotationOverdue}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.OverdueCount(ctx); n != 1 {
		t.Fatalf("overdue count %d", n)
	}
	// node-c forced earlier than node-b.
	if err := s.Reschedule(ctx, "snode-c", T0.Add(90*time.Minute),
		store.Event{Type: store.EventRotationForced}); err != nil {
		t.Fatal(err)
	}
	sched, err := s.Schedule(ctx, 10)
	if err != nil || fmt.Sprint(serials(sched)) != "[snode-a snode-c snode-b]" {
		t.Fatalf("schedule %v %v, want overdue a, then forced c, then b", serials(sched), err)
	}
	// Rotating node-a clears its overdue state.
	if err := Issue(s, Cert("s2node-a", "node-a", T0.Add(40000*time.Hour)), ""); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.OverdueCount(ctx); n != 0 {
		t.Fatalf("overdue count after rotation %d", n)
	}
	if err := s.MarkDue(ctx, "snode-a", T0, "x", T0, store.Event{}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("marking a superseded cert: %v", err)
	}
}

func testRevoke(t *testing.T, s Backend) {
	ctx := context.Background()
	for _, c := range []*store.Cert{Cert("r1", "node-a", T0), Cert("r2", "node-a", T0.Add(time.Hour))} {
		if err := Issue(s, c, ""); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.RevokeNode(
		ctx,
		"node-a",
		T0.Add(time.Minute),
		store.Event{Type: store.EventNodeRevoked, Node: "node-a"},
	)
	if err != nil || n != 2 {
		t.Fatalf("revoke: %d %v", n, err)
	}
	if _, err := s.RevokeNode(ctx, "node-a", T0, store.Event{}); !errors.Is(err, store.ErrAlreadyRevoked) {
		t.Fatalf("second revoke: %v", err)
	}
	if rev, _ := s.Revoked(ctx); len(rev) != 2 {
		t.Fatalf("revoked list %d", len(rev))
	}
	if due, _ := s.DueBefore(ctx, T0.AddDate(10, 0, 0), 10); len(due) != 0 {
		t.Fatalf("revoked certs still scheduled: %v", serials(due))
	}
	err = s.Issue(
		ctx,
		store.Issuance{Cert: Cert("r3", "node-a", T0), AuthSerial: "r2", Event: store.Event{Type: store.EventRenewed}},
	)
	if !errors.Is(err, store.ErrRevoked) {
		t.Fatalf("renewal with a revoked credential: %v", err)
	}
}

func testInventory(t *testing.T, s Backend) {
	ctx := context.Background()
	if err := Issue(s, Cert("i1", "node-a", T0), ""); err != nil {
		t.Fatal(err)
	}
	inv := store.Report{Entries: []store.InventoryEntry{{Nickname: "ovs_cert_cacert", Serial: "1", Trust: "CT,,"}}}
	for i, want := range []bool{true, false} {
		changed, err := s.PutInventory(ctx, "node-a", inv, T0, store.Event{Type: store.EventInventoryChanged})
		if err != nil || changed != want {
			t.Fatalf("report %d: changed=%v %v", i, changed, err)
		}
	}
	n, err := s.Node(ctx, "node-a")
	if err != nil || len(n.Inventory) != 1 || n.CommonName != "node-a" {
		t.Fatalf("node %+v %v", n, err)
	}
	if _, err := s.PutInventory(ctx, "nobody", inv, T0, store.Event{}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("inventory of an unknown node: %v", err)
	}
}

// Tunnels ride with the inventory in the node's record: a report that
// carries them replaces them, one that does not keeps them, and they
// never write an audit event (only an inventory change does).
func testInventoryTunnels(t *testing.T, s Backend) {
	ctx := context.Background()
	if err := Issue(s, Cert("t1", "node-a", T0), ""); err != nil {
		t.Fatal(err)
	}
	inv := []store.InventoryEntry{{Nickname: "ovs_cert_cacert", Serial: "1", Trust: "CT,,"}}
	up := store.TunnelRecord{Peer: "node-b", PeerAddress: "10.0.0.2", Established: true, IKEState: 7,
		PeerKeyID: "AwEAAbcde", PeerNotAfter: T0.AddDate(5, 0, 0), AuthenticatedAt: T0, ChildSAs: 2, ChildAddedAt: T0,
		LocalSerial: "t1"}
	down := store.TunnelRecord{Peer: "node-c", PeerAddress: "10.0.0.3"}
	events := func() int {
		evs, _, err := s.ListEvents(ctx, store.EventFilter{Type: store.EventInventoryChanged})
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}
	for i, step := range []struct {
		rep     store.Report
		changed bool
		tunnels []store.TunnelRecord
		at      time.Time // TunnelsAt
	}{
		{store.Report{Entries: inv}, true, nil, time.Time{}},
		{store.Report{Entries: inv, TunnelsReported: true, Tunnels: []store.TunnelRecord{up, down}}, false,
			[]store.TunnelRecord{up, down}, T0.Add(1)},
		{store.Report{Entries: inv}, false, []store.TunnelRecord{up, down}, T0.Add(1)},
		{store.Report{Entries: inv, TunnelsReported: true, Tunnels: []store.TunnelRecord{down}}, false,
			[]store.TunnelRecord{down}, T0.Add(3)},
		{store.Report{TunnelsReported: true}, true, nil, T0.Add(4)},
	} {
		at := T0.Add(time.Duration(i))
		changed, err := s.PutInventory(ctx, "node-a", step.rep, at, store.Event{Type: store.EventInventoryChanged})
		if err != nil || changed != step.changed {
			t.Fatalf("report %d: changed=%v %v", i, changed, err)
		}
		n, err := s.Node(ctx, "node-a")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(n.Tunnels, step.tunnels) || !n.TunnelsAt.Equal(step.at) || !n.ReportedAt.Equal(at) {
			t.Fatalf("report %d: tunnels %+v at %s, reported %s; want %+v at %s", i, n.Tunnels, n.TunnelsAt,
				n.ReportedAt, step.tunnels, step.at)
		}
	}
	if n := events(); n != 2 {
		t.Fatalf("%d inventory events; want 2 (the first report and the emptied inventory)", n)
	}
	nodes, err := s.NodeInfos(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].Name != "node-a" || nodes[0].TunnelsAt.IsZero() {
		t.Fatalf("node infos %+v %v", nodes, err)
	}
	// Issuing to the node again keeps its tunnels.
	if err := Issue(s, Cert("t2", "node-a", T0), ""); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Node(ctx, "node-a"); err != nil || n.TunnelsAt.IsZero() {
		t.Fatalf("after an issue: %+v %v", n, err)
	}
}

// NameCerts finds the node certificates under a name: the holder's, a
// node so named, and revoked ones of a node that was forgotten since.
func testNameCerts(t *testing.T, s Backend) {
	ctx := context.Background()
	cn := func(c *store.Cert, name string) *store.Cert { c.CommonName = name; return c }
	for _, c := range []*store.Cert{
		cn(Cert("a1", "node-a", T0), "chassis-a"),
		cn(Cert("a2", "node-a", T0), "chassis-a"),
		Cert("b1", "node-b", T0),
		cn(Cert("f1", "node-f", T0), "chassis-f"),
	} {
		if err := Issue(s, c, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RevokeNode(ctx, "node-f", T0, store.Event{Type: store.EventNodeRevoked}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ForgetNode(ctx, "node-f", T0, store.Event{Type: store.EventNodeForgotten}); err != nil {
		t.Fatal(err)
	}
	if err := Issue(s, cn(Cert("g1", "node-g", T0), "chassis-f"), ""); err != nil {
		t.Fatal(err)
	}
	got, err := s.NameCerts(ctx, []string{"chassis-a", "node-b", "chassis-f", "nobody"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"chassis-a": {"a1", "a2"}, "node-b": {"b1"}, "chassis-f": {"f1", "g1"}}
	if len(got) != len(want) {
		t.Errorf("names %v; want %v", got, want)
	}
	for name, w := range want {
		if g := serials(got[name]); !reflect.DeepEqual(g, w) {
			t.Errorf("%s: %v; want %v", name, g, w)
		}
	}
	if got, err := s.NameCerts(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("no names: %v %v", got, err)
	}
}

func testClosed(t *testing.T, s Backend) {
	s.Close()
	if err := s.AppendEvent(context.Background(), store.Event{}); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("write after close: %v", err)
	}
}

func testRequestUID(t *testing.T, s Backend) {
	ctx := context.Background()
	if _, err := s.CertByRequest(ctx, "uid-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown uid: %v", err)
	}
	issue := func(serial string) error {
		c := Cert(serial, "node-a", T0)
		c.RequestUID = "uid-1"
		return s.Issue(ctx, store.Issuance{Cert: c, RequestUID: "uid-1", Event: store.Event{Type: store.EventEnrolled}})
	}
	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = issue(fmt.Sprintf("u%d", i)) }()
	}
	wg.Wait()
	won := ""
	for i, err := range errs {
		switch {
		case err == nil:
			if won != "" {
				t.Fatal("two certificates for one request UID")
			}
			won = fmt.Sprintf("u%d", i)
		case !errors.Is(err, store.ErrExists):
			t.Fatal(err)
		}
	}
	c, err := s.CertByRequest(ctx, "uid-1")
	if err != nil || c.Serial != won {
		t.Fatalf("by request: %v %v, want %s", c, err, won)
	}
}

// token stores an unused token for node (its epoch set by the store).
func token(t *testing.T, s Backend, id, node string) {
	t.Helper()
	tok := &store.Token{ID: id, Node: node, CommonName: node, CreatedAt: T0, ExpiresAt: T0.Add(time.Hour)}
	if err := s.PutToken(context.Background(), tok, store.Event{Type: store.EventTokenCreated,
		Node: node}); err != nil {
		t.Fatal(err)
	}
}

// testRevokedNodeGetsNothing: a revoked node gets no certificate (with or
// without a token, by any door) and no new token until it is re-admitted;
// tokens made before the revocation stay void after it.
func testRevokedNodeGetsNothing(t *testing.T, s Backend) {
	ctx := context.Background()
	token(t, s, "t1", "node-a")
	token(t, s, "spare", "node-a")
	if err := Issue(s, Cert("a1", "node-a", T0), "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeNode(ctx, "node-a", T0, store.Event{Type: store.EventNodeRevoked,
		Node: "node-a"}); err != nil {
		t.Fatal(err)
	}
	if err := Issue(s, Cert("a2", "node-a", T0), "spare"); !errors.Is(err, store.ErrNodeRevoked) {
		t.Fatalf("issue with a spare token after revocation: %v", err)
	}
	c := Cert("a3", "node-a", T0)
	c.RequestUID = "uid-a3"
	if err := s.Issue(ctx, store.Issuance{Cert: c, RequestUID: "uid-a3",
		Event: store.Event{Type: store.EventEnrolled}}); !errors.Is(
		err,
		store.ErrNodeRevoked,
	) {
		t.Fatalf("issue without a token (Kubernetes door) after revocation: %v", err)
	}
	err := s.PutToken(
		ctx,
		&store.Token{ID: "t2", Node: "node-a", CommonName: "node-a"},
		store.Event{Type: store.EventTokenCreated},
	)
	if !errors.Is(err, store.ErrNodeRevoked) {
		t.Fatalf("token for a revoked node: %v", err)
	}
	if err := s.ReadmitNode(ctx, "node-a", store.Event{Type: store.EventNodeReadmitted, Node: "node-a"}); err != nil {
		t.Fatal(err)
	}
	if err := s.ReadmitNode(ctx, "node-a", store.Event{}); !errors.Is(err, store.ErrNotRevoked) {
		t.Fatalf("readmitting a node that is not revoked: %v", err)
	}
	if err := Issue(s, Cert("a4", "node-a", T0), "spare"); !errors.Is(err, store.ErrTokenVoided) {
		t.Fatalf("issue with a pre-revocation token after readmission: %v", err)
	}
	token(t, s, "t3", "node-a")
	if err := Issue(s, Cert("a5", "node-a", T0), "t3"); err != nil {
		t.Fatalf("issue with a token made after readmission: %v", err)
	}
	// Revoking a node that never enrolled voids its tokens too.
	token(t, s, "tb", "node-b")
	if n, err := s.RevokeNode(ctx, "node-b", T0, store.Event{Type: store.EventNodeRevoked,
		Node: "node-b"}); err != nil ||
		n != 0 {
		t.Fatalf("revoke a node without certificates: %d %v", n, err)
	}
	if err := s.ReadmitNode(ctx, "node-b", store.Event{Type: store.EventNodeReadmitted}); err != nil {
		t.Fatal(err)
	}
	if err := Issue(s, Cert("b1", "node-b", T0), "tb"); !errors.Is(err, store.ErrTokenVoided) {
		t.Fatalf("issue with a token made before the revocation: %v", err)
	}
	if n, err := s.VerifyAudit(ctx); err != nil || n == 0 {
		t.Fatalf("audit: %d %v", n, err)
	}
}

// testForget: only a revoked node can be forgotten; that frees its names.
func testForget(t *testing.T, s Backend) {
	ctx := context.Background()
	if err := Issue(s, Cert("f1", "node-a", T0), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ForgetNode(ctx, "node-a", T0, store.Event{}); !errors.Is(err, store.ErrNotRevoked) {
		t.Fatalf("forget an unrevoked node: %v", err)
	}
	if err := Issue(s, Cert("f2", "node-b", T0), ""); err != nil {
		t.Fatal(err)
	}
	taken := Cert("f3", "node-c", T0)
	taken.CommonName = "node-a"
	if err := Issue(s, taken, ""); !errors.Is(err, store.ErrNameHeld) {
		t.Fatalf("another node taking a held name: %v", err)
	}
	if _, err := s.RevokeNode(ctx, "node-a", T0.Add(time.Minute),
		store.Event{Type: store.EventNodeRevoked}); err != nil {
		t.Fatal(err)
	}
	if err := Issue(s, taken, ""); !errors.Is(err, store.ErrNameHeld) {
		t.Fatalf("a revoked node's name taken before forget: %v", err)
	}
	released, err := s.ForgetNode(
		ctx,
		"node-a",
		T0.Add(2*time.Minute),
		store.Event{Type: store.EventNodeForgotten, Node: "node-a"},
	)
	if err != nil || fmt.Sprint(released) != "[node-a]" {
		t.Fatalf("forget: %v %v", released, err)
	}
	if owner, _ := s.NameOwner(ctx, "node-a"); owner != "" {
		t.Fatalf("name still held by %q", owner)
	}
	if err := Issue(s, taken, ""); err != nil {
		t.Fatalf("another node taking a forgotten node's name: %v", err)
	}
	if owner, _ := s.NameOwner(ctx, "node-b"); owner != "node-b" {
		t.Fatalf("forget released another node's name: %q", owner)
	}
	// Still revoked: forgetting is not re-admission.
	again := Cert("f4", "node-a", T0)
	again.CommonName = "node-a2"
	if err := Issue(s, again, ""); !errors.Is(err, store.ErrNodeRevoked) {
		t.Fatalf("forgotten node issued: %v", err)
	}
}

// testRevokeCert: one certificate revoked is listed and no longer active.
func testRevokeCert(t *testing.T, s Backend) {
	ctx := context.Background()
	adm := Cert("ad1", "admin", T0)
	adm.Kind = store.KindAdmin
	if err := Issue(s, adm, ""); err != nil {
		t.Fatal(err)
	}
	c, err := s.RevokeCert(ctx, "ad1", T0.Add(time.Minute), store.Event{Type: store.EventCertRevoked, Serial: "ad1"})
	if err != nil || c.State != store.StateRevoked || !c.RevokedAt.Equal(T0.Add(time.Minute)) {
		t.Fatalf("revoke cert: %+v %v", c, err)
	}
	if _, err := s.RevokeCert(ctx, "ad1", T0, store.Event{}); !errors.Is(err, store.ErrRevoked) {
		t.Fatalf("second revoke: %v", err)
	}
	if _, err := s.RevokeCert(ctx, "nope", T0, store.Event{}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown serial: %v", err)
	}
	rev, _ := s.Revoked(ctx)
	if len(rev) != 1 || rev[0].Serial != "ad1" {
		t.Fatalf("revoked list %v", serials(rev))
	}
	if got, _ := s.Cert(ctx, "ad1"); got.State != store.StateRevoked {
		t.Fatalf("stored state %s", got.State)
	}
}

// testRevokeNodeIdempotent: revoking a revoked node reports
// ErrAlreadyRevoked and writes nothing; a node nothing is known of is
// ErrNotFound and is not revoked in advance.
func testRevokeNodeIdempotent(t *testing.T, s Backend) {
	ctx := context.Background()
	if err := Issue(s, Cert("a1", "node-a", T0), ""); err != nil {
		t.Fatal(err)
	}
	ev := store.Event{Type: store.EventNodeRevoked, Node: "node-a"}
	if n, err := s.RevokeNode(ctx, "node-a", T0, ev); err != nil || n != 1 {
		t.Fatalf("revoke: %d %v", n, err)
	}
	before, _ := s.VerifyAudit(ctx)
	if n, err := s.RevokeNode(ctx, "node-a", T0, ev); !errors.Is(err, store.ErrAlreadyRevoked) || n != 0 {
		t.Fatalf("second revoke: %d %v; want ErrAlreadyRevoked", n, err)
	}
	if after, _ := s.VerifyAudit(ctx); after != before {
		t.Fatalf("second revoke wrote audit records: %d -> %d", before, after)
	}
	if _, err := s.RevokeNode(ctx, "nobody", T0, ev); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoke an unknown node: %v; want ErrNotFound", err)
	}
	if _, err := s.Node(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an unknown node got a record: %v", err)
	}
}

// testRevokeSerial: revoking a node's current certificate revokes the
// node (every unexpired certificate, tokens void) with the reason code on
// each; a superseded one is revoked alone; again is Already; unknown is
// ErrNotFound.
func testRevokeSerial(t *testing.T, s Backend) {
	ctx := context.Background()
	const keyCompromise, superseded = 1, 4
	for _, c := range []*store.Cert{Cert("a1", "node-a", T0), Cert("a2", "node-a", T0),
		Cert("b1", "node-b", T0), Cert("b2", "node-b", T0)} {
		if err := Issue(s, c, ""); err != nil {
			t.Fatal(err)
		}
	}
	token(t, s, "spare-b", "node-b")
	at := T0.Add(time.Hour)
	for _, tc := range []struct {
		serial             string
		code               int
		already, nodeRevok bool
		certs              int
		evType             string
	}{
		{"a1", superseded, false, false, 1, store.EventCertRevoked}, // superseded: alone
		{"a1", keyCompromise, true, false, 0, ""},                   // again: nothing changes
		{"b2", keyCompromise, false, true, 2, store.EventNodeRevoked},
		{"b1", keyCompromise, true, false, 0, ""}, // revoked with its node
	} {
		res, err := s.RevokeSerial(ctx, tc.serial, tc.code, at, store.Event{Time: at, Actor: "admin:a"})
		if err != nil || res.Already != tc.already || res.NodeRevoked != tc.nodeRevok ||
			res.Certificates != tc.certs || res.Cert == nil || res.Cert.State != store.StateRevoked {
			t.Fatalf("revoke %s: %+v %v", tc.serial, res, err)
		}
		if tc.evType != "" {
			evs, _, _ := s.ListEvents(ctx, store.EventFilter{Type: tc.evType})
			if len(evs) == 0 || evs[len(evs)-1].Serial != tc.serial {
				t.Fatalf("revoke %s: no %s event naming it: %+v", tc.serial, tc.evType, evs)
			}
		}
	}
	for serial, code := range map[string]int{"a1": superseded, "b1": keyCompromise, "b2": keyCompromise} {
		if c, _ := s.Cert(ctx, serial); c.State != store.StateRevoked || c.RevocationReason != code ||
			!c.RevokedAt.Equal(at) {
			t.Errorf(
				"%s: %s code %d at %s; want revoked code %d",
				serial,
				c.State,
				c.RevocationReason,
				c.RevokedAt,
				code,
			)
		}
	}
	if c, _ := s.Cert(ctx, "a2"); c.State != store.StateActive {
		t.Errorf("node-a's current certificate: %s; want active (a superseded one was revoked alone)", c.State)
	}
	if n, _ := s.Node(ctx, "node-b"); !n.Revoked {
		t.Error("node-b not revoked with its current certificate")
	}
	if err := Issue(s, Cert("b3", "node-b", T0), "spare-b"); !errors.Is(err, store.ErrNodeRevoked) {
		t.Errorf("issue to node-b after its current certificate was revoked: %v", err)
	}
	if rev, _ := s.Revoked(ctx); len(rev) != 3 {
		t.Errorf("revoked list %v", serials(rev))
	}
	if _, err := s.RevokeSerial(ctx, "ffff", 0, at, store.Event{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown serial: %v", err)
	}
	if n, err := s.VerifyAudit(ctx); err != nil || n == 0 {
		t.Fatalf("audit: %d %v", n, err)
	}
}

// testTokenLifecycle: listing shows unused tokens by default and every
// state with All; a revoked token admits no node; revoking is idempotent;
// a used token cannot be revoked.
func testTokenLifecycle(t *testing.T, s Backend) {
	ctx := context.Background()
	for _, id := range []string{"t-used", "t-rev", "t-live"} {
		token(t, s, id, "node-"+id)
	}
	old := &store.Token{ID: "t-old", Node: "node-old", CommonName: "node-old", CreatedAt: T0.Add(-2 * time.Hour),
		ExpiresAt: T0.Add(-time.Hour)}
	if err := s.PutToken(ctx, old, store.Event{Type: store.EventTokenCreated}); err != nil {
		t.Fatal(err)
	}
	if err := Issue(s, Cert("u1", "node-t-used", T0), "t-used"); err != nil {
		t.Fatal(err)
	}
	at := T0.Add(time.Minute)
	ev := store.Event{Time: at, Type: store.EventTokenRevoked, Actor: "admin:a"}
	tok, already, err := s.RevokeToken(ctx, "t-rev", "admin:a", at, ev)
	if err != nil || already || !tok.RevokedAt.Equal(at) || tok.RevokedBy != "admin:a" {
		t.Fatalf("revoke: %+v %v %v", tok, already, err)
	}
	if evs, _, _ := s.ListEvents(ctx, store.EventFilter{Type: store.EventTokenRevoked}); len(evs) != 1 ||
		evs[0].Node != "node-t-rev" {
		t.Fatalf("revocation events %+v", evs)
	}
	if _, already, err := s.RevokeToken(ctx, "t-rev", "admin:b", at, ev); err != nil || !already {
		t.Fatalf("second revoke: %v %v; want already", already, err)
	}
	if evs, _, _ := s.ListEvents(ctx, store.EventFilter{Type: store.EventTokenRevoked}); len(evs) != 1 {
		t.Fatalf("second revoke audited again: %d events", len(evs))
	}
	if _, _, err := s.RevokeToken(ctx, "t-used", "admin:a", at, ev); !errors.Is(err, store.ErrTokenUsed) {
		t.Fatalf("revoke a used token: %v", err)
	}
	if _, _, err := s.RevokeToken(ctx, "nope", "admin:a", at, ev); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoke an unknown token: %v", err)
	}
	if err := Issue(s, Cert("r1", "node-t-rev", T0), "t-rev"); !errors.Is(err, store.ErrTokenRevoked) {
		t.Fatalf("issue with a revoked token: %v", err)
	}
	if got, err := s.Token(ctx, "t-rev"); err != nil || got.StateAt(at) != store.TokenRevoked {
		t.Fatalf("stored revoked token: %+v %v", got, err)
	}
	for _, tc := range []struct {
		f    store.TokenFilter
		want string
	}{
		{store.TokenFilter{Now: at}, "[t-live]"},
		{store.TokenFilter{Now: at, All: true}, "[t-live:unused t-old:expired t-rev:revoked t-used:used]"},
		{store.TokenFilter{Now: at, All: true, Node: "node-t-rev"}, "[t-rev:revoked]"},
		{store.TokenFilter{Now: T0.Add(2 * time.Hour)}, "[]"},
	} {
		toks, next, err := s.ListTokens(ctx, tc.f)
		if err != nil || next != "" {
			t.Fatalf("list %+v: %v %q", tc.f, err, next)
		}
		var got []string
		for _, tok := range toks {
			if tc.f.All {
				got = append(got, tok.ID+":"+tok.StateAt(at))
			} else {
				got = append(got, tok.ID)
			}
		}
		if g := fmt.Sprint(got); g != tc.want {
			t.Errorf("list %+v: %s; want %s", tc.f, g, tc.want)
		}
	}
	page, next, err := s.ListTokens(ctx, store.TokenFilter{Now: at, All: true, Limit: 2})
	if err != nil || len(page) != 2 || next != "t-old" {
		t.Fatalf("first page: %d %q %v", len(page), next, err)
	}
	page, next, err = s.ListTokens(ctx, store.TokenFilter{Now: at, All: true, Limit: 2, After: next})
	if err != nil || len(page) != 2 || page[0].ID != "t-rev" || next != "" {
		t.Fatalf("second page: %d %q %v", len(page), next, err)
	}
}
