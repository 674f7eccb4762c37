package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/internal/clijson"
	"github.com/ipsecca/ipsecca/internal/pemutil"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store"
)

func rolloverJSON(t *testing.T, out string) *ipseccav1.RolloverStatus {
	t.Helper()
	resp := new(ipseccav1.RolloverStatus)
	if err := clijson.Unmarshal([]byte(out), resp); err != nil {
		t.Fatalf("not the API's JSON: %v\n%s", err, out)
	}
	return resp
}

// waitPhase waits until the rollover is in phase (the leader's scheduler
// moves it; the ReportInventory handler wakes it, as Wake does here).
func (c *meshCA) waitPhase(t *testing.T, phase string) *ca.RolloverReport {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.in.Scheduler.Wake()
		rep, err := c.in.Authority.RolloverStatus(context.Background(), c.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		if rep.Phase == phase {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollover in phase %q, want %q; waiting for %v", rep.Phase, phase, rep.WaitingFor)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bundleSerials lists the serials of the CA certificates in the bundle
// the CA hands out, in order.
func (c *meshCA) bundleSerials(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pemutil.ParseCertificates(b, pemutil.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, cert := range certs {
		out = append(out, ca.SerialString(cert.SerialNumber))
	}
	return out
}

// waitBundle waits until the bundle file lists want (serials, in order):
// the handler writes it after the transition is stored.
func (c *meshCA) waitBundle(t *testing.T, want ...string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got := c.bundleSerials(t)
		if strings.Join(got, " ") == strings.Join(want, " ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bundle %v, want %v", got, want)
		}
	}
}

func signedBy(t *testing.T, c *store.Cert, caSerial string, root *ca.Root) bool {
	t.Helper()
	leaf, err := x509.ParseCertificate(c.DER)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range append([]*x509.Certificate{root.Cert}, root.Other) {
		if r != nil && ca.SerialString(r.SerialNumber) == caSerial {
			return leaf.CheckSignatureFrom(r) == nil
		}
	}
	t.Fatalf("CA %s is not in the root", caSerial)
	return false
}

// A rollover through its three phases, each ending on what the nodes
// report: the CLI shows each phase and what it waits for, refuses to
// finish early, and ends with every certificate of the old key revoked.
func TestCARolloverCLI(t *testing.T) {
	defer func(d time.Duration) { rolloverPoll = d }(rolloverPoll)
	rolloverPoll = 20 * time.Millisecond
	c := startMeshCA(t)
	old := ca.SerialString(c.in.Authority.Root().Cert.SerialNumber)
	a, b := c.issue(t, "node-a"), c.issue(t, "node-b")
	c.report(t, "node-a", "node-b", a, old)
	c.report(t, "node-b", "node-a", b, old)
	// The CA's own admin credential is re-issued under the new key when it
	// issues; one an operator holds elsewhere is not.
	ops := c.issueAdmin(t, "ops")

	code, out, errOut := c.cli("ca", "rollover", "start", "--key-type", "ecdsa-p384", "--json")
	st := rolloverJSON(t, out)
	if code != 0 || st.GetPhase() != "trust" || st.GetOldSerial() != old || st.GetReady() ||
		len(st.GetWaitingFor()) != 2 || !strings.Contains(st.GetWaitingFor()[0], "node node-a: its NSS database "+
		"does not hold the new CA") {
		t.Fatalf("rollover start: exit %d\n%s%s", code, out, errOut)
	}
	next := st.GetNewSerial()
	if g := c.gauge(t, "ipsecca_ca_rollover_phase"); g["trust"] != 1 || g["issue"] != 0 || len(g) != 4 {
		t.Errorf("ipsecca_ca_rollover_phase in the trust phase: %v", g)
	}
	if got := c.bundleSerials(t); strings.Join(got, " ") != next+" "+old {
		t.Errorf("bundle in the trust phase: %v, want the new CA first, then the old", got)
	}
	incoming := c.in.Authority.Root().Other
	if incoming.Subject.String() != c.in.Authority.Root().Cert.Subject.String() ||
		incoming.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P384() {
		t.Errorf(
			"the new CA: subject %s (want the same as the old), key %v",
			incoming.Subject,
			incoming.PublicKeyAlgorithm,
		)
	}
	if code, _, errOut := c.cli("ca", "rollover", "start"); code != 1 ||
		!strings.Contains(errOut, "FailedPrecondition: ca: a CA key rollover is in progress (phase trust)") {
		t.Errorf("a second start: exit %d %s", code, errOut)
	}
	if code, _, errOut := c.cli("ca", "rollover", "finish"); code != 1 ||
		!strings.Contains(errOut, "the rollover's current phase is not complete (phase trust)") {
		t.Errorf("finish in the trust phase: exit %d %s", code, errOut)
	}
	if rec := c.issue(t, "node-c"); !signedBy(t, rec, old, c.in.Authority.Root()) {
		t.Error("the old key must issue in the trust phase")
	}

	// node-a trusts both; node-b not yet: the phase holds.
	c.report(t, "node-a", "node-b", a, next, old)
	code, out, _ = c.cli("ca", "rollover", "status")
	if code != 0 || !strings.Contains(out, "phase: trust, in progress") ||
		!strings.Contains(out, "waiting for: node node-b: its NSS database does not hold the new CA "+next) ||
		strings.Contains(out, "waiting for: node node-a") {
		t.Errorf("rollover status with one node trusting the new CA: exit %d\n%s", code, out)
	}
	// node-c never reports: it holds the phase too, until it is revoked.
	c.report(t, "node-b", "node-a", b, next, old)
	time.Sleep(100 * time.Millisecond)
	if rep := c.waitPhase(t, "trust"); len(rep.WaitingFor) != 1 ||
		!strings.Contains(rep.WaitingFor[0], "node node-c: its NSS database does not hold the new CA") ||
		!strings.Contains(rep.WaitingFor[0], "its sidecar never reported") {
		t.Errorf("a node that never reported: %v", rep.WaitingFor)
	}
	if code, _, errOut := c.cli("node", "revoke", "node-c"); code != 0 {
		t.Fatalf("node revoke: %s", errOut)
	}
	rep := c.waitPhase(t, "issue")
	c.waitBundle(t, next, old)
	// Both nodes are made due (spread 0: now), and renew onto the new key.
	c.waitEvents(t, store.EventRotationForced, 2)
	for _, n := range []string{"node-a", "node-b"} {
		cur, err := c.st.CurrentCert(context.Background(), n)
		if err != nil || cur.RotateAfter.After(rep.PhaseAt) {
			t.Errorf("%s not rescheduled for the rollover: %v %v", n, cur.RotateAfter, err)
		}
	}
	a2, b2 := c.issue(t, "node-a"), c.issue(t, "node-b")

	if !signedBy(t, a2, next, c.in.Authority.Root()) {
		t.Fatal("the new key must issue in the issue phase")
	}
	c.report(t, "node-a", "node-b", a2, next, old)
	rep, _ = c.in.Authority.RolloverStatus(context.Background(), c.clock.Now())
	if rep.Ready || !slicesHas(rep.WaitingFor, "pair node-a -> node-b: superseded") ||
		!slicesHas(rep.WaitingFor, "is from the old key: rotate it with ipsecca admin rotate") ||
		slicesHas(rep.WaitingFor, "(ipsecca-admin)") {
		t.Errorf("issue phase with node-b's tunnel on the old key and the admin on it: %v", rep.WaitingFor)
	}
	c.report(t, "node-b", "node-a", b2, next, old)
	if !slicesHas(rep.WaitingFor, "admin credential "+ops.Serial+" (ops) is from the old key") {
		t.Errorf("an operator's admin credential on the old key: %v", rep.WaitingFor)
	}
	c.issueAdmin(t, "ops") // its holder rotates it (ipsecca admin rotate)
	code, out, errOut = c.cli("ca", "rollover", "status", "--json")
	if st := rolloverJSON(t, out); code != 0 || !st.GetReady() || st.GetPairsOnNew() != 2 || st.GetPairs() != 2 {
		t.Fatalf("issue phase complete: exit %d\n%s%s", code, out, errOut)
	}

	done := c.cliAsync("ca", "rollover", "finish", "--wait", "10s")
	c.waitPhase(t, "retire")
	c.waitBundle(t, next) // the old CA leaves the bundle
	// The old key's certificates still active at the finish are revoked.
	for _, s := range []string{a.Serial, b.Serial} {
		if rec, _ := c.st.Cert(context.Background(), s); rec.State == store.StateActive {
			t.Errorf("old-key certificate %s still active", s)
		}
	}
	// The old CA left both NSS databases; each pluto must start again (it
	// checks CRLs with the old CA), one node after the other, in the slot
	// the CA gives: the phase waits for both.
	retireAt := c.waitPhase(t, "retire").PhaseAt
	for i, n := range []struct {
		node, peer string
		cert       *store.Cert
	}{{"node-a", "node-b", a2}, {"node-b", "node-a", b2}} {
		reply := c.reportRestart(t, n.node, n.peer, n.cert, true, next)
		if want := retireAt.Add(time.Duration(i) * ca.PlutoRestartSlot); !reply.RestartPlutoAt.Equal(want) {
			t.Errorf("%s restarts pluto at %v, want %v", n.node, reply.RestartPlutoAt, want)
		}
	}
	if rep := c.waitPhase(t, "retire"); len(rep.WaitingFor) != 2 ||
		!strings.Contains(rep.WaitingFor[1], "node node-b: its pluto has not started again since the retired CA "+
			"left its NSS database (at "+retireAt.Add(ca.PlutoRestartSlot).Format(time.RFC3339)) {
		t.Errorf("retire phase with both plutos to restart: %v", rep.WaitingFor)
	}
	c.report(t, "node-a", "node-b", a2, next)
	c.report(t, "node-b", "node-a", b2, next)
	c.in.Scheduler.Wake() // as the ReportInventory handler does during a rollover
	r := <-done
	if r.code != 0 || !strings.Contains(r.out, "no CA key rollover in progress") {
		t.Errorf("finish --wait: exit %d\n%s%s", r.code, r.out, r.err)
	}
	if c.events(t, store.EventCARollover) != 4 { // started, issue, retire, completed
		t.Errorf("%d rollover events, want 4", c.events(t, store.EventCARollover))
	}
	if n, err := c.st.VerifyAudit(context.Background()); err != nil {
		t.Errorf("audit chain after the rollover (%d events): %v", n, err)
	}
	if g := c.gauge(t, "ipsecca_ca_rollover_phase"); g["trust"]+g["issue"]+g["retire"]+g["request"] != 0 {
		t.Errorf("ipsecca_ca_rollover_phase after the rollover: %v", g)
	}
	code, out, _ = c.cli("ca", "show")
	if code != 0 || !strings.Contains(strings.Join(strings.Fields(out), " "), "issuing "+next) ||
		strings.Contains(out, old) {
		t.Errorf("ca show after the rollover: exit %d\n%s", code, out)
	}
}

// issueAdmin issues an admin credential for name under the issuing key.
func (c *meshCA) issueAdmin(t *testing.T, name string) *store.Cert {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rec, err := c.in.Authority.IssueService(context.Background(), store.KindAdmin, name, key.Public(), nil, nil, 1,
		"test")
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// gauge gathers a gauge's values by their first label's value.
func (c *meshCA) gauge(t *testing.T, name string) map[string]float64 {
	t.Helper()
	families, err := c.in.Server.MetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			key := ""
			if len(m.GetLabel()) > 0 {
				key = m.GetLabel()[0].GetValue()
			}
			out[key] = m.GetGauge().GetValue()
		}
	}
	return out
}

func slicesHas(lines []string, sub string) bool {
	for _, l := range lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

// Abort: in the trust phase the new key is dropped; in the issue phase the
// old key issues again and finish then retires the key that was to come.
func TestCARolloverAbort(t *testing.T) {
	c := startMeshCA(t)
	old := ca.SerialString(c.in.Authority.Root().Cert.SerialNumber)
	a := c.issue(t, "node-a")
	c.report(t, "node-a", "node-b", a, old)

	if code, _, errOut := c.cli("ca", "rollover", "abort"); code != 1 ||
		!strings.Contains(errOut, "FailedPrecondition: ca: no CA key rollover is in progress") {
		t.Errorf("abort without a rollover: exit %d %s", code, errOut)
	}
	c.cli("ca", "rollover", "start")
	code, out, _ := c.cli("ca", "rollover", "abort")
	if code != 0 || !strings.Contains(out, "no CA key rollover in progress") ||
		strings.Join(c.bundleSerials(t), " ") != old {
		t.Fatalf("abort in the trust phase: exit %d\n%s; bundle %v", code, out, c.bundleSerials(t))
	}

	code, out, errOut := c.cli("ca", "rollover", "start", "--json")
	if code != 0 {
		t.Fatalf("start after the abort: exit %d %s", code, errOut)
	}
	next := rolloverJSON(t, out).GetNewSerial()
	c.report(t, "node-a", "node-b", a, next, old)
	c.waitPhase(t, "issue")
	a2 := c.issue(t, "node-a")
	code, out, errOut = c.cli("ca", "rollover", "abort", "--json")
	if code != 0 {
		t.Fatalf("abort in the issue phase: exit %d %s", code, errOut)
	}
	st := rolloverJSON(t, out)
	if code != 0 || st.GetPhase() != "issue" || !st.GetAborted() || st.GetNewSerial() != old ||
		st.GetOldSerial() != next || !slicesHas(st.GetWaitingFor(), "node node-a: its certificate "+a2.Serial+
		" is from the old key") {
		t.Fatalf("abort in the issue phase: exit %d\n%s%s", code, out, errOut)
	}
	if got := strings.Join(c.bundleSerials(t), " "); got != old+" "+next {
		t.Errorf("bundle after the abort: %s, want the first key's CA first", got)
	}
	if rec := c.issue(t, "node-a"); !signedBy(t, rec, old, c.in.Authority.Root()) {
		t.Error("after the abort the first key must issue again")
	}
	code, out, errOut = c.cli("ca", "rollover", "finish", "--force", "--json")
	if st := rolloverJSON(t, out); code != 0 || st.GetPhase() != "retire" ||
		!strings.Contains(errOut, "WARNING: --force retires the old CA now") {
		t.Fatalf("finish --force after the abort: exit %d\n%s%s", code, out, errOut)
	}
	c.waitBundle(t, old)
	if code, _, errOut := c.cli("ca", "rollover", "abort"); code != 1 ||
		!strings.Contains(errOut, "the old CA key was retired") {
		t.Errorf("abort in the retire phase: exit %d %s", code, errOut)
	}
}

// An emergency rollover (the key is compromised) does not wait for the
// nodes to trust the new CA: the new key issues at once, every node is due
// now, and finish --force revokes what the old key issued.
func TestCARolloverEmergency(t *testing.T) {
	c := startMeshCA(t)
	old := ca.SerialString(c.in.Authority.Root().Cert.SerialNumber)
	a, b := c.issue(t, "node-a"), c.issue(t, "node-b")
	c.report(t, "node-a", "node-b", a, old)
	c.report(t, "node-b", "node-a", b, old)

	code, out, errOut := c.cli("ca", "rollover", "start", "--emergency", "--json")
	st := rolloverJSON(t, out)
	if code != 0 || st.GetPhase() != "issue" || !st.GetEmergency() || st.GetOldSerial() != old ||
		!slicesHas(st.GetWarnings(), "emergency rollover") {
		t.Fatalf("start --emergency: exit %d\n%s%s", code, out, errOut)
	}
	next := st.GetNewSerial()
	c.waitBundle(t, next, old)
	c.waitEvents(t, store.EventRotationForced, 2)
	for _, n := range []string{"node-a", "node-b"} {
		cur, err := c.st.CurrentCert(context.Background(), n)
		if err != nil || cur.RotateAfter.After(c.clock.Now()) {
			t.Errorf("%s not due at once: rotate_after %v %v", n, cur.RotateAfter, err)
		}
	}
	if rec := c.issue(t, "node-a"); !signedBy(t, rec, next, c.in.Authority.Root()) {
		t.Error("the new key must issue at once in an emergency")
	}
	// node-b never renews: finish --force retires the old key anyway and
	// revokes its certificate.
	code, out, errOut = c.cli("ca", "rollover", "finish", "--force", "--json")
	if st := rolloverJSON(t, out); code != 0 || st.GetPhase() != "retire" ||
		!strings.Contains(errOut, "nodes not yet on the new key lose their tunnels") {
		t.Fatalf("finish --force: exit %d\n%s%s", code, out, errOut)
	}
	if rec, _ := c.st.Cert(context.Background(), b.Serial); rec.State != store.StateRevoked {
		t.Errorf("node-b's old-key certificate is %s after finish --force, want revoked", rec.State)
	}
	c.waitBundle(t, next)
}
