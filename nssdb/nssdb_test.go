package nssdb

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	for _, tool := range []string{"certutil", "pk12util", "crlutil"} {
		if _, err := exec.LookPath(tool); err != nil {
			println("FATAL: " + tool + " not found: install libnss3-tools (make deps)")
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

type pki struct {
	caKey  crypto.Signer
	caCert *x509.Certificate
	serial int64
}

func newPKI(t *testing.T) *pki {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return newRoot(t, key, 1, time.Now().Add(-time.Hour))
}

// newRoot makes a self-signed root "O=ipsecca, CN=test root" (every root
// of these tests has that subject, as a CA keeps it through a rollover)
// with key, valid ten years from notBefore.
func newRoot(t *testing.T, key crypto.Signer, serial int64, notBefore time.Time) *pki {
	t.Helper()
	subject := pkix.Name{Organization: []string{"ipsecca"}, CommonName: "test root"}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: subject,
		NotBefore: notBefore, NotAfter: notBefore.AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true,
		MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &pki{caKey: key, caCert: c, serial: 100}
}

// leaf issues a node certificate like ipsecca's profile; age shifts its
// NotBefore into the past so later certificates are "newer".
func (p *pki) leaf(t *testing.T, cn string, rsaKey bool, age time.Duration) (*x509.Certificate, crypto.Signer) {
	var key crypto.Signer
	ku := x509.KeyUsageDigitalSignature
	if rsaKey {
		key, _ = rsa.GenerateKey(rand.Reader, 2048)
		ku |= x509.KeyUsageKeyEncipherment
	} else {
		key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	p.serial++
	nb := time.Now().Add(-time.Hour - age)
	subject := pkix.Name{Organization: []string{"ipsecca"}, CommonName: cn}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial), Subject: subject,
		NotBefore: nb, NotAfter: nb.AddDate(5, 0, 0), DNSNames: []string{cn}, KeyUsage: ku,
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 17}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, key.Public(), p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

const nick = "ovs_certkey_node-a"

// assertExactly checks what a person checks with certutil: exactly the CA
// and one node certificate (serial want) with its key, valid in NSS.
func assertExactly(t *testing.T, d *DB, want *x509.Certificate) {
	t.Helper()
	ctx := context.Background()
	entries, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.Nickname] = e.Trust
		if e.Nickname == nick && (len(e.Certs) != 1 || !e.Certs[0].Equal(want)) {
			t.Fatalf("%s holds %d certificates, want exactly serial %x", nick, len(e.Certs), want.SerialNumber)
		}
	}
	if len(got) != 2 || got["ovs_cert_cacert"] != TrustCA || got[nick] != TrustUser {
		t.Fatalf("certutil -L shows %v, want ovs_cert_cacert CT,, and %s u,u,u", got, nick)
	}
	keys, err := d.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := KeyID(want.PublicKey)
	if len(keys) != 1 || keys[0].ID != id {
		t.Fatalf("certutil -K shows %+v, want only the key %s", keys, id)
	}
	for _, u := range []string{"C", "V"} {
		if err := d.Verify(ctx, nick, u); err != nil {
			t.Fatalf("certutil -V -u %s: %v", u, err)
		}
	}
}

func newDB(t *testing.T, p *pki) *DB {
	d := New(filepath.Join(t.TempDir(), "nss"))
	ctx := context.Background()
	if created, err := d.Ensure(ctx); err != nil || !created {
		t.Fatalf("ensure: %v %v", created, err)
	}
	if created, err := d.Ensure(ctx); err != nil || created {
		t.Fatalf("second ensure: %v %v", created, err)
	}
	if changed, err := d.AddCA(ctx, "ovs_cert_cacert", p.caCert, TrustCA); err != nil || !changed {
		t.Fatalf("add CA: %v %v", changed, err)
	}
	if changed, err := d.AddCA(ctx, "ovs_cert_cacert", p.caCert, TrustCA); err != nil || changed {
		t.Fatalf("second add CA changed=%v %v", changed, err)
	}
	return d
}

