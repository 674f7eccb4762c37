package rotation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/internal/testclock"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fakeClock is the tests' shared clock.
type fakeClock = testclock.Clock

func TestDueAt(t *testing.T) {
	nb := t0
	na := nb.AddDate(5, 0, 0)
	cases := []struct {
		name   string
		p      Policy
		serial string
		min    time.Time
		max    time.Time
	}{
		{
			"90% without spread",
			DefaultPolicy,
			"ab",
			nb.Add(na.Sub(nb) * 9 / 10).Add(-time.Second),
			nb.Add(na.Sub(nb) * 9 / 10),
		},
		{
			"with spread",
			Policy{Fraction: 0.9, Spread: 30 * 24 * time.Hour},
			"ab",
			nb.Add(na.Sub(nb) * 9 / 10).Add(-time.Second),
			nb.Add(na.Sub(nb)*9/10 + 30*24*time.Hour),
		},
	}
	for _, tc := range cases {
		got := tc.p.DueAt(nb, na, tc.serial)
		if got.Before(tc.min) || got.After(tc.max) {
			t.Errorf("%s: due %s, want in [%s, %s]", tc.name, got, tc.min, tc.max)
		}
		if again := tc.p.DueAt(nb, na, tc.serial); !again.Equal(got) {
			t.Errorf("%s: not deterministic", tc.name)
		}
	}
	// The spread actually spreads: 1000 serials over 30 days land in many days.
	days := map[int]bool{}
	for i := range 1000 {
		days[int(SpreadOffset(fmt.Sprintf("%x", i), 30*24*time.Hour)/(24*time.Hour))] = true
	}
	if len(days) < 25 {
		t.Errorf("spread over 30 days hit only %d distinct days", len(days))
	}
	if SpreadOffset("ab", 0) != 0 {
		t.Error("spread off must give 0")
	}
}

func TestPolicyValidate(t *testing.T) {
	life := NodeLifetime(t0)
	cases := []struct {
		p  Policy
		ok bool
	}{
		{DefaultPolicy, true},
		{Policy{Fraction: 0.9, Spread: 30 * 24 * time.Hour, Grace: 30 * 24 * time.Hour}, true},
		{Policy{Fraction: 0.9, Spread: 60 * 24 * time.Hour, Grace: 60 * 24 * time.Hour}, false},
		{Policy{Fraction: 1}, false},
		{Policy{Fraction: 0.9, Grace: -1}, false},
	}
	for _, tc := range cases {
		if err := tc.p.Validate(life); (err == nil) != tc.ok {
			t.Errorf("%+v: %v, want ok=%v", tc.p, err, tc.ok)
		}
	}
}

func TestGraceUntilNeverPastHalfTheMargin(t *testing.T) {
	p := Policy{Fraction: 0.9, Grace: 365 * 24 * time.Hour}
	due := t0
	na := t0.Add(100 * 24 * time.Hour)
	if got := p.GraceUntil(due, na); !got.Equal(t0.Add(50 * 24 * time.Hour)) {
		t.Fatalf("grace until %s, want halfway to NotAfter", got)
	}
}

func TestRootRenewAt(t *testing.T) {
	root := &x509.Certificate{NotBefore: t0, NotAfter: t0.AddDate(10, 0, 0)}
	at := DefaultPolicy.RootRenewAt(root)
	// Remaining life at renewal = 5 years + 10% of 5 years.
	left := root.NotAfter.Sub(at)
	want := NodeLifetime(t0) + NodeLifetime(t0)/10
	if d := left - want; d < -24*time.Hour || d > 24*time.Hour {
		t.Fatalf("root renewed with %s left, want about %s", left, want)
	}
}

// recorder is a Notifier that remembers what nodes were told.
type recorder struct {
	mu  sync.Mutex
	due map[string]string // node -> serial
	ca  int
}

func (r *recorder) RotationDue(node, serial, _ string) {
	r.mu.Lock()
	r.due[node] = serial
	r.mu.Unlock()
}
func (r *recorder) CABundleChanged([]byte) { r.mu.Lock(); r.ca++; r.mu.Unlock() }

func (r *recorder) take() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.due
	r.due = map[string]string{}
	return d
}

