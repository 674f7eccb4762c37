package sidecar

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/internal/pemutil"
	"github.com/ipsecca/ipsecca/nssdb"
)

// testCA is a CA of these tests: a root, or a subordinate CA of one.
type testCA struct {
	key  crypto.Signer
	cert *x509.Certificate
}

func newKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func name(org, cn string) pkix.Name { return pkix.Name{Organization: []string{org}, CommonName: cn} }

// newTestRoot makes a self-signed root valid ten years from notBefore.
func newTestRoot(t *testing.T, subject pkix.Name, notBefore time.Time) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: serial(t), Subject: subject, NotBefore: notBefore,
		NotAfter: notBefore.AddDate(10, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{key: key, cert: c}
}

// renew re-issues the root p with its key and subject, a new serial and
// validity from notBefore, as `ipsecca ca renew` does.
func (p *testCA) renew(t *testing.T, notBefore time.Time) *testCA {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: serial(t), Subject: p.cert.Subject, NotBefore: notBefore,
		NotAfter: notBefore.AddDate(10, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, p.key.Public(), p.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.RawSubject, p.cert.RawSubject) {
		t.Fatal("the renewed root has another subject")
	}
	return &testCA{key: p.key, cert: c}
}

// subordinate issues a subordinate CA (CA:TRUE, path length 0), as an
// organisation's root signs ipsecca's certificate in subordinate mode.
func (p *testCA) subordinate(t *testing.T, subject pkix.Name) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: serial(t), Subject: subject, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().AddDate(8, 0, 0), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, key.Public(), p.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{key: key, cert: c}
}

// node issues a node certificate the way ipsecca's profile does.
func (p *testCA) node(t *testing.T, cn string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: serial(t), Subject: name("ipsecca", cn),
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(5, 0, 0), DNSNames: []string{cn},
		KeyUsage:           x509.KeyUsageDigitalSignature,
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 17}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, key.Public(), p.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// pemOf is a bundle of the CAs' certificates in the order given.
func pemOf(cas ...*testCA) []byte {
	var b []byte
	for _, c := range cas {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})...)
	}
	return b
}

// newTestAgent returns an agent on a new NSS database, for the node
// node-a.
func newTestAgent(t *testing.T, kube bool) *Agent {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{Server: "127.0.0.1:1", Node: "node-a", NSSDir: filepath.Join(dir, "nss"),
		StateDir: filepath.Join(dir, "state")}
	if kube {
		cfg.Server, cfg.CN, cfg.Kube = "", "node-a", &KubeConfig{}
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.db.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.state.Init(); err != nil {
		t.Fatal(err)
	}
	return a
}

var listLine = regexp.MustCompile(`(?m)^(\S.*?)\s+([a-zA-Z]*,[a-zA-Z]*,[a-zA-Z]*)\s*$`)

// listed returns what `certutil -L` lists: nickname -> the trust of each
// certificate under it.
func listed(t *testing.T, a *Agent) map[string][]string {
	t.Helper()
	out, err := exec.Command("certutil", "-L", "-d", "sql:"+a.cfg.NSSDir).CombinedOutput()
	if err != nil {
		t.Fatalf("certutil -L: %v %s", err, out)
	}
	got := map[string][]string{}
	for _, m := range listLine.FindAllStringSubmatch(string(out), -1) {
		if m[1] != "Certificate Nickname" {
			got[m[1]] = append(got[m[1]], m[2])
		}
	}
	return got
}

// assertCAs checks the database's CA nicknames against want (nickname ->
// exactly the certificates under it), with CT,, under the CA nickname and
// RootNickname, ,, under IntermediateNickname; the node's pair aside.
func assertCAs(t *testing.T, a *Agent, want map[string][]*testCA) {
	t.Helper()
	ctx := context.Background()
	got := listed(t, a)
	delete(got, a.cfg.Nickname)
	for nick, trusts := range got {
		cas := want[nick]
		trust := nssdb.TrustCA
		if strings.HasPrefix(nick, intermediatePrefix) {
			trust = nssdb.TrustIntermediate
		}
		if len(trusts) != len(cas) || slices.ContainsFunc(trusts, func(s string) bool { return s != trust }) {
			t.Fatalf("certutil -L lists %s %v, want %d certificate(s) with %s (all: %v)", nick, trusts, len(cas),
				trust, got)
		}
		for _, c := range cas {
			if ok, err := a.db.Under(ctx, nick, c.cert); err != nil || !ok {
				t.Fatalf("%s does not hold %s serial %x (%v); certutil -L: %v", nick, c.cert.Subject,
					c.cert.SerialNumber, err, got)
			}
		}
	}
	for nick := range want {
		if _, ok := got[nick]; !ok {
			t.Fatalf("certutil -L lists no %s: %v", nick, got)
		}
	}
	// The inventory the CA gets says the same, each certificate once,
	// under its own nickname, with its trust.
	req, err := a.inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reported := map[string]string{}
	for _, e := range req.GetEntries() {
		if e.GetNickname() != a.cfg.Nickname {
			reported[e.GetNickname()+" "+e.GetSerial()] = e.GetTrust()
		}
	}
	n := 0
	for nick, cas := range want {
		for _, c := range cas {
			n++
			trust := got[nick][0]
			if k := nick + " " + serialHex(c.cert.SerialNumber); reported[k] != trust {
				t.Fatalf("the inventory reports %s with trust %q, want %q: %v", k, reported[k], trust, reported)
			}
		}
	}
	if len(reported) != n {
		t.Fatalf("the inventory reports %v, want %d CA certificates", reported, n)
	}
}

// certutilLog puts a certutil on PATH that records its arguments in the
// returned file and runs the real one.
func certutilLog(t *testing.T) string {
	t.Helper()
	real, err := exec.LookPath("certutil")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho \"$*\" >> '" + log + "'\nexec '" + real + "' \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "certutil"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return log
}

func calls(t *testing.T, log string) []string {
	raw, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(raw)), "\n")
}