func TestFirstImportAndNoOp(t *testing.T) {
	for _, rsaKey := range []bool{true, false} {
		p := newPKI(t)
		d := newDB(t, p)
		ctx := context.Background()
		c, k := p.leaf(t, "node-a", rsaKey, 0)
		if changed, err := d.PutKeyPair(ctx, nick, c, k); err != nil || !changed {
			t.Fatalf("rsa=%v: first put: %v %v", rsaKey, changed, err)
		}
		assertExactly(t, d, c)
		before := snapshot(t, d.Dir)
		if changed, err := d.PutKeyPair(ctx, nick, c, k); err != nil || changed {
			t.Fatalf("second put: changed=%v %v", changed, err)
		}
		if after := snapshot(t, d.Dir); after != before {
			t.Fatal("a pass with nothing to do modified the database files")
		}
	}
}

// snapshot fingerprints the database files' contents.
func snapshot(t *testing.T, dir string) string {
	var b strings.Builder
	for _, f := range []string{"cert9.db", "key4.db"} {
		raw, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		b.Write(raw)
	}
	return b.String()
}

func TestReplaceLeavesExactlyTheNewPair(t *testing.T) {
	p := newPKI(t)
	d := newDB(t, p)
	ctx := context.Background()
	old, oldKey := p.leaf(t, "node-a", true, time.Hour)
	if _, err := d.PutKeyPair(ctx, nick, old, oldKey); err != nil {
		t.Fatal(err)
	}
	c, k := p.leaf(t, "node-a", true, 0)
	if changed, err := d.PutKeyPair(ctx, nick, c, k); err != nil || !changed {
		t.Fatalf("replace: %v %v", changed, err)
	}
	assertExactly(t, d, c)
}

// TestKilledAtEachStepConverges stops the replacement after each step (as
// a killed sidecar would), checks that the database still holds a valid
// pair for the node, then runs again and checks the final state.
func TestKilledAtEachStepConverges(t *testing.T) {
	for _, step := range []string{"p12-written", "imported", "renamed-new", "deleted-old", "renamed-back"} {
		t.Run(step, func(t *testing.T) {
			p := newPKI(t)
			d := newDB(t, p)
			ctx := context.Background()
			old, oldKey := p.leaf(t, "node-a", true, time.Hour)
			if _, err := d.PutKeyPair(ctx, nick, old, oldKey); err != nil {
				t.Fatal(err)
			}
			c, k := p.leaf(t, "node-a", true, 0)
			killed := errors.New("killed")
			d.Hook = func(s string) error {
				if strings.HasPrefix(s, step) {
					return killed
				}
				return nil
			}
			if _, err := d.PutKeyPair(ctx, nick, c, k); !errors.Is(err, killed) {
				t.Fatalf("not stopped at %s: %v", step, err)
			}
			// Some valid certificate with its key is in the database.
			entries, _ := d.List(ctx)
			valid := false
			for _, e := range entries {
				for _, x := range e.Certs {
					if ok, _ := d.HasKey(ctx, x); ok && d.Verify(ctx, e.Nickname, "C") == nil {
						valid = true
					}
				}
			}
			if !valid {
				t.Fatalf("after a stop at %s no valid pair is left: %+v", step, entries)
			}
			d.Hook = nil
			if _, err := d.PutKeyPair(ctx, nick, c, k); err != nil {
				t.Fatal(err)
			}
			assertExactly(t, d, c)
		})
	}
}

func TestTempP12IsPrivateAndRemoved(t *testing.T) {
	p := newPKI(t)
	d := newDB(t, p)
	var p12 string
	d.Hook = func(s string) error {
		if f, ok := strings.CutPrefix(s, "p12-written:"); ok {
			p12 = f
			fi, err := os.Stat(f)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("p12 mode %v %v", fi.Mode(), err)
			}
			if di, err := os.Stat(filepath.Dir(f)); err != nil || di.Mode().Perm() != 0o700 {
				t.Errorf("p12 directory mode %v %v", di.Mode(), err)
			}
		}
		return nil
	}
	c, k := p.leaf(t, "node-a", false, 0)
	if _, err := d.PutKeyPair(context.Background(), nick, c, k); err != nil {
		t.Fatal(err)
	}
	if p12 == "" {
		t.Fatal("no p12 was written")
	}
	if _, err := os.Stat(filepath.Dir(p12)); !os.IsNotExist(err) {
		t.Fatal("the temporary p12 directory was not removed")
	}
}