type world struct {
	t     *testing.T
	st    *bolt.Store
	auth  *ca.Authority
	clock *fakeClock
	sched *Scheduler
	rec   *recorder
	keys  map[string]*ecdsa.PrivateKey
}

func newWorld(t *testing.T, p Policy) *world {
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := testclock.New(t0)
	root, _, err := ca.Bootstrap(context.Background(), st, ca.RootConfig{}, clock)
	if err != nil {
		t.Fatal(err)
	}
	auth := ca.New(st, root, ca.Config{Clock: clock, Rand: rand.Reader, RotateAfter: p.DueAt})
	rec := &recorder{due: map[string]string{}}
	return &world{
		t:     t,
		st:    st,
		auth:  auth,
		clock: clock,
		sched: NewScheduler(st, auth, rec, p, clock, nil),
		rec:   rec,
		keys:  map[string]*ecdsa.PrivateKey{},
	}
}

func (w *world) csr(node string) []byte {
	key, ok := w.keys[node]
	if !ok {
		key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		w.keys[node] = key
	}
	der, err := x509.CreateCertificateRequest(
		rand.Reader,
		&x509.CertificateRequest{Subject: pkix.Name{CommonName: node}},
		key,
	)
	if err != nil {
		w.t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func (w *world) enroll(node string) *store.Cert {
	ctx := context.Background()
	tok, _, err := w.auth.CreateToken(ctx, node, "", 0, "test")
	if err != nil {
		w.t.Fatal(err)
	}
	c, err := w.auth.EnrollWithToken(ctx, tok, w.csr(node))
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

func (w *world) renew(node string) *store.Cert {
	c, err := w.auth.Renew(context.Background(), ca.Caller{Kind: store.KindNode, Node: node, CN: node}, w.csr(node))
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// TestTwelveYears: 100 nodes enrol over the first year, then the fleet
// lives 12 years on a fake clock, each node renewing when told.
func TestTwelveYears(t *testing.T) {
	p := Policy{Fraction: 0.9, Spread: 7 * 24 * time.Hour, Grace: 7 * 24 * time.Hour}
	w := newWorld(t, p)
	ctx := context.Background()
	firstRoot := w.auth.Root()
	const nodes = 100
	enrolAt := func(i int) time.Time { return t0.Add(time.Duration(i) * 365 * 24 * time.Hour / nodes) }
	current := map[string]*store.Cert{}
	var all []*store.Cert
	end := t0.AddDate(12, 0, 0)
	enrolled := 0
	rotations := 0
	for now := t0; now.Before(end); {
		w.clock.Set(now)
		for enrolled < nodes && !enrolAt(enrolled).After(now) {
			name := fmt.Sprintf("node-%03d", enrolled)
			current[name] = w.enroll(name)
			all = append(all, current[name])
			enrolled++
		}
		next, err := w.sched.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for node, serial := range w.rec.take() {
			old := current[node]
			if old.Serial != serial {
				t.Fatalf("%s told to rotate %s, holds %s", node, serial, old.Serial)
			}
			age := now.Sub(old.NotBefore)
			life := old.NotAfter.Sub(old.NotBefore)
			if age < life*9/10-time.Minute || now.After(old.NotAfter.Add(-90*24*time.Hour)) {
				t.Fatalf("%s rotated at age %s of %s (NotAfter %s)", node, age, life, old.NotAfter)
			}
			current[node] = w.renew(node)
			all = append(all, current[node])
			rotations++
		}
		for node, c := range current {
			if !now.Before(c.NotAfter) {
				t.Fatalf("%s's certificate %s expired at %s", node, c.Serial, c.NotAfter)
			}
			if c.NotAfter.Before(c.NotBefore.AddDate(5, 0, 0)) {
				t.Fatalf("%s's certificate %s was capped by the root at %s", node, c.Serial, c.NotAfter)
			}
		}
		step := now.Add(30 * 24 * time.Hour)
		if enrolled < nodes && enrolAt(enrolled).Before(step) {
			step = enrolAt(enrolled)
		}
		if !next.IsZero() && next.Before(step) {
			step = next
		}
		if !step.After(now) {
			step = now.Add(time.Second)
		}
		now = step
	}
	if rotations < nodes*2 {
		t.Fatalf("%d rotations in 12 years, want at least 2 per node", rotations)
	}
	root := w.auth.Root()
	if root.Fingerprint() == firstRoot.Fingerprint() {
		t.Fatal("root never renewed in 12 years")
	}
	if root.Cert.Subject.String() != firstRoot.Cert.Subject.String() ||
		!root.Cert.PublicKey.(*ecdsa.PublicKey).Equal(firstRoot.Cert.PublicKey) {
		t.Fatal("renewed root changed subject or key")
	}
	if w.rec.ca < 2 {
		t.Fatalf("CA bundle change notified %d times, want at least 2 renewals in 12 years", w.rec.ca)
	}
	// Every node certificate ever issued verifies against the current bundle
	// during its validity, whichever root signed it.
	for _, c := range all {
		leaf, _ := x509.ParseCertificate(c.DER)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: root.Pool(), CurrentTime: c.NotBefore.Add(time.Hour), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("certificate %s no longer verifies: %v", c.Serial, err)
		}
	}
	if n, err := w.st.VerifyAudit(ctx); err != nil || n == 0 {
		t.Fatalf("audit chain: %d %v", n, err)
	}
	completed, _, _ := w.st.ListEvents(ctx, store.EventFilter{Type: store.EventRotationCompleted, Limit: 1000})
	if len(completed) != rotations {
		t.Fatalf("%d rotation.completed events for %d rotations", len(completed), rotations)
	}
}

func TestOverdueAndForce(t *testing.T) {
	w := newWorld(t, DefaultPolicy)
	ctx := context.Background()
	a := w.enroll("node-a")
	w.enroll("node-b")
	w.enroll("node-c")

	// Force one node now: due at the next step.
	if n, err := w.sched.Force(ctx, "node-a", false, 0, "admin"); err != nil || n != 1 {
		t.Fatalf("force: %d %v", n, err)
	}
	if _, err := w.sched.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if got := w.rec.take(); got["node-a"] != a.Serial || len(got) != 1 {
		t.Fatalf("told %v, want node-a only", got)
	}
	// Not rotated within the grace: overdue, told again.
	w.clock.Set(t0.Add(DefaultPolicy.Grace + time.Second))
	if _, err := w.sched.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if got := w.rec.take(); got["node-a"] != a.Serial {
		t.Fatalf("overdue node not told again: %v", got)
	}
	c, _ := w.st.Cert(ctx, a.Serial)
	if c.OverdueAt.IsZero() || c.DueReason != "forced" {
		t.Fatalf("cert not overdue/forced: %+v", c)
	}
	overdue, _, _ := w.st.ListEvents(ctx, store.EventFilter{Type: store.EventRotationOverdue})
	if len(overdue) != 1 {
		t.Fatalf("%d overdue events", len(overdue))
	}
	// Force all, spread over 10 hours: each node due at its slot.
	n, err := w.sched.Force(ctx, "", true, 10*time.Hour, "admin")
	if err != nil || n != 3 {
		t.Fatalf("force all: %d %v", n, err)
	}
	if got := w.rec.take(); len(got) != 1 || got["node-a"] == "" {
		t.Fatalf("after force all: told %v, want node-a (already due) again", got)
	}
	forced, _, _ := w.st.ListEvents(ctx, store.EventFilter{Type: store.EventRotationForced, Node: "node-a"})
	if len(forced) == 0 || forced[len(forced)-1].Detail["already_due"] != "true" {
		t.Fatalf("re-telling an already-due node is not recorded: %v", forced)
	}
	next, err := w.sched.Step(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for slot := 1; slot <= 2; slot++ {
		if want := w.clock.Now(); !next.After(want) || next.After(t0.Add(DefaultPolicy.Grace+10*time.Hour)) {
			t.Fatalf("slot %d at %s, want within the 10h window", slot, next)
		}
		w.clock.Set(next)
		if next, err = w.sched.Step(ctx); err != nil {
			t.Fatal(err)
		}
		if got := w.rec.take(); len(got) != 1 {
			t.Fatalf("slot %d: told %v, want one node", slot, got)
		}
	}
	if _, err := w.sched.Force(ctx, "no-such-node", false, 0, "admin"); err == nil {
		t.Fatal("forcing an unknown node succeeded")
	}
}

// newSubordinateWorld is newWorld with the CA a subordinate whose
// certificate, signed by an organisation's root, is valid for life.
func newSubordinateWorld(t *testing.T, p Policy, life time.Duration) *world {
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := testclock.New(t0)
	ctx := context.Background()
	req, err := ca.InitSubordinate(ctx, st, ca.RootConfig{}, clock, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(req.CSRPEM)
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	orgKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	orgTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "org root"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.AddDate(20, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	orgDER, err := x509.CreateCertificate(rand.Reader, orgTmpl, orgTmpl, orgKey.Public(), orgKey)
	if err != nil {
		t.Fatal(err)
	}
	org, _ := x509.ParseCertificate(orgDER)
	subTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: csr.Subject, NotBefore: t0.Add(-time.Hour),
		NotAfter: t0.Add(life), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	subDER, err := x509.CreateCertificate(rand.Reader, subTmpl, org, csr.PublicKey, orgKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.ImportSubordinate(ctx, st, nil, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: subDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: orgDER}), clock.Now(), "test"); err != nil {
		t.Fatal(err)
	}
	root, _, err := ca.Bootstrap(ctx, st, ca.RootConfig{}, clock)
	if err != nil {
		t.Fatal(err)
	}
	auth := ca.New(st, root, ca.Config{Clock: clock, Rand: rand.Reader, RotateAfter: p.DueAt})
	rec := &recorder{due: map[string]string{}}
	return &world{t: t, st: st, auth: auth, clock: clock, sched: NewScheduler(st, auth, rec, p, clock, nil), rec: rec,
		keys: map[string]*ecdsa.PrivateKey{}}
}

// A subordinate CA is renewed by its issuer, not by the scheduler: a
// subordinate certificate shorter than a node's life plus the margin must
// not stop the scheduler from marking node certificates due.
func TestSchedulerUnderShortSubordinate(t *testing.T) {
	w := newSubordinateWorld(t, DefaultPolicy, 2*365*24*time.Hour)
	c := w.enroll("node-a")
	next, err := w.sched.Step(context.Background())
	if err != nil {
		t.Fatalf("step under a subordinate CA: %v", err)
	}
	if !next.Equal(c.RotateAfter) {
		t.Errorf("next step at %s, want the node's rotate_after %s", next, c.RotateAfter)
	}
	w.clock.Set(c.RotateAfter)
	if _, err := w.sched.Step(context.Background()); err != nil {
		t.Fatalf("step at the node's rotate_after: %v", err)
	}
	if due := w.rec.take(); due["node-a"] != c.Serial {
		t.Errorf("due %v, want node-a's %s", due, c.Serial)
	}
	if w.rec.ca != 0 {
		t.Errorf("the scheduler changed the CA bundle %d times", w.rec.ca)
	}
	// Two years is less than a node's life: the subordinate is due for
	// renewal by its issuer from the start, recorded once.
	evs, _, err := w.st.ListEvents(context.Background(), store.EventFilter{Type: store.EventCARenewalDue})
	if err != nil || len(evs) != 1 || evs[0].Serial != ca.SerialString(w.auth.Root().Cert.SerialNumber) {
		t.Errorf("renewal-due events: %v %v", evs, err)
	}
}

// A subordinate valid long enough is noted due at its renew_by, not before.
func TestSchedulerNotesSubordinateRenewal(t *testing.T) {
	w := newSubordinateWorld(t, DefaultPolicy, 7*365*24*time.Hour)
	_, renewBy, _ := w.auth.Root().SubordinateInfo(w.clock.Now())
	next, err := w.sched.Step(context.Background())
	if err != nil || !next.Equal(renewBy) {
		t.Fatalf("next step %s (%v), want the subordinate's renew_by %s", next, err, renewBy)
	}
	count := func() int {
		evs, _, _ := w.st.ListEvents(context.Background(), store.EventFilter{Type: store.EventCARenewalDue})
		return len(evs)
	}
	if count() != 0 {
		t.Fatal("renewal noted before renew_by")
	}
	w.clock.Set(renewBy)
	for range 2 {
		if _, err := w.sched.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if count() != 1 {
		t.Errorf("%d renewal-due events at renew_by, want 1", count())
	}
}
