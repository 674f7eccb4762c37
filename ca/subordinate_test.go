package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/internal/testclock"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
)

// orgCA is a CA of "the organisation": its root or an intermediate, made
// here as an organisation's own tools would.
type orgCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var orgSerial = big.NewInt(100)

func nextOrgSerial() *big.Int { return new(big.Int).Set(orgSerial.Add(orgSerial, big.NewInt(1))) }

// newOrgCA makes a CA certificate for a new key, signed by parent (self-
// signed when nil), valid [from, to), adjusted by mutate.
func newOrgCA(t testing.TB, parent *orgCA, cn string, from, to time.Time, mutate func(*x509.Certificate)) *orgCA {
	t.Helper()
	key := mustECDSA(t, elliptic.P256())
	tmpl := &x509.Certificate{
		SerialNumber:          nextOrgSerial(),
		Subject:               pkix.Name{Organization: []string{"Example Corp"}, CommonName: cn},
		NotBefore:             from,
		NotAfter:              to,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            -1,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if mutate != nil {
		mutate(tmpl)
	}
	p := &orgCA{cert: tmpl, key: key}
	if parent != nil {
		p = parent
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, key.Public(), p.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &orgCA{cert: c, key: key}
}

// signSub signs a subordinate CA certificate for pub with subject raw (the
// request's), as `openssl x509 -req -extfile` would with basicConstraints
// CA:TRUE pathlen:0 and keyUsage keyCertSign, cRLSign; mutate changes it.
func (o *orgCA) signSub(
	t testing.TB,
	pub crypto.PublicKey,
	rawSubject []byte,
	from, to time.Time,
	mutate func(*x509.Certificate),
) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          nextOrgSerial(),
		RawSubject:            rawSubject,
		NotBefore:             from,
		NotAfter:              to,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if mutate != nil {
		mutate(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, o.cert, pub, o.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemOf(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// subFixture is a store holding a subordinate CA awaiting its certificate,
// and an organisation's root valid from a year before t0 for 20 years.
type subFixture struct {
	st    *bolt.Store
	clock *testclock.Clock
	req   *SubordinateRequest
	csr   *x509.CertificateRequest
	root  *orgCA
}

func newSubFixture(t testing.TB, kek KEK) *subFixture {
	t.Helper()
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := testclock.New(t0)
	req, err := InitSubordinate(context.Background(), st,
		RootConfig{Organization: "example", CommonName: "ipsecca CA", KEK: kek}, clock, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(req.CSRPEM)
	if err != nil {
		t.Fatal(err)
	}
	root := newOrgCA(t, nil, "Example Root", t0.AddDate(-1, 0, 0), t0.AddDate(19, 0, 0), nil)
	return &subFixture{st: st, clock: clock, req: req, csr: csr, root: root}
}

// sub signs the fixture's request with its root, valid from t0 for years.
func (f *subFixture) sub(t testing.TB, years int, mutate func(*x509.Certificate)) *x509.Certificate {
	return f.root.signSub(t, f.csr.PublicKey, f.csr.RawSubject, t0, t0.AddDate(years, 0, 0), mutate)
}

func TestInitSubordinate(t *testing.T) {
	f := newSubFixture(t, nil)
	ctx := context.Background()
	if f.req.State != SubordinateCreated || f.req.Subject != "CN=ipsecca CA,O=example" ||
		f.req.Key != "ECDSA P-256" {
		t.Fatalf("request %+v", f.req)
	}
	if err := f.csr.CheckSignature(); err != nil {
		t.Fatal(err)
	}
	var bc, ku bool
	for _, ext := range f.csr.Extensions {
		switch {
		case ext.Id.Equal(oidBasicConstraints):
			var v struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			_, err := asn1.Unmarshal(ext.Value, &v)
			bc = err == nil && ext.Critical && v.IsCA && v.MaxPathLen == 0
		case ext.Id.Equal(oidKeyUsage):
			var v asn1.BitString
			_, err := asn1.Unmarshal(ext.Value, &v)
			ku = err == nil && ext.Critical && v.At(5) == 1 && v.At(6) == 1 && v.At(0) == 0
		}
	}
	if !bc || !ku {
		t.Fatalf("the request lacks CA:TRUE pathlen 0 (%v) or keyCertSign+cRLSign (%v)", bc, ku)
	}
	// Again: the same request, nothing else made.
	again, err := InitSubordinate(ctx, f.st, RootConfig{CommonName: "other"}, f.clock, rand.Reader)
	if err != nil || again.State != SubordinateAwaiting || !bytes.Equal(again.CSRPEM, f.req.CSRPEM) {
		t.Fatalf("second init: %+v %v", again, err)
	}
	// Nothing issues before the certificate is there.
	if _, _, err := Bootstrap(ctx, f.st, RootConfig{}, f.clock); !errors.Is(err, ErrAwaitingCertificate) {
		t.Fatalf("bootstrap before import: %v", err)
	}
	// A self-signed root is no subordinate.
	_, rootSt, clock := newTestAuthority(t, KeyECDSAP256)
	if _, err := InitSubordinate(ctx, rootSt, RootConfig{}, clock, rand.Reader); !errors.Is(err, ErrNotSubordinate) {
		t.Fatalf("init --subordinate on a root: %v", err)
	}
	if _, err := ImportSubordinate(ctx, rootSt, nil, pemOf(f.sub(t, 10, nil)), pemOf(f.root.cert), t0,
		"test"); !errors.Is(err, ErrNotSubordinate) || !errors.Is(err, ErrFailedPrecondition) {
		t.Fatalf("import into a root: %v", err)
	}
}

func TestImportSubordinateChecks(t *testing.T) {
	type input struct{ cert, chain []byte }
	for _, tc := range []struct {
		name   string
		in     func(t *testing.T, f *subFixture) input
		reason string // the refusal's check, "" to import
		detail string // in the refusal or, when importing, in a warning ("" for none)
	}{
		{"imports", func(t *testing.T, f *subFixture) input {
			return input{pemOf(f.sub(t, 10, nil)), pemOf(f.root.cert)}
		}, "", ""},
		{"chain in the certificate file", func(t *testing.T, f *subFixture) input {
			return input{pemOf(f.sub(t, 10, nil), f.root.cert), nil}
		}, "", ""},
		{"through an intermediate, given root first", func(t *testing.T, f *subFixture) input {
			inter := newOrgCA(t, f.root, "Example Issuing", t0, t0.AddDate(12, 0, 0), nil)
			c := inter.signSub(t, f.csr.PublicKey, f.csr.RawSubject, t0, t0.AddDate(10, 0, 0), nil)
			return input{pemOf(c), pemOf(f.root.cert, inter.cert)}
		}, "", ""},
		{"wrong key", func(t *testing.T, f *subFixture) input {
			other := mustECDSA(t, elliptic.P256())
			c := f.root.signSub(t, other.Public(), f.csr.RawSubject, t0, t0.AddDate(10, 0, 0), nil)
			return input{pemOf(c), pemOf(f.root.cert)}
		}, "key", "does not match the subordinate CA's key"},
		{"not a CA", func(t *testing.T, f *subFixture) input {
			return input{pemOf(f.sub(t, 10, func(c *x509.Certificate) { c.IsCA, c.MaxPathLenZero = false, false })),
				pemOf(f.root.cert)}
		}, "not-ca", "not a CA certificate"},
		{"no keyCertSign", func(t *testing.T, f *subFixture) input {
			return input{pemOf(f.sub(t, 10, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageCRLSign })),
				pemOf(f.root.cert)}
		}, "key-usage", "lacks keyCertSign"},
		{"no cRLSign: imports, warned", func(t *testing.T, f *subFixture) input {
			return input{pemOf(f.sub(t, 10, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageCertSign })),
				pemOf(f.root.cert)}
		}, "", "CRLs it signs"},
		{"extended key usage without clientAuth", func(t *testing.T, f *subFixture) input {
			return input{pemOf(f.sub(t, 10, func(c *x509.Certificate) {
				c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			})), pemOf(f.root.cert)}
		}, "ext-key-usage", "serverAuth and clientAuth"},
		{"another subject: imports, warned", func(t *testing.T, f *subFixture) input {
			return input{pemOf(f.sub(t, 10, func(c *x509.Certificate) {
				c.RawSubject, c.Subject = nil, pkix.Name{CommonName: "something else"}
			})), pemOf(f.root.cert)}
		}, "", "rightca=%same"},
		{"not yet valid", func(t *testing.T, f *subFixture) input {
			return input{pemOf(f.root.signSub(t, f.csr.PublicKey, f.csr.RawSubject, t0.Add(time.Hour),
				t0.AddDate(10, 0, 0), nil)), pemOf(f.root.cert)}
		}, "validity", "not valid before"},
		{"expired", func(t *testing.T, f *subFixture) input {
			return input{pemOf(f.root.signSub(t, f.csr.PublicKey, f.csr.RawSubject, t0.AddDate(-1, 0, 0),
				t0.Add(-time.Second), nil)), pemOf(f.root.cert)}
		}, "validity", "expired at"},
		{"no chain", func(t *testing.T, f *subFixture) input {
			return input{pemOf(f.sub(t, 10, nil)), nil}
		}, "chain-root", "holds no issuer"},
		{"chain not ending in a root", func(t *testing.T, f *subFixture) input {
			inter := newOrgCA(t, f.root, "Example Issuing", t0, t0.AddDate(12, 0, 0), nil)
			c := inter.signSub(t, f.csr.PublicKey, f.csr.RawSubject, t0, t0.AddDate(10, 0, 0), nil)
			return input{pemOf(c), pemOf(inter.cert)}
		}, "chain-root", "does not end in a self-signed root"},
		{"chain of another root of the same name", func(t *testing.T, f *subFixture) input {
			impostor := newOrgCA(t, nil, "Example Root", t0.AddDate(-1, 0, 0), t0.AddDate(19, 0, 0), nil)
			return input{pemOf(f.sub(t, 10, nil)), pemOf(impostor.cert)}
		}, "chain-root", "did not sign"},
		{"root allows no CA below it", func(t *testing.T, f *subFixture) input {
			strict := newOrgCA(t, nil, "Strict Root", t0.AddDate(-1, 0, 0), t0.AddDate(19, 0, 0),
				func(c *x509.Certificate) { c.MaxPathLen, c.MaxPathLenZero = 0, true })
			c := strict.signSub(t, f.csr.PublicKey, f.csr.RawSubject, t0, t0.AddDate(10, 0, 0), nil)
			return input{pemOf(c), pemOf(strict.cert)}
		}, "path-length", "pathlen 0"},
		{"chain that does not verify (root expired)", func(t *testing.T, f *subFixture) input {
			old := newOrgCA(t, nil, "Old Root", t0.AddDate(-10, 0, 0), t0.Add(-time.Hour), nil)
			c := old.signSub(t, f.csr.PublicKey, f.csr.RawSubject, t0.AddDate(-1, 0, 0), t0.AddDate(5, 0, 0), nil)
			return input{pemOf(c), pemOf(old.cert)}
		}, "chain", "does not verify"},
		{"short validity: imports, warned of the cap", func(t *testing.T, f *subFixture) input {
			return input{pemOf(f.sub(t, 2, nil)), pemOf(f.root.cert)}
		}, "", "capped to end then"},
		{"within the rotation margin: imports, warned", func(t *testing.T, f *subFixture) input {
			return input{pemOf(f.root.signSub(t, f.csr.PublicKey, f.csr.RawSubject, t0,
				t0.AddDate(5, 3, 0), nil)), pemOf(f.root.cert)}
		}, "", "will be capped to end then"},
		{"root ending first: warned of the root's cap", func(t *testing.T, f *subFixture) input {
			short := newOrgCA(t, nil, "Short Root", t0.AddDate(-1, 0, 0), t0.AddDate(3, 0, 0), nil)
			c := short.signSub(t, f.csr.PublicKey, f.csr.RawSubject, t0, t0.AddDate(10, 0, 0), nil)
			return input{pemOf(c), pemOf(short.cert)}
		}, "", `"CN=Short Root,O=Example Corp" above the subordinate CA ends at`},
		{"garbage", func(t *testing.T, f *subFixture) input {
			return input{[]byte("not PEM"), pemOf(f.root.cert)}
		}, "parse", "not PEM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newSubFixture(t, nil)
			in := tc.in(t, f)
			ctx := context.Background()
			res, err := ImportSubordinate(ctx, f.st, nil, in.cert, in.chain, t0, "test")
			if tc.reason != "" {
				var de *DenyError
				if !errors.As(err, &de) || de.Reason != Reason(ReasonImportPrefix+tc.reason) ||
					!strings.Contains(de.Detail, tc.detail) || !errors.Is(err, ErrInvalidRequest) {
					t.Fatalf("got %v, want refusal %s%s mentioning %q", err, ReasonImportPrefix, tc.reason, tc.detail)
				}
				m, err := f.st.CA(ctx)
				if err != nil || len(m.CertPEM) != 0 || !bytes.Equal(m.CSRPEM, f.req.CSRPEM) {
					t.Fatalf("a refused import changed the record: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			warned := strings.Join(res.Warnings, "\n")
			if (tc.detail == "") != (warned == "") || !strings.Contains(warned, tc.detail) {
				t.Fatalf("warnings %q, want %q", warned, tc.detail)
			}
			m, err := f.st.CA(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(m.CSRPEM) != 0 || len(m.Chain) != len(res.Chain) ||
				!bytes.Equal(m.Chain[len(m.Chain)-1], res.Chain[len(res.Chain)-1].Raw) ||
				!selfSigned(res.Chain[len(res.Chain)-1]) {
				t.Fatalf("stored chain %d certificates, request %d bytes", len(m.Chain), len(m.CSRPEM))
			}
			evs, _, err := f.st.ListEvents(ctx, store.EventFilter{Type: store.EventCAImported})
			if err != nil || len(evs) != 1 || evs[0].Serial != SerialString(res.Cert.SerialNumber) ||
				evs[0].Detail["node_not_after_cap"] != res.NodeNotAfterCap().Format(time.RFC3339) {
				t.Fatalf("import event %+v %v", evs, err)
			}
			r, _, err := Bootstrap(ctx, f.st, RootConfig{}, f.clock)
			if err != nil || !r.Subordinate() || !r.Cert.Equal(res.Cert) {
				t.Fatalf("bootstrap after import: %v", err)
			}
			// The bundle: the subordinate, then the chain up to the root.
			want := append([]*x509.Certificate{res.Cert}, res.Chain...)
			if !bytes.Equal(r.BundlePEM, pemOf(want...)) {
				t.Fatalf("bundle does not hold the subordinate and its chain")
			}
		})
	}
}

// A node certificate under a short-lived subordinate ends with it, rotates
// at 90% of that shorter life and chains node -> subordinate -> root.
func TestSubordinateCapsNodeCertificates(t *testing.T) {
	f := newSubFixture(t, nil)
	ctx := context.Background()
	sub := f.sub(t, 2, nil)
	if _, err := ImportSubordinate(ctx, f.st, nil, pemOf(sub), pemOf(f.root.cert), t0, "test"); err != nil {
		t.Fatal(err)
	}
	root, _, err := Bootstrap(ctx, f.st, RootConfig{}, f.clock)
	if err != nil {
		t.Fatal(err)
	}
	a := New(f.st, root, Config{Clock: f.clock, Rand: rand.Reader})
	tok, _, err := a.CreateToken(ctx, "node-a", "", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := a.EnrollWithToken(ctx, tok, makeCSR(t, csrOpts{cn: "node-a"}))
	if err != nil {
		t.Fatal(err)
	}
	if !rec.NotAfter.Equal(sub.NotAfter) {
		t.Fatalf("node NotAfter %s, want the subordinate's %s", rec.NotAfter, sub.NotAfter)
	}
	if want := RotateAfter(rec.NotBefore, rec.NotAfter); !rec.RotateAfter.Equal(want) {
		t.Fatalf("rotate_after %s, want 90%% of the capped life %s", rec.RotateAfter, want)
	}
	leaf, err := x509.ParseCertificate(rec.DER)
	if err != nil {
		t.Fatal(err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(f.root.cert)
	inter.AddCert(sub)
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: t0,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}})
	if err != nil || len(chains[0]) != 3 {
		t.Fatalf("node certificate does not chain to the organisation's root: %v", err)
	}
	capAt, renewBy, warnings := a.Root().SubordinateInfo(t0)
	if !capAt.Equal(sub.NotAfter) || !renewBy.Equal(sub.NotAfter.AddDate(-NodeYears, 0, 0)) ||
		len(warnings) != 1 || !strings.Contains(warnings[0], "capped") {
		t.Fatalf("SubordinateInfo: cap %s renew by %s warnings %q", capAt, renewBy, warnings)
	}
	// A subordinate that ended issues nothing.
	f.clock.Set(sub.NotAfter.Add(time.Minute))
	tok2, _, err := a.CreateToken(ctx, "node-b", "", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.EnrollWithToken(ctx, tok2, makeCSR(t, csrOpts{cn: "node-b"}))
	wantReason(t, err, ReasonCAExpired)
	// A self-signed root reports nothing of the kind.
	self, _, _ := newTestAuthority(t, KeyECDSAP256)
	if c, r, w := self.Root().SubordinateInfo(t0); !c.IsZero() || !r.IsZero() || w != nil {
		t.Fatalf("a root's SubordinateInfo: %s %s %q", c, r, w)
	}
}

// A renewal: a new certificate for the same key and subject replaces the
// old one (not kept: what it signed verifies under the new one); another
// subject is refused; a sealed key needs its KEK.
func TestRenewSubordinate(t *testing.T) {
	kek := KEK(bytes.Repeat([]byte{7}, 32))
	f := newSubFixture(t, kek)
	ctx := context.Background()
	first := f.sub(t, 2, nil)
	if _, err := ImportSubordinate(ctx, f.st, nil, pemOf(first), pemOf(f.root.cert), t0, "test"); err == nil ||
		!strings.Contains(err.Error(), "sealed") {
		t.Fatalf("import without the KEK of a sealed key: %v", err)
	}
	if _, err := ImportSubordinate(ctx, f.st, kek, pemOf(first), pemOf(f.root.cert), t0, "test"); err != nil {
		t.Fatal(err)
	}
	root, _, err := Bootstrap(ctx, f.st, RootConfig{KEK: kek}, f.clock)
	if err != nil {
		t.Fatal(err)
	}
	a := New(f.st, root, Config{Clock: f.clock, Rand: rand.Reader, KEK: kek})
	tok, _, err := a.CreateToken(ctx, "node-a", "", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := a.EnrollWithToken(ctx, tok, makeCSR(t, csrOpts{cn: "node-a"}))
	if err != nil {
		t.Fatal(err)
	}
	// init --subordinate again: a renewal request for the same key and subject.
	req, err := InitSubordinate(ctx, f.st, RootConfig{KEK: kek}, f.clock, rand.Reader)
	if err != nil || req.State != SubordinateRenewal {
		t.Fatalf("renewal request: %+v %v", req, err)
	}
	csr, err := ParseCSR(req.CSRPEM)
	if err != nil || !bytes.Equal(csr.RawSubject, first.RawSubject) ||
		!publicKeysEqual(csr.PublicKey, first.PublicKey) {
		t.Fatalf("renewal request subject or key differ: %v", err)
	}
	f.clock.Add(365 * 24 * time.Hour)
	now := f.clock.Now()
	other := f.root.signSub(t, csr.PublicKey, nil, now, now.AddDate(10, 0, 0), func(c *x509.Certificate) {
		c.Subject = pkix.Name{Organization: []string{"example"}, CommonName: "renamed"}
	})
	_, _, err = a.ImportSubordinate(ctx, pemOf(other), pemOf(f.root.cert), "test")
	wantReason(t, err, ReasonImportPrefix+"subject")
	renewed := f.root.signSub(t, csr.PublicKey, csr.RawSubject, now, now.AddDate(10, 0, 0), nil)
	r, res, err := a.ImportSubordinate(ctx, pemOf(renewed), pemOf(f.root.cert), "test")
	if err != nil {
		t.Fatal(err)
	}
	if res.Current == nil || !res.Current.Equal(first) || len(res.Warnings) != 0 || !a.Root().Cert.Equal(renewed) {
		t.Fatalf("renewal: current %v warnings %q", res.Current, res.Warnings)
	}
	if bytes.Contains(r.BundlePEM, pemOf(first)) {
		t.Fatal("the replaced certificate is still in the bundle")
	}
	// What the old certificate signed verifies under the new one.
	leaf, _ := x509.ParseCertificate(rec.DER)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: r.Pool(), CurrentTime: now}); err != nil {
		t.Fatalf("a node certificate from before the renewal: %v", err)
	}
	evs, _, err := f.st.ListEvents(ctx, store.EventFilter{Type: store.EventCAImported})
	if err != nil || len(evs) != 2 || evs[1].OldSerial != SerialString(first.SerialNumber) ||
		evs[1].Detail["renewal"] != "true" {
		t.Fatalf("renewal event %+v %v", evs, err)
	}
	// Going back to a certificate that ends sooner is warned of.
	_, res, err = a.ImportSubordinate(ctx, pemOf(first), pemOf(f.root.cert), "test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(res.Warnings, "\n"), "before the one it replaces") {
		t.Fatalf("re-import of the earlier certificate: warnings %q", res.Warnings)
	}
}