func TestVerifyRefusesAnotherCA(t *testing.T) {
	p, other := newPKI(t), newPKI(t)
	d := newDB(t, p)
	c, k := other.leaf(t, "node-a", false, 0)
	if _, err := d.PutKeyPair(context.Background(), nick, c, k); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
}

func TestLockExcludes(t *testing.T) {
	d := New(t.TempDir())
	unlock, err := d.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := d.Lock(ctx); err == nil {
		t.Fatal("a second lock was granted")
	}
	unlock()
	u2, err := d.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	u2()
}

func TestInitnssStyleDatabase(t *testing.T) {
	// `ipsec initnss` runs certutil -N with an empty password into the
	// directory; a database made that way beforehand is used as is.
	dir := filepath.Join(t.TempDir(), "nss")
	os.MkdirAll(dir, 0o700)
	if out, err := exec.Command("certutil", "-N", "-d", "sql:"+dir, "--empty-password").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	d := New(dir)
	if created, err := d.Ensure(context.Background()); err != nil || created {
		t.Fatalf("ensure on an existing database: %v %v", created, err)
	}
}

func TestParseListLine(t *testing.T) {
	for line, want := range map[string][2]string{
		"ovs_cert_cacert                                              CT,, ":              {"ovs_cert_cacert", "CT,,"},
		"my nick with spaces                                          u,u,u":              {"my nick with spaces", "u,u,u"},
		"ovs_certkey_node-a                                           ,,   ":              {"ovs_certkey_node-a", ",,"},
		"Certificate Nickname                                         Trust Attributes":   {"", ""},
		"                                                             SSL,S/MIME,JAR/XPI": {"", ""},
	} {
		n, tr, ok := parseListLine(line)
		if (want[0] == "") == ok || n != want[0] || tr != want[1] {
			t.Errorf("%q: %q %q %v", line, n, tr, ok)
		}
	}
}

