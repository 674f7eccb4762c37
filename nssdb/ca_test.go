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
	"errors"
	"math/big"
	"os/exec"
	"strings"
	"testing"
	"time"
)

const caNick = "ovs_cert_cacert"

// lines returns what `certutil -L` lists: nickname -> the trust of each
// certificate under it.
func lines(t *testing.T, d *DB) map[string][]string {
	t.Helper()
	out, err := exec.Command("certutil", "-L", "-d", d.spec()).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if n, tr, ok := parseListLine(l); ok {
			got[n] = append(got[n], tr)
		}
	}
	return got
}

// TestDeleteCAAfterRollover: the old and the new root of a key rollover
// (same subject, different keys) under one nickname, the new one the
// newest, so the one `certutil -D -n` would delete; DeleteCA removes the
// old one only, and the node's pair, issued by the new root, still
// verifies.
func TestDeleteCAAfterRollover(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  func() crypto.Signer
	}{
		{"ecdsa", func() crypto.Signer { k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader); return k }},
		{"rsa", func() crypto.Signer { k, _ := rsa.GenerateKey(rand.Reader, 2048); return k }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			old := newRoot(t, tc.key(), 1, time.Now().Add(-48*time.Hour))
			cur := newRoot(t, tc.key(), 2, time.Now().Add(-time.Hour))
			d := newDB(t, old)
			if changed, err := d.AddCA(ctx, caNick, cur.caCert, TrustCA); err != nil || !changed {
				t.Fatalf("add the new root: %v %v", changed, err)
			}
			node, key := cur.leaf(t, "node-a", true, 0)
			if _, err := d.PutKeyPair(ctx, nick, node, key); err != nil {
				t.Fatal(err)
			}
			if got := lines(t, d)[caNick]; len(got) != 2 {
				t.Fatalf("%s lists %v, want both roots", caNick, got)
			}
			if best, err := d.Certs(ctx, caNick); err != nil || !best[0].Equal(cur.caCert) {
				t.Fatalf("the best certificate of %s is not the new root (%v): the test shows nothing", caNick, err)
			}
			for _, other := range []struct {
				nick string
				cert *x509.Certificate
			}{{nick, cur.caCert}, {caNick, node}, {nick, old.caCert}} {
				if deleted, err := d.DeleteCA(ctx, other.nick, other.cert); err != nil || deleted {
					t.Fatalf("DeleteCA(%s, serial %x) of a certificate not under it: %v %v",
						other.nick, other.cert.SerialNumber, deleted, err)
				}
			}
			if deleted, err := d.DeleteCA(ctx, caNick, old.caCert); err != nil || !deleted {
				t.Fatalf("delete the old root: %v %v", deleted, err)
			}
			if got := lines(t, d)[caNick]; len(got) != 1 || got[0] != TrustCA {
				t.Fatalf("%s lists %v after the delete, want one CT,,", caNick, got)
			}
			if certs, err := d.Certs(ctx, caNick); err != nil || len(certs) != 1 || !certs[0].Equal(cur.caCert) {
				t.Fatalf("%s holds %d certificates after the delete (%v), want the new root", caNick, len(certs), err)
			}
			assertExactly(t, d, node)
			if deleted, err := d.DeleteCA(ctx, caNick, old.caCert); err != nil || deleted {
				t.Fatalf("deleting it again: %v %v", deleted, err)
			}
		})
	}
}

// TestDeleteCARefusesSharedKey: a root renewed with the same key shares
// its subject and CKA_ID with its predecessor; certutil cannot name one
// apart from the other, so DeleteCA and MoveCA touch neither.
func TestDeleteCARefusesSharedKey(t *testing.T) {
	ctx := context.Background()
	old := newPKI(t)
	renewed := newRoot(t, old.caKey, 2, time.Now().Add(-time.Minute))
	d := newDB(t, old)
	if _, err := d.AddCA(ctx, caNick, renewed.caCert, TrustCA); err != nil {
		t.Fatal(err)
	}
	if deleted, err := d.DeleteCA(ctx, caNick, old.caCert); !errors.Is(err, ErrSharedKey) || deleted {
		t.Fatalf("DeleteCA of a root sharing its key: %v %v, want ErrSharedKey", deleted, err)
	}
	if moved, err := d.MoveCA(ctx, caNick, "elsewhere", old.caCert); !errors.Is(err, ErrSharedKey) || moved {
		t.Fatalf("MoveCA of a root sharing its key: %v %v, want ErrSharedKey", moved, err)
	}
	if got := lines(t, d); len(got[caNick]) != 2 || len(got) != 1 {
		t.Fatalf("certutil -L shows %v, want both roots under %s", got, caNick)
	}
}