// TestSyncTrustSubordinate: with a bundle of a subordinate CA and its
// root, the root is the trust anchor, the subordinate an intermediate
// under a nickname ovs-monitor-ipsec leaves alone; a node certificate the
// subordinate issued verifies in NSS, one from another organisation's
// subordinate does not; the inventory tells anchor from intermediate; and
// the same bundle again changes nothing and adds nothing.
func TestSyncTrustSubordinate(t *testing.T) {
	ctx := context.Background()
	a := newTestAgent(t, false)
	root := newTestRoot(t, name("example", "example root"), time.Now().Add(-time.Hour))
	sub := root.subordinate(t, name("ipsecca", "ipsecca CA"))
	bundle := pemOf(sub, root)
	if changed, err := a.syncTrust(ctx, bundle); err != nil || !changed {
		t.Fatalf("syncTrust: %v %v", changed, err)
	}
	inter := IntermediateNickname(CANickname, sub.cert.RawSubject)
	if strings.HasPrefix(inter, "ovs_cert_") || strings.HasPrefix(inter, "ovs_certkey_") {
		t.Fatalf("%s would be deleted by ovs-monitor-ipsec", inter)
	}
	assertCAs(t, a, map[string][]*testCA{CANickname: {root}, inter: {sub}})

	node, key := sub.node(t, "node-a")
	if _, err := a.db.PutKeyPair(ctx, a.cfg.Nickname, node, key); err != nil {
		t.Fatalf("put the pair the subordinate issued: %v", err)
	}
	if err := a.db.Verify(ctx, a.cfg.Nickname, "V"); err != nil {
		t.Fatalf("certutil -V -u V: %v", err)
	}
	other := newTestRoot(t, name("other", "other root"), time.Now().Add(-time.Hour)).subordinate(t,
		name("other", "other CA"))
	stranger, _ := other.node(t, "node-b")
	if err := a.db.ImportCA(ctx, "stranger", stranger, nssdb.TrustIntermediate); err != nil {
		t.Fatal(err)
	}
	if err := a.db.Verify(ctx, "stranger", "V"); err == nil {
		t.Fatal("a certificate from another organisation's subordinate CA verified")
	}

	req, err := a.inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	trustOf := map[string]string{}
	for _, e := range req.GetEntries() {
		trustOf[e.GetNickname()+" "+e.GetSubject()] = e.GetTrust()
	}
	for k, want := range map[string]string{
		CANickname + " " + root.cert.Subject.String(): nssdb.TrustCA,
		inter + " " + sub.cert.Subject.String():       nssdb.TrustIntermediate,
		a.cfg.Nickname + " " + node.Subject.String():  nssdb.TrustUser,
	} {
		if trustOf[k] != want {
			t.Errorf("inventory: %s has trust %q, want %q (inventory %v)", k, trustOf[k], want, trustOf)
		}
	}

	log := certutilLog(t)
	if changed, err := a.syncTrust(ctx, bundle); err != nil || changed {
		t.Fatalf("syncTrust with the same bundle: %v %v", changed, err)
	}
	for _, c := range calls(t, log) {
		if !strings.HasPrefix(c, "-L ") {
			t.Errorf("syncTrust with the same bundle ran certutil %s", c)
		}
	}
}