func TestSwapNickname(t *testing.T) {
	for in, want := range map[string]string{
		"ovs_certkey_node-a": "ipsecca_swap_node-a",
		"left_server":        "ipsecca_swap_left_server",
	} {
		if got := SwapNickname(in); got != want || strings.HasPrefix(got, "ovs_") {
			t.Errorf("SwapNickname(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSwapStaysOutsideOVS: at no step of a replacement does the database
// hold an ovs_ nickname other than the node's and the CA's, which
// ovs-monitor-ipsec would delete on a restart; the new pair is parked
// under ipsecca_swap_<CN>.
func TestSwapStaysOutsideOVS(t *testing.T) {
	p := newPKI(t)
	d := newDB(t, p)
	ctx := context.Background()
	old, oldKey := p.leaf(t, "node-a", true, time.Hour)
	if _, err := d.PutKeyPair(ctx, nick, old, oldKey); err != nil {
		t.Fatal(err)
	}
	c, k := p.leaf(t, "node-a", true, 0)
	parked := false
	d.Hook = func(step string) error {
		entries, err := d.List(ctx)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Nickname, "ovs_") && e.Nickname != nick && e.Nickname != "ovs_cert_cacert" {
				t.Errorf("at step %s the database holds %q, which ovs-monitor-ipsec would delete", step, e.Nickname)
			}
			if e.Nickname == "ipsecca_swap_node-a" && len(e.Certs) > 0 && e.Certs[0].Equal(c) {
				parked = true
			}
		}
		return nil
	}
	if _, err := d.PutKeyPair(ctx, nick, c, k); err != nil {
		t.Fatal(err)
	}
	if !parked {
		t.Error("the new pair was never parked under ipsecca_swap_node-a")
	}
	d.Hook = nil
	assertExactly(t, d, c)
}

// TestFinishesInterruptedSwap: a swap left half done under the swap
// nickname, or under the one older versions used (NICK~ipsecca-new), is
// finished by the next PutKeyPair, and a stale entry under either name is
// removed with its key.
func TestFinishesInterruptedSwap(t *testing.T) {
	// TestKilledAtEachStepConverges covers a swap interrupted under today's name.
	for _, tc := range []struct{ park, stage string }{
		{nick + LegacySwapSuffix, "parked"}, {nick + LegacySwapSuffix, "old-deleted"},
		{nick + LegacySwapSuffix, "stale"}, {SwapNickname(nick), "stale"},
	} {
		park, stage := tc.park, tc.stage
		t.Run(park+"/"+stage, func(t *testing.T) {
			p := newPKI(t)
			d := newDB(t, p)
			ctx := context.Background()
			old, oldKey := p.leaf(t, "node-a", false, time.Hour)
			c, k := p.leaf(t, "node-a", false, 0)
			if stage == "stale" {
				// The current pair in place, and another one left parked.
				if _, err := d.PutKeyPair(ctx, nick, c, k); err != nil {
					t.Fatal(err)
				}
				s, sk := p.leaf(t, "node-old", false, 0)
				if err := d.importKeyPair(ctx, s, sk); err != nil {
					t.Fatal(err)
				}
				at, err := d.parkedAt(ctx, nick, s)
				if err != nil || at == "" {
					t.Fatalf("imported stale pair not found: %q %v", at, err)
				}
				if err := d.Rename(ctx, at, park); err != nil {
					t.Fatal(err)
				}
			} else {
				if _, err := d.PutKeyPair(ctx, nick, old, oldKey); err != nil {
					t.Fatal(err)
				}
				if err := d.importKeyPair(ctx, c, k); err != nil {
					t.Fatal(err)
				}
				if err := d.Rename(ctx, nick, park); err != nil {
					t.Fatal(err)
				}
				if moved, _ := d.Certs(ctx, park); !holds(moved, c) {
					t.Fatalf("setup: %s does not hold the new certificate", park)
				}
				if stage == "old-deleted" {
					if err := d.DeleteBest(ctx, nick); err != nil {
						t.Fatal(err)
					}
				}
			}
			if changed, err := d.PutKeyPair(ctx, nick, c, k); err != nil || !changed {
				t.Fatalf("put after an interrupted swap: changed=%v %v", changed, err)
			}
			assertExactly(t, d, c)
			if changed, err := d.PutKeyPair(ctx, nick, c, k); err != nil || changed {
				t.Fatalf("a pass after that: changed=%v %v", changed, err)
			}
		})
	}
}

func TestToolEnv(t *testing.T) {
	got := toolEnv([]string{"PATH=/bin", "LANG=de_DE.UTF-8", "LANGUAGE=de:en", "LC_ALL=de_DE.UTF-8",
		"LC_MESSAGES=de_DE.UTF-8", "LC_NUMERIC=de_DE.UTF-8", "HOME=/root", "XLC_ALL=kept"})
	want := "PATH=/bin HOME=/root XLC_ALL=kept LC_ALL=C"
	if strings.Join(got, " ") != want {
		t.Fatalf("toolEnv = %v, want %s", got, want)
	}
}

// TestToolsRunInCLocale: with the parent in a German locale, the tools see
// LC_ALL=C and no other locale variable. A stand-in certutil prints a key
// line only then, so the parsed result of Keys shows the environment.
func TestToolsRunInCLocale(t *testing.T) {
	bin := t.TempDir()
	script := `#!/bin/sh
loc=$(env | grep -E '^(LANG|LANGUAGE|LC_[A-Z_]*)=' | sort | tr '\n' ' ')
if [ "$loc" != "LC_ALL=C " ]; then echo "locale: $loc" >&2; exit 1; fi
echo '< 0> rsa      760a2ee8fd08b0d184c73625661d64424cec6015   ovs_certkey_node-a'
`
	if err := os.WriteFile(filepath.Join(bin, "certutil"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	for k, v := range map[string]string{"LANG": "de_DE.UTF-8", "LANGUAGE": "de", "LC_ALL": "de_DE.UTF-8",
		"LC_MESSAGES": "de_DE.UTF-8"} {
		t.Setenv(k, v)
	}
	keys, err := New(t.TempDir()).Keys(context.Background())
	if err != nil || len(keys) != 1 || keys[0].Nickname != nick {
		t.Fatalf("Keys under a German parent locale: %+v %v", keys, err)
	}
}
