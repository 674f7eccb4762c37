package bundle

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// bomb is 2^31-1 iterations: 8 to 13 minutes of one core in go-pkcs12, in a 4-byte field.
const bomb = math.MaxInt32

// Test-side PKCS#12 structures, re-marshalled after surgery. RawValues keep what is not edited verbatim.
type tPFX struct {
	Version  int
	AuthSafe tContentInfo
	MacData  asn1.RawValue `asn1:"optional"`
}

type tContentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"tag:0,explicit,optional"`
}

type tMacData struct {
	Mac struct {
		Algorithm pkix.AlgorithmIdentifier
		Digest    []byte
	}
	MacSalt    []byte
	Iterations *big.Int `asn1:"optional"`
}

type tEncryptedData struct {
	Version int
	Info    struct {
		ContentType asn1.ObjectIdentifier
		Algorithm   pkix.AlgorithmIdentifier
		Content     asn1.RawValue `asn1:"optional"`
	}
}

type tSafeBag struct {
	ID         asn1.ObjectIdentifier
	Value      asn1.RawValue `asn1:"tag:0,explicit"`
	Attributes asn1.RawValue `asn1:"optional"`
}

type tEPKI struct {
	Algorithm pkix.AlgorithmIdentifier
	Data      []byte
}

type tPBE struct {
	Salt       []byte
	Iterations *big.Int
}

type tPBES2 struct{ KDF, Scheme pkix.AlgorithmIdentifier }

type tPBKDF2 struct {
	Salt       asn1.RawValue
	Iterations *big.Int
	KeyLength  int                      `asn1:"optional"`
	PRF        pkix.AlgorithmIdentifier `asn1:"optional"`
}

var oidHMACSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}

func mustUnmarshal(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := unmarshalAll(b, v); err != nil {
		t.Fatalf("fixture: %T: %v", v, err)
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatalf("fixture: %T: %v", v, err)
	}
	return b
}

func raw(b []byte) asn1.RawValue { return asn1.RawValue{FullBytes: b} }

func explicit0(inner []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: inner}
}

// p12Edit is surgery on a PKCS#12.
type p12Edit struct {
	mac    func(md *tMacData)                              // edits MacData (which then no longer verifies)
	alg    func(where string, a *pkix.AlgorithmIdentifier) // each encrypted safe ("safe") and shrouded key ("key")
	keys   int                                             // copies of each shrouded key bag (0 is 1)
	reseal bool                                            // a fresh, valid PBMAC1 MAC (1 iteration) for password
}

// editP12 applies e to der. Resealed, the file verifies, so the decoder goes on to the KDFs behind the MAC.
func editP12(t testing.TB, der []byte, password string, e p12Edit) []byte {
	t.Helper()
	var pfx tPFX
	mustUnmarshal(t, der, &pfx)
	var octets []byte
	mustUnmarshal(t, pfx.AuthSafe.Content.Bytes, &octets)
	var safes []tContentInfo
	mustUnmarshal(t, octets, &safes)
	for i := range safes {
		ci := &safes[i]
		switch {
		case ci.ContentType.Equal(oidP12EncryptedData):
			var ed tEncryptedData
			mustUnmarshal(t, ci.Content.Bytes, &ed)
			if e.alg != nil {
				e.alg("safe", &ed.Info.Algorithm)
			}
			ci.Content = explicit0(mustMarshal(t, ed))
		case ci.ContentType.Equal(oidP12Data):
			var contents []byte
			mustUnmarshal(t, ci.Content.Bytes, &contents)
			var bags, out []tSafeBag
			mustUnmarshal(t, contents, &bags)
			for _, b := range bags {
				if !b.ID.Equal(oidP12ShroudedKey) {
					out = append(out, b)
					continue
				}
				var k tEPKI
				mustUnmarshal(t, b.Value.Bytes, &k)
				if e.alg != nil {
					e.alg("key", &k.Algorithm)
				}
				b.Value = explicit0(mustMarshal(t, k))
				for range max(e.keys, 1) {
					out = append(out, b)
				}
			}
			ci.Content = explicit0(mustMarshal(t, mustMarshal(t, out)))
		}
	}
	octets = mustMarshal(t, safes)
	pfx.AuthSafe.Content = explicit0(mustMarshal(t, octets))
	if e.mac != nil {
		var md tMacData
		mustUnmarshal(t, pfx.MacData.FullBytes, &md)
		e.mac(&md)
		pfx.MacData = raw(mustMarshal(t, md))
	}
	if e.reseal {
		pfx.MacData = raw(pbmac1(t, octets, password))
	}
	return mustMarshal(t, pfx)
}

// pbmac1 is a MacData with PBMAC1 (RFC 9579): PBKDF2-HMAC-SHA-256, 1 iteration, then HMAC-SHA-256.
func pbmac1(t testing.TB, msg []byte, password string) []byte {
	salt := []byte("ipsecca-test-salt")
	key, err := pbkdf2.Key(sha256.New, password, salt, 1, 32)
	if err != nil {
		t.Fatal(err)
	}
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	kdf := tPBKDF2{Salt: raw(mustMarshal(t, salt)), Iterations: big.NewInt(1), KeyLength: 32,
		PRF: pkix.AlgorithmIdentifier{Algorithm: oidHMACSHA256}}
	var md tMacData
	md.Mac.Algorithm = pkix.AlgorithmIdentifier{Algorithm: oidPBMAC1, Parameters: raw(mustMarshal(t, tPBES2{
		KDF:    pkix.AlgorithmIdentifier{Algorithm: oidPBKDF2, Parameters: raw(mustMarshal(t, kdf))},
		Scheme: pkix.AlgorithmIdentifier{Algorithm: oidHMACSHA256}}))}
	md.Mac.Digest, md.MacSalt = h.Sum(nil), salt
	return mustMarshal(t, md)
}

// setIter sets the iteration count of PKCS#12 PBE, PBES2 or PBMAC1 parameters.
func setIter(t testing.TB, a *pkix.AlgorithmIdentifier, n *big.Int) {
	if a.Algorithm.Equal(oidPBES2) || a.Algorithm.Equal(oidPBMAC1) {
		var p tPBES2
		mustUnmarshal(t, a.Parameters.FullBytes, &p)
		var k tPBKDF2
		mustUnmarshal(t, p.KDF.Parameters.FullBytes, &k)
		k.Iterations = n
		p.KDF.Parameters = raw(mustMarshal(t, k))
		a.Parameters = raw(mustMarshal(t, p))
		return
	}
	var p tPBE
	mustUnmarshal(t, a.Parameters.FullBytes, &p)
	p.Iterations = n
	a.Parameters = raw(mustMarshal(t, p))
}

func macIter(t testing.TB, n int64) func(*tMacData) {
	return func(md *tMacData) {
		if md.Mac.Algorithm.Algorithm.Equal(oidPBMAC1) {
			setIter(t, &md.Mac.Algorithm, big.NewInt(n))
		} else {
			md.Iterations = big.NewInt(n)
		}
	}
}

func algIter(t testing.TB, which string, n *big.Int) func(string, *pkix.AlgorithmIdentifier) {
	return func(where string, a *pkix.AlgorithmIdentifier) {
		if where == which {
			setIter(t, a, n)
		}
	}
}

// within runs f and fails the test when it has not returned after d: a KDF bomb would run for minutes.
func within[T any](t *testing.T, d time.Duration, f func() T) T {
	t.Helper()
	ch := make(chan T, 1)
	go func() { ch <- f() }()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("still running after %v", d)
		panic("unreachable")
	}
}

// TestP12KDFs: the reader finds every KDF of real files, as their writers set them, and they decode.
func TestP12KDFs(t *testing.T) {
	ca := newCA(t, "ca")
	leaf, key := ca.leaf(t, leafOpts{cn: "n", dns: []string{"n"}})
	enc := func(e *pkcs12.Encoder) func() []byte {
		return func() []byte {
			p, err := e.Encode(key, leaf, nil, "pw")
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
	}
	osl := func(mode string) func() []byte {
		return func() []byte { return opensslP12(t, leaf, key, "left_server", "pw", mode) }
	}
	kdfs := func(n int64, mac, safe, key string) []P12KDF {
		out := []P12KDF{{"MAC", mac, n}, {"encrypted safe 1", safe, n}, {"shrouded key 1 (safe 2)", key, n}}
		if mac == "" {
			return out[1:]
		}
		return out
	}
	const (
		pbes2   = "PBES2/PBKDF2-HMAC-SHA-256"
		tdes    = "pbeWithSHAAnd3-KeyTripleDES-CBC"
		rc2     = "pbewithSHAAnd40BitRC2-CBC"
		mac1    = "PKCS#12 KDF, HMAC-SHA-1"
		mac256  = "PKCS#12 KDF, HMAC-SHA-256"
		pbmac1_ = "PBMAC1/PBKDF2-HMAC-SHA-256"
	)
	withMAC := func(mac string, n int64, rest []P12KDF) []P12KDF { return append([]P12KDF{{"MAC", mac, n}}, rest...) }
	cases := []struct {
		name string
		p12  func() []byte
		want []P12KDF
	}{
		{"openssl default", osl(""), kdfs(2048, mac256, pbes2, pbes2)},
		{"openssl -legacy", osl("legacy"), kdfs(2048, mac1, rc2, tdes)},
		{"openssl 3DES", osl("3des"), kdfs(2048, mac1, tdes, tdes)},
		{"openssl -iter 3000", osl("-iter 3000"), kdfs(3000, mac256, pbes2, pbes2)},
		{"go-pkcs12 Modern2023", enc(pkcs12.Modern2023), kdfs(2048, mac256, pbes2, pbes2)},
		{"go-pkcs12 Modern2026 (PBMAC1)", enc(pkcs12.Modern2026), kdfs(2048, pbmac1_, pbes2, pbes2)},
		{"go-pkcs12 Modern 4096", enc(pkcs12.Modern.WithIterations(4096)), kdfs(4096, mac256, pbes2, pbes2)},
		{"go-pkcs12 LegacyRC2", enc(pkcs12.LegacyRC2), withMAC(mac1, 1, kdfs(2048, "", rc2, tdes))},
		{"go-pkcs12 LegacyDES", enc(pkcs12.LegacyDES), withMAC(mac1, 1, kdfs(2048, "", tdes, tdes))},
		{"go-pkcs12 Passwordless", func() []byte {
			p, err := pkcs12.Passwordless.Encode(key, leaf, nil, "")
			if err != nil {
				t.Fatal(err)
			}
			return p
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p12()
			got, err := P12KDFs(p)
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("P12KDFs:\n got %+v %v\nwant %+v", got, err, tc.want)
			}
			pw := "pw"
			if tc.want == nil {
				pw = ""
			}
			if _, err := DecodeP12(p, pw); err != nil {
				t.Fatalf("DecodeP12: %v", err)
			}
		})
	}
}

// TestP12KDFBombs: a PKCS#12 asking for absurd KDF work is refused with p12-kdf-iterations, naming the
// count and the cap, before any KDF runs. The previous code ran each for minutes (the watchdog fails it).
func TestP12KDFBombs(t *testing.T) {
	ca := newCA(t, "external ipsec ca")
	leaf, key := ca.leaf(t, leafOpts{cn: "n", dns: []string{"node1.example.com"}})
	enc := func(e *pkcs12.Encoder) []byte {
		p, err := e.Encode(key, leaf, nil, "pw")
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	osl := opensslP12(t, leaf, key, "left_server", "pw", "")
	mac := func(p []byte, n int64) []byte { return editP12(t, p, "pw", p12Edit{mac: macIter(t, n)}) }
	alg := func(p []byte, which string, n int64, keys int) []byte {
		return editP12(t, p, "pw", p12Edit{alg: algIter(t, which, big.NewInt(n)), keys: keys, reseal: true})
	}
	says := func(where string, n int64, alg string) []string {
		return []string{fmt.Sprintf("%s asks for %d KDF iterations (%s)", where, n, alg),
			fmt.Sprintf("the cap is %d", MaxP12KDFIterations)}
	}
	const (
		pbes2 = "PBES2/PBKDF2-HMAC-SHA-256"
		key2  = "shrouded key 1 (safe 2)"
		sha1  = "PKCS#12 KDF, HMAC-SHA-1"
		sha2  = "PKCS#12 KDF, HMAC-SHA-256"
	)
	huge := func(md *tMacData) { md.Iterations = new(big.Int).Lsh(big.NewInt(1), 80) }
	cases := []struct {
		name string
		p12  []byte
		want []string // in the finding's message
	}{
		{"MAC, PKCS#12 KDF SHA-256 (Modern2023)", mac(enc(pkcs12.Modern2023), bomb), says("MAC", bomb, sha2)},
		{"MAC, PKCS#12 KDF SHA-1 (LegacyRC2)", mac(enc(pkcs12.LegacyRC2), bomb), says("MAC", bomb, sha1)},
		{"MAC, PBMAC1 (Modern2026)", mac(enc(pkcs12.Modern2026), bomb), says("MAC", bomb, "PBMAC1/PBKDF2-HMAC-SHA-256")},
		{"MAC, OpenSSL's", mac(osl, bomb), says("MAC", bomb, sha2)},
		{"MAC, one over the cap", mac(osl, MaxP12KDFIterations+1), says("MAC", MaxP12KDFIterations+1, sha2)},
		{"MAC, beyond 64 bits", editP12(t, osl, "pw", p12Edit{mac: huge}),
			[]string{"MAC asks for 9223372036854775807 or more KDF iterations", "the cap is 1000000"}},
		{"encrypted safe, PBES2 (Modern2023)", alg(enc(pkcs12.Modern2023), "safe", bomb, 1),
			says("encrypted safe 1", bomb, pbes2)},
		{"encrypted safe, RC2-40 (LegacyRC2)", alg(enc(pkcs12.LegacyRC2), "safe", bomb, 1),
			says("encrypted safe 1", bomb, "pbewithSHAAnd40BitRC2-CBC")},
		{"shrouded key, PBES2 (OpenSSL)", alg(osl, "key", bomb, 1), says(key2, bomb, pbes2)},
		{"shrouded key, 3DES (LegacyDES)", alg(enc(pkcs12.LegacyDES), "key", bomb, 1),
			says(key2, bomb, "pbeWithSHAAnd3-KeyTripleDES-CBC")},
		{"five keys at the cap: the total", alg(enc(pkcs12.Modern2023), "key", MaxP12KDFIterations, 5),
			[]string{"asks for 5002049 KDF iterations over its 7 KDFs", "the cap is 4000000 in all"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := Input{P12: tc.p12, Password: "pw", CAPEM: pemOf(ca.cert), Left: "node1.example.com", Right: "ext.example.com"}
			start := time.Now()
			rep := within(t, time.Second, func() *Report { return Validate(in, Options{Now: now}) })
			elapsed := time.Since(start)
			var msgs []string
			for _, f := range rep.Findings {
				if f.Code == CodeP12KDFIterations {
					if f.Severity != SeverityError {
						t.Fatalf("severity %s", f.Severity)
					}
					msgs = append(msgs, f.Message)
				}
			}
			if len(msgs) != 1 || rep.OK {
				t.Fatalf("want one %s finding and OK=false (%v), got %+v", CodeP12KDFIterations, elapsed, rep.Findings)
			}
			for _, w := range tc.want {
				if !strings.Contains(msgs[0], w) {
					t.Fatalf("message %q does not say %q", msgs[0], w)
				}
			}
			var ke *KDFIterationsError
			if _, err := DecodeP12(tc.p12, "pw"); !errors.As(err, &ke) {
				t.Fatalf("DecodeP12: %v, want a *KDFIterationsError", err)
			}
			t.Logf("refused in %v: %s", elapsed, msgs[0])
		})
	}
}

// TestP12KDFsAtTheCap: each KDF at MaxP12KDFIterations passes while their sum is within
// MaxP12KDFIterationsTotal (a MAC, a safe and two keys); one more key is refused.
func TestP12KDFsAtTheCap(t *testing.T) {
	ca := newCA(t, "ca")
	leaf, key := ca.leaf(t, leafOpts{cn: "n", dns: []string{"n"}})
	good, err := pkcs12.Modern2023.Encode(key, leaf, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	atCap := func(_ string, a *pkix.AlgorithmIdentifier) { setIter(t, a, big.NewInt(MaxP12KDFIterations)) }
	for keys, wantErr := range map[int]bool{1: false, 2: false, 3: true} {
		p := editP12(t, good, "pw", p12Edit{alg: atCap, keys: keys})
		p = editP12(t, p, "pw", p12Edit{mac: macIter(t, MaxP12KDFIterations)})
		err := checkP12KDFs(p)
		var ke *KDFIterationsError
		if wantErr != errors.As(err, &ke) ||
			(err != nil && (len(ke.Over) != 0 || ke.Total != int64(keys+2)*MaxP12KDFIterations)) {
			t.Fatalf("MAC, safe and %d keys at the cap: %v", keys, err)
		}
	}
}

// TestP12KDFsUnreadable: what the reader cannot read is refused as p12-undecodable without decoding, and
// go-pkcs12 refuses it too (the reader is no stricter than the library).
func TestP12KDFsUnreadable(t *testing.T) {
	ca := newCA(t, "ca")
	leaf, key := ca.leaf(t, leafOpts{cn: "n", dns: []string{"n"}})
	good, err := pkcs12.Modern2023.Encode(key, leaf, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	setAlg := func(which string, oid asn1.ObjectIdentifier) func(string, *pkix.AlgorithmIdentifier) {
		return func(where string, a *pkix.AlgorithmIdentifier) {
			if where == which {
				a.Algorithm = oid
			}
		}
	}
	scrypt := func(where string, a *pkix.AlgorithmIdentifier) {
		if where == "key" {
			var p tPBES2
			mustUnmarshal(t, a.Parameters.FullBytes, &p)
			p.KDF.Algorithm = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}
			a.Parameters = raw(mustMarshal(t, p))
		}
	}
	nullParams := func(where string, a *pkix.AlgorithmIdentifier) {
		if where == "key" {
			a.Parameters = raw([]byte{0x05, 0x00})
		}
	}
	md5, pbes1 := asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 3}
	cases := []struct {
		name string
		p12  []byte
		want string
	}{
		{"not DER", []byte("not a p12"), "not a PKCS#12"},
		{"trailing byte", append(append([]byte{}, good...), 0), "trailing data"},
		{"truncated", good[:len(good)-1], "not a PKCS#12"},
		{"unknown MAC", editP12(t, good, "pw", p12Edit{mac: func(md *tMacData) { md.Mac.Algorithm.Algorithm = md5 }}),
			"MAC algorithm 1.2.840.113549.2.5 is not supported"},
		{"PBES1 safe", editP12(t, good, "pw", p12Edit{alg: setAlg("safe", pbes1), reseal: true}),
			"encrypted safe 1: encryption algorithm 1.2.840.113549.1.5.3 is not supported"},
		{"PBES2 with scrypt", editP12(t, good, "pw", p12Edit{alg: scrypt, reseal: true}),
			"PBES2 with KDF 1.3.6.1.4.1.11591.4.11 is not supported"},
		{"signed-data safe", func() []byte {
			var pfx tPFX
			mustUnmarshal(t, good, &pfx)
			pfx.AuthSafe.ContentType = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
			return mustMarshal(t, pfx)
		}(), "only password integrity"},
		{"key's PBES2 parameters not a SEQUENCE", editP12(t, good, "pw", p12Edit{alg: nullParams, reseal: true}),
			"PBES2 parameters"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := P12KDFs(tc.p12); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("P12KDFs: %v, want %q", err, tc.want)
			}
			if _, _, _, err := pkcs12.DecodeChain(tc.p12, "pw"); err == nil {
				t.Fatal("go-pkcs12 decodes what the reader refuses")
			}
			rep := Validate(Input{P12: tc.p12, Password: "pw", Left: "n", Right: "r"}, Options{Now: now})
			if !rep.Has(CodeP12Undecodable) || rep.Has(CodeP12KDFIterations) {
				t.Fatalf("findings %+v", rep.Findings)
			}
		})
	}
	// Every prefix is refused, none panics.
	for n := range len(good) {
		if _, err := P12KDFs(good[:n]); err == nil {
			t.Fatalf("prefix of %d bytes accepted", n)
		}
	}
}

// TestP12KDFsLinear: a megabyte of key bags is read in time linear in its size, well under a second.
func TestP12KDFsLinear(t *testing.T) {
	ca := newCA(t, "ca")
	leaf, key := ca.leaf(t, leafOpts{cn: "n", dns: []string{"n"}})
	good, err := pkcs12.Modern2023.Encode(key, leaf, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	var took [2]time.Duration
	for i, n := range []int{1000, 4000} {
		p := editP12(t, good, "pw", p12Edit{keys: n, reseal: true})
		start := time.Now()
		kdfs, err := P12KDFs(p)
		took[i] = time.Since(start)
		if err != nil || len(kdfs) != n+2 {
			t.Fatalf("%d keys: %d KDFs, %v", n, len(kdfs), err)
		}
		// Each key at 2048, a safe at 2048 and the resealed MAC at 1: 4000 keys are over the total.
		var ke *KDFIterationsError
		if err := checkP12KDFs(p); errors.As(err, &ke) != (n == 4000) || (ke != nil && ke.Total != int64(n+1)*2048+1) {
			t.Fatalf("%d keys at 2048: %v", n, err)
		}
		t.Logf("%d keys, %d bytes: read in %v", n, len(p), took[i])
	}
	if took[1] > time.Second {
		t.Fatalf("%v for 4000 keys", took[1])
	}
}

// TestValidateContext: Validate stops waiting for the decoder when its context ends.
func TestValidateContext(t *testing.T) {
	ca := newCA(t, "ca")
	leaf, key := ca.leaf(t, leafOpts{cn: "n", dns: []string{"node1.example.com"}})
	p, err := pkcs12.LegacyRC2.Encode(key, leaf, nil, "pw")
	if err != nil {
		t.Fatal(err)
	}
	in := Input{P12: p, Password: "pw", CAPEM: pemOf(ca.cert), Left: "node1.example.com", Right: "ext.example.com"}
	if rep, err := ValidateContext(context.Background(), in, Options{Now: now}); err != nil ||
		rep.Has(CodeP12Undecodable) {
		t.Fatalf("background: %v %+v", err, rep)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if rep, err := ValidateContext(ctx, in, Options{Now: now}); rep != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v %+v", err, rep)
	}
	// A MAC at the cap is allowed and takes a while: the deadline passes in the middle of it.
	in.P12 = editP12(t, p, "pw", p12Edit{mac: macIter(t, MaxP12KDFIterations)})
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	type result struct {
		rep *Report
		err error
	}
	start := time.Now()
	r := within(t, 2*time.Second, func() result {
		rep, err := ValidateContext(ctx, in, Options{Now: now})
		return result{rep, err}
	})
	elapsed := time.Since(start)
	if r.rep != nil || !errors.Is(r.err, context.DeadlineExceeded) || elapsed > 500*time.Millisecond {
		t.Fatalf("deadline: %v after %v, report %+v", r.err, elapsed, r.rep)
	}
	t.Logf("returned %v after %v", r.err, elapsed)
}