// TestDeleteCAKey: a key retired with all its roots. The root R0 and
// R0' renewed with its key (same subject, same CKA_ID, which certutil
// cannot name apart) are under the CA nickname beside the new root R1
// (another key); a third root with the old key is under another
// nickname. DeleteCAKey deletes R0 and R0' from the CA nickname, whichever
// it names first, and leaves R1, the third root under its own nickname,
// and the node's pair with its key; again, it deletes nothing.
func TestDeleteCAKey(t *testing.T) {
	ctx := context.Background()
	old := newRoot(t, func() crypto.Signer { k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader); return k }(),
		1, time.Now().Add(-72*time.Hour))
	renewed := newRoot(t, old.caKey, 2, time.Now().Add(-48*time.Hour))
	again := newRoot(t, old.caKey, 3, time.Now().Add(-24*time.Hour))
	cur := newRoot(t, func() crypto.Signer { k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader); return k }(),
		4, time.Now().Add(-time.Hour))
	d := newDB(t, old)
	for _, c := range []*x509.Certificate{renewed.caCert, cur.caCert} {
		if err := d.ImportCA(ctx, caNick, c, TrustCA); err != nil {
			t.Fatal(err)
		}
	}
	const other = "another"
	if err := d.ImportCA(ctx, other, again.caCert, TrustCA); err != nil {
		t.Fatal(err)
	}
	node, key := cur.leaf(t, "node-a", false, 0)
	if _, err := d.PutKeyPair(ctx, nick, node, key); err != nil {
		t.Fatal(err)
	}
	if got := lines(t, d); len(got[caNick]) != 3 || len(got[other]) != 1 {
		t.Fatalf("certutil -L shows %v, want three roots under %s, one under %s", got, caNick, other)
	}
	if deleted, err := d.DeleteCA(ctx, caNick, old.caCert); !errors.Is(err, ErrSharedKey) || deleted {
		t.Fatalf("DeleteCA of a root sharing its key: %v %v, want ErrSharedKey", deleted, err)
	}
	for _, c := range []struct {
		nick string
		cert *x509.Certificate
	}{{nick, cur.caCert}, {caNick, node}, {other, cur.caCert}} {
		if n, err := d.DeleteCAKey(ctx, c.nick, c.cert); err != nil || n != 0 {
			t.Fatalf("DeleteCAKey(%s, serial %x) of a key it does not hold: %d %v", c.nick, c.cert.SerialNumber, n,
				err)
		}
	}
	if n, err := d.DeleteCAKey(ctx, nick, node); err == nil || n != 0 {
		t.Fatalf("DeleteCAKey of the node's certificate, whose key the database holds: %d %v", n, err)
	}
	if n, err := d.DeleteCAKey(ctx, caNick, renewed.caCert); err != nil || n != 2 {
		t.Fatalf("DeleteCAKey: %d %v, want the two roots with the old key deleted", n, err)
	}
	got := lines(t, d)
	if len(got) != 3 || strings.Join(got[caNick], " ") != TrustCA || strings.Join(got[other], " ") != TrustCA {
		t.Fatalf("certutil -L shows %v, want one root under %s and one under %s beside the node", got, caNick, other)
	}
	for _, c := range []struct {
		nick string
		cert *x509.Certificate
		want bool
	}{{caNick, cur.caCert, true}, {caNick, old.caCert, false}, {other, again.caCert, true}} {
		if ok, err := d.Under(ctx, c.nick, c.cert); err != nil || ok != c.want {
			t.Fatalf("Under(%s, serial %x) = %v (%v), want %v", c.nick, c.cert.SerialNumber, ok, err, c.want)
		}
	}
	if certs, err := d.Certs(ctx, caNick); err != nil || len(certs) != 2 {
		t.Fatalf("Certs(%s) = %d certificates (%v), want the new root and the third root of %s", caNick, len(certs),
			err, other)
	}
	if certs, err := d.Certs(ctx, nick); err != nil || len(certs) != 1 || !certs[0].Equal(node) {
		t.Fatalf("%s holds %d certificates (%v), want the node's", nick, len(certs), err)
	}
	id, _ := KeyID(node.PublicKey)
	if keys, err := d.Keys(ctx); err != nil || len(keys) != 1 || keys[0].ID != id {
		t.Fatalf("certutil -K shows %+v (%v), want the node's key alone", keys, err)
	}
	for _, u := range []string{"C", "V"} {
		if err := d.Verify(ctx, nick, u); err != nil {
			t.Fatalf("certutil -V -u %s: %v", u, err)
		}
	}
	if n, err := d.DeleteCAKey(ctx, caNick, old.caCert); err != nil || n != 0 {
		t.Fatalf("DeleteCAKey again: %d %v", n, err)
	}
}