// TestSyncTrustTransitions: bundles one after the other, as the CA sends
// them through a key rollover, a re-keyed subordinate CA, and a
// self-signed CA becoming a subordinate with the same subject (the
// organisation's root then takes the CA nickname); after each, NSS holds
// exactly the bundle's CA certificates where they belong, a certificate
// that left the bundle is gone only then, and the node's pair from the
// issuing CA verifies.
func TestSyncTrustTransitions(t *testing.T) {
	ipsecca := name("ipsecca", "ipsecca CA")
	type step struct {
		bundle []*testCA
		issuer *testCA
		want   map[string][]*testCA // IntermediateNickname/RootNickname filled in by subject
	}
	for _, tc := range []struct {
		name  string
		steps func(t *testing.T) []step
	}{
		{"key rollover", func(t *testing.T) []step {
			old := newTestRoot(t, ipsecca, time.Now().Add(-48*time.Hour))
			cur := newTestRoot(t, ipsecca, time.Now().Add(-time.Hour))
			return []step{
				{[]*testCA{old}, old, map[string][]*testCA{CANickname: {old}}},
				{[]*testCA{cur, old}, old, map[string][]*testCA{CANickname: {cur, old}}},
				{[]*testCA{cur, old}, cur, map[string][]*testCA{CANickname: {cur, old}}},
				{[]*testCA{cur}, cur, map[string][]*testCA{CANickname: {cur}}},
			}
		}},
		// The old key's roots, R0 and R0' renewed with it, leave the bundle
		// together: both go, although certutil cannot name one apart.
		{"key rollover after a renewal with the same key", func(t *testing.T) []step {
			r0 := newTestRoot(t, ipsecca, time.Now().Add(-72*time.Hour))
			r0r := r0.renew(t, time.Now().Add(-48*time.Hour))
			r1 := newTestRoot(t, ipsecca, time.Now().Add(-time.Hour))
			return []step{
				{[]*testCA{r0r, r0}, r0, map[string][]*testCA{CANickname: {r0r, r0}}},
				{[]*testCA{r1, r0r, r0}, r0r, map[string][]*testCA{CANickname: {r1, r0r, r0}}},
				{[]*testCA{r1, r0r, r0}, r1, map[string][]*testCA{CANickname: {r1, r0r, r0}}},
				{[]*testCA{r1}, r1, map[string][]*testCA{CANickname: {r1}}},
			}
		}},
		// R0 leaves the bundle, R0' with its key stays: R0 stays too (see
		// TestSyncTrustKeepsSharedKey).
		{"renewal with the same key, the older root retired", func(t *testing.T) []step {
			r0 := newTestRoot(t, ipsecca, time.Now().Add(-72*time.Hour))
			r0r := r0.renew(t, time.Now().Add(-48*time.Hour))
			return []step{
				{[]*testCA{r0r, r0}, r0, map[string][]*testCA{CANickname: {r0r, r0}}},
				{[]*testCA{r0r}, r0r, map[string][]*testCA{CANickname: {r0r, r0}}},
			}
		}},
		{"subordinate re-keyed", func(t *testing.T) []step {
			root := newTestRoot(t, name("example", "example root"), time.Now().Add(-time.Hour))
			s1, s2 := root.subordinate(t, ipsecca), root.subordinate(t, ipsecca)
			inter := IntermediateNickname(CANickname, s1.cert.RawSubject)
			return []step{
				{[]*testCA{s1, root}, s1, map[string][]*testCA{CANickname: {root}, inter: {s1}}},
				{[]*testCA{s2, s1, root}, s2, map[string][]*testCA{CANickname: {root}, inter: {s2, s1}}},
				{[]*testCA{s2, root}, s2, map[string][]*testCA{CANickname: {root}, inter: {s2}}},
			}
		}},
		{"self-signed CA becomes a subordinate", func(t *testing.T) []step {
			own := newTestRoot(t, ipsecca, time.Now().Add(-48*time.Hour))
			root := newTestRoot(t, name("example", "example root"), time.Now().Add(-time.Hour))
			sub := root.subordinate(t, ipsecca)
			inter := IntermediateNickname(CANickname, own.cert.RawSubject)
			former := RootNickname(CANickname, own.cert.RawSubject)
			return []step{
				{[]*testCA{own}, own, map[string][]*testCA{CANickname: {own}}},
				{[]*testCA{sub, root, own}, own, map[string][]*testCA{CANickname: {root}, inter: {sub}, former: {own}}},
				{[]*testCA{sub, root, own}, sub, map[string][]*testCA{CANickname: {root}, inter: {sub}, former: {own}}},
				{[]*testCA{sub, root}, sub, map[string][]*testCA{CANickname: {root}, inter: {sub}}},
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			a := newTestAgent(t, false)
			var node *x509.Certificate
			for i, s := range tc.steps(t) {
				if changed, err := a.syncTrust(ctx, pemOf(s.bundle...)); err != nil {
					t.Fatalf("step %d: syncTrust: %v %v", i, changed, err)
				}
				assertCAs(t, a, s.want)
				if node == nil || !bytes.Equal(node.RawIssuer, s.issuer.cert.RawSubject) ||
					node.CheckSignatureFrom(s.issuer.cert) != nil {
					var key crypto.Signer
					node, key = s.issuer.node(t, "node-a")
					if _, err := a.db.PutKeyPair(ctx, a.cfg.Nickname, node, key); err != nil {
						t.Fatalf("step %d: put the node's pair: %v", i, err)
					}
				}
				for _, u := range []string{"C", "V"} {
					if err := a.db.Verify(ctx, a.cfg.Nickname, u); err != nil {
						t.Fatalf("step %d: certutil -V -u %s: %v", i, u, err)
					}
				}
				if keys, err := a.db.Keys(ctx); err != nil || len(keys) != 1 {
					t.Fatalf("step %d: certutil -K lists %+v (%v), want the node's key alone", i, keys, err)
				}
				if changed, err := a.syncTrust(ctx, pemOf(s.bundle...)); err != nil || changed {
					t.Fatalf("step %d: syncTrust again: %v %v", i, changed, err)
				}
			}
		})
	}
}

// TestSyncTrustRemovesLast: a bundle that replaces every CA certificate
// at once (the old root by a subordinate CA and its root) has them all
// added before the old root is deleted, so the database never lacks an
// anchor; the node's pair stays.
func TestSyncTrustRemovesLast(t *testing.T) {
	ctx := context.Background()
	a := newTestAgent(t, false)
	own := newTestRoot(t, name("ipsecca", "ipsecca CA"), time.Now().Add(-48*time.Hour))
	root := newTestRoot(t, name("example", "example root"), time.Now().Add(-time.Hour))
	sub := root.subordinate(t, name("ipsecca", "ipsecca CA"))
	if _, err := a.syncTrust(ctx, pemOf(own)); err != nil {
		t.Fatal(err)
	}
	node, key := own.node(t, "node-a")
	if _, err := a.db.PutKeyPair(ctx, a.cfg.Nickname, node, key); err != nil {
		t.Fatal(err)
	}
	log := certutilLog(t)
	if changed, err := a.syncTrust(ctx, pemOf(sub, root)); err != nil || !changed {
		t.Fatalf("syncTrust: %v %v", changed, err)
	}
	inter := IntermediateNickname(CANickname, sub.cert.RawSubject)
	assertCAs(t, a, map[string][]*testCA{CANickname: {root}, inter: {sub}})
	var writes []string
	for _, c := range calls(t, log) {
		if f := strings.Fields(c); f[0] != "-L" && f[0] != "-K" {
			writes = append(writes, f[0])
		}
	}
	if want := "--rename -A -A -D"; strings.Join(writes, " ") != want {
		t.Fatalf("certutil wrote %v, want %s: the old root moved out of %s, both new CA certificates in, "+
			"then the old root out", writes, want, CANickname)
	}
	if certs, err := a.db.Certs(ctx, a.cfg.Nickname); err != nil || len(certs) != 1 || !certs[0].Equal(node) {
		t.Fatalf("the node's pair is gone: %d certificates, %v", len(certs), err)
	}
	if ok, err := a.db.HasKey(ctx, node); err != nil || !ok {
		t.Fatalf("the node's key is gone: %v", err)
	}
}

// TestSyncTrustRetiresRenewedKey: the CA's root R0 was renewed with its
// key K0 (R0', same subject, new serial and validity), then rolled over to
// R1 (key K1, same subject). When the bundle holds R1 alone, R0 and R0'
// both leave NSS, although they share subject and key ID and so cannot be
// named apart (DeleteCA refuses each): every certificate of K0 under the
// CA nickname goes, after R1 is in, by certutil -D alone. R1 stays with
// CT,,, the node's pair re-issued by R1 and its key stay and verify, and
// the inventory, which the CA's rollover waits on before it retires K0,
// lists no root of K0. The same bundle again writes nothing.
func TestSyncTrustRetiresRenewedKey(t *testing.T) {
	ctx := context.Background()
	a := newTestAgent(t, false)
	ipsecca := name("ipsecca", "ipsecca CA")
	r0 := newTestRoot(t, ipsecca, time.Now().Add(-72*time.Hour))
	r0r := r0.renew(t, time.Now().Add(-48*time.Hour))
	r1 := newTestRoot(t, ipsecca, time.Now().Add(-time.Hour))
	if _, err := a.syncTrust(ctx, pemOf(r0r, r0)); err != nil {
		t.Fatal(err)
	}
	node, key := r0.node(t, "node-a")
	if _, err := a.db.PutKeyPair(ctx, a.cfg.Nickname, node, key); err != nil {
		t.Fatal(err)
	}
	if _, err := a.syncTrust(ctx, pemOf(r1, r0r, r0)); err != nil {
		t.Fatal(err)
	}
	assertCAs(t, a, map[string][]*testCA{CANickname: {r1, r0r, r0}})
	node, key = r1.node(t, "node-a")
	if _, err := a.db.PutKeyPair(ctx, a.cfg.Nickname, node, key); err != nil {
		t.Fatal(err)
	}

	if why := a.plutoRestartDue(); why != "" {
		t.Fatalf("pluto must restart (%s) before a key left", why)
	}
	log := certutilLog(t)
	if changed, err := a.syncTrust(ctx, pemOf(r1)); err != nil || !changed {
		t.Fatalf("syncTrust [R1]: %v %v", changed, err)
	}
	// K0 left and its subject stays: a running pluto checks CRLs with R0.
	if why := a.plutoRestartDue(); !strings.Contains(why, "left NSS") {
		t.Fatalf("pluto restart due: %q, want the retired key named", why)
	}
	var writes []string
	for _, c := range calls(t, log) {
		if f := strings.Fields(c); f[0] != "-L" && f[0] != "-K" {
			writes = append(writes, f[0])
		}
	}
	if want := "-D -D"; strings.Join(writes, " ") != want {
		t.Fatalf("certutil wrote %v, want %s: R0 and R0' deleted, nothing else", writes, want)
	}
	assertCAs(t, a, map[string][]*testCA{CANickname: {r1}})
	if got := listed(t, a)[CANickname]; len(got) != 1 || got[0] != nssdb.TrustCA {
		t.Fatalf("%s lists %v, want R1 alone with %s", CANickname, got, nssdb.TrustCA)
	}
	for _, c := range []*testCA{r0, r0r} {
		if ok, err := a.db.Under(ctx, CANickname, c.cert); err != nil || ok {
			t.Fatalf("%s still holds a root of K0 (serial %x): %v", CANickname, c.cert.SerialNumber, err)
		}
	}
	certs, err := a.db.Certs(ctx, CANickname)
	if err != nil || len(certs) != 1 || !certs[0].Equal(r1.cert) {
		t.Fatalf("%s holds %d certificates (%v), want R1", CANickname, len(certs), err)
	}
	if certs, err := a.db.Certs(ctx, a.cfg.Nickname); err != nil || len(certs) != 1 || !certs[0].Equal(node) {
		t.Fatalf("the node's pair is gone: %d certificates, %v", len(certs), err)
	}
	if ok, err := a.db.HasKey(ctx, node); err != nil || !ok {
		t.Fatalf("the node's key is gone: %v", err)
	}
	for _, u := range []string{"C", "V"} {
		if err := a.db.Verify(ctx, a.cfg.Nickname, u); err != nil {
			t.Fatalf("certutil -V -u %s: %v", u, err)
		}
	}
	req, err := a.inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range req.GetEntries() {
		for _, c := range []*testCA{r0, r0r} {
			if e.GetSerial() == serialHex(c.cert.SerialNumber) {
				t.Fatalf("the inventory still lists a root of K0: %s serial %s", e.GetNickname(), e.GetSerial())
			}
		}
	}

	if err := os.Remove(log); err != nil {
		t.Fatal(err)
	}
	if changed, err := a.syncTrust(ctx, pemOf(r1)); err != nil || changed {
		t.Fatalf("syncTrust [R1] again: %v %v", changed, err)
	}
	for _, c := range calls(t, log) {
		if c != "" && !strings.HasPrefix(c, "-L ") {
			t.Errorf("syncTrust with the same bundle ran certutil %s", c)
		}
	}
}

// TestSyncTrustKeepsSharedKey: R0 renewed with its key as R0', then R0
// retired from the bundle while R0' stays. R0 stays in NSS, without an
// error: the only name certutil takes for it (nickname and key ID) names
// R0' as well, which is to stay, and having the subject and key of R0' it
// vouches for nothing R0' does not. It goes with R0' once the key leaves the
// bundle (TestSyncTrustRetiresRenewedKey). Nothing is written, now or on
// the next run.
func TestSyncTrustKeepsSharedKey(t *testing.T) {
	ctx := context.Background()
	a := newTestAgent(t, false)
	r0 := newTestRoot(t, name("ipsecca", "ipsecca CA"), time.Now().Add(-72*time.Hour))
	r0r := r0.renew(t, time.Now().Add(-48*time.Hour))
	if _, err := a.syncTrust(ctx, pemOf(r0r, r0)); err != nil {
		t.Fatal(err)
	}
	node, key := r0r.node(t, "node-a")
	if _, err := a.db.PutKeyPair(ctx, a.cfg.Nickname, node, key); err != nil {
		t.Fatal(err)
	}
	log := certutilLog(t)
	for i := range 2 {
		if changed, err := a.syncTrust(ctx, pemOf(r0r)); err != nil || changed {
			t.Fatalf("run %d: syncTrust [R0']: %v %v, want no error and no change", i, changed, err)
		}
		assertCAs(t, a, map[string][]*testCA{CANickname: {r0r, r0}})
		if err := a.db.Verify(ctx, a.cfg.Nickname, "V"); err != nil {
			t.Fatalf("run %d: certutil -V -u V: %v", i, err)
		}
	}
	for _, c := range calls(t, log) {
		if f := strings.Fields(c); len(f) > 0 && f[0] != "-L" && f[0] != "-K" && f[0] != "-V" {
			t.Errorf("syncTrust [R0'] ran certutil %s", c)
		}
	}
}

// TestAnchorsFirst: the ca.pem written for ovs-monitor-ipsec, which
// imports its first certificate alone as trust anchor, starts with the
// bundle's newest root, never with the subordinate CA.
func TestAnchorsFirst(t *testing.T) {
	ipsecca := name("ipsecca", "ipsecca CA")
	root := newTestRoot(t, name("example", "example root"), time.Now().Add(-time.Hour))
	s1, s2 := root.subordinate(t, ipsecca), root.subordinate(t, ipsecca)
	old := newTestRoot(t, ipsecca, time.Now().Add(-48*time.Hour))
	cur := newTestRoot(t, ipsecca, time.Now().Add(-time.Hour))
	for _, tc := range []struct {
		name         string
		bundle, want []*testCA
	}{
		{"subordinate", []*testCA{s1, root}, []*testCA{root, s1}},
		{"subordinate re-keyed", []*testCA{s2, s1, root}, []*testCA{root, s2, s1}},
		{"key rollover", []*testCA{cur, old}, []*testCA{cur, old}},
		{"becoming a subordinate", []*testCA{s1, root, old}, []*testCA{root, old, s1}},
		{"no root", []*testCA{s1}, []*testCA{s1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := anchorsFirst(pemOf(tc.bundle...))
			if err != nil || !bytes.Equal(got, pemOf(tc.want...)) {
				t.Fatalf("anchorsFirst: %v; got %d bytes, want the roots first", err, len(got))
			}
		})
	}

	a := newTestAgent(t, false)
	a.cfg.OVS = &OVSConfig{}
	a.cfg.OVS.setDefaults(a.cfg.StateDir)
	node, key := s1.node(t, "node-a")
	pair := &Pair{Cert: node, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: node.Raw}),
		Key: key, KeyPEM: []byte("key")}
	if err := a.writeOVSFiles(pair, pemOf(s1, root)); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(a.cfg.OVS.PKIDir, ovsCAFile))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pemutil.ParseCertificates(raw, pemutil.Options{})
	if err != nil || len(certs) != 2 || !certs[0].Equal(root.cert) || !certs[1].Equal(s1.cert) {
		t.Fatalf("%s holds %d certificates (%v), want the root, then the subordinate", ovsCAFile, len(certs), err)
	}
}