// subCA issues a subordinate CA (CA:TRUE, path length 0) under p.
func (p *pki) subCA(t *testing.T, cn string) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial),
		Subject:   pkix.Name{Organization: []string{"ipsecca"}, CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(8, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, key.Public(), p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &pki{caKey: key, caCert: c, serial: 100}
}

// TestMoveCA: a subordinate CA an older sidecar filed as a trust anchor
// under the CA nickname moves to a nickname of its own (a name with a
// space and a semicolon, escaped in the URI), keeping its trust until
// ImportCA sets it; the root then goes under the CA nickname, which
// refused it while the subordinate held it.
func TestMoveCA(t *testing.T) {
	ctx := context.Background()
	root := newPKI(t)
	sub := root.subCA(t, "ipsecca sub")
	d := New(t.TempDir())
	if _, err := d.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.ImportCA(ctx, caNick, sub.caCert, TrustCA); err != nil {
		t.Fatal(err)
	}
	if err := d.ImportCA(ctx, caNick, root.caCert, TrustCA); err == nil {
		t.Fatal("certutil -A put a second subject under one nickname")
	}
	const to = "ipsecca intermediate; old"
	if moved, err := d.MoveCA(ctx, to, caNick, sub.caCert); err != nil || moved {
		t.Fatalf("MoveCA from a nickname that does not hold it: %v %v", moved, err)
	}
	if moved, err := d.MoveCA(ctx, caNick, to, sub.caCert); err != nil || !moved {
		t.Fatalf("move: %v %v", moved, err)
	}
	if got := lines(t, d); len(got) != 1 || len(got[to]) != 1 || got[to][0] != TrustCA {
		t.Fatalf("certutil -L shows %v, want only %q CT,,", got, to)
	}
	if err := d.ImportCA(ctx, caNick, root.caCert, TrustCA); err != nil {
		t.Fatal(err)
	}
	if err := d.ImportCA(ctx, "ignored", sub.caCert, TrustIntermediate); err != nil {
		t.Fatal(err)
	}
	got := lines(t, d)
	if len(got) != 2 || strings.Join(got[to], " ") != TrustIntermediate || strings.Join(got[caNick], " ") != TrustCA {
		t.Fatalf("certutil -L shows %v, want %q ,, and %s CT,,", got, to, caNick)
	}
	if ok, err := d.Under(ctx, to, sub.caCert); err != nil || !ok {
		t.Fatalf("Under(%q): %v %v", to, ok, err)
	}
	// certutil -L -n prints the certificates of the nickname's subject:
	// the subordinate alone, not the root of the other nickname.
	if certs, err := d.Certs(ctx, to); err != nil || len(certs) != 1 || !certs[0].Equal(sub.caCert) {
		t.Fatalf("Certs(%q) = %d certificates, %v", to, len(certs), err)
	}
}

// TestCertsListsTheSubject pins the fact the package relies on:
// `certutil -L -n NICK` prints every certificate with NICK's subject,
// whatever its nickname.
func TestCertsListsTheSubject(t *testing.T) {
	ctx := context.Background()
	old := newPKI(t)
	cur := newRoot(t, func() crypto.Signer { k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader); return k }(),
		2, time.Now())
	d := newDB(t, old)
	if err := d.ImportCA(ctx, "another", cur.caCert, TrustCA); err != nil {
		t.Fatal(err)
	}
	if got := lines(t, d); len(got[caNick]) != 1 || len(got["another"]) != 1 {
		t.Fatalf("certutil -L shows %v, want one root under each nickname", got)
	}
	for _, n := range []string{caNick, "another"} {
		if certs, err := d.Certs(ctx, n); err != nil || len(certs) != 2 {
			t.Fatalf("Certs(%s) = %d certificates (%v), want both roots", n, len(certs), err)
		}
		ok, err := d.Under(ctx, n, old.caCert)
		if want := n == caNick; err != nil || ok != want {
			t.Fatalf("Under(%s, old root) = %v (%v), want %v", n, ok, err, want)
		}
	}
}

func TestURIEscape(t *testing.T) {
	for in, want := range map[string]string{
		"ovs_cert_cacert":   "ovs_cert_cacert",
		"a b;c=d/e%f:g~h.i": "a%20b%3bc%3dd%2fe%25f%3ag~h.i",
		"\x00\xff":          "%00%ff",
	} {
		if got := uriEscape([]byte(in)); got != want {
			t.Errorf("uriEscape(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestParseListTrusts: a nickname listed once per certificate keeps each
// line's trust, an intermediate's ",," included.
func TestParseListTrusts(t *testing.T) {
	out := "\nCertificate Nickname                                         Trust Attributes\n" +
		"                                                             SSL,S/MIME,JAR/XPI\n\n" +
		"ovs_cert_cacert                                              CT,, \n" +
		"ipsecca-cacert-intermediate-0a1b2c3d                         ,,   \n" +
		"ovs_cert_cacert                                              c,, \n"
	got := parseList([]byte(out))
	if len(got) != 2 || got[0].Nickname != caNick || strings.Join(got[0].Trusts, " ") != "CT,, c,," ||
		got[0].Trust != "c,," || got[1].Trust != TrustIntermediate || len(got[1].Trusts) != 1 {
		t.Fatalf("parseList = %+v", got)
	}
}
