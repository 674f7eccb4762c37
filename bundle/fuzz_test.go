package bundle

import (
	"errors"
	"math/big"
	"testing"

	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// FuzzDecodeP12: arbitrary bytes never panic the PKCS#12 decoder.
func FuzzDecodeP12(f *testing.F) {
	ca := newCA(f, "ca")
	c, k := ca.leaf(f, leafOpts{cn: "n", dns: []string{"n"}})
	f.Add(opensslP12(f, c, k, "left_server", "", ""), "")
	f.Add(opensslP12(f, c, k, "left_server", "pw", "legacy"), "pw")
	f.Add([]byte{0x30, 0x80, 0x02, 0x01, 0x03}, "")
	// A bomb: mutations of its iteration count must not stall the fuzzer.
	f.Add(editP12(f, opensslP12(f, c, k, "left_server", "", ""), "", p12Edit{mac: macIter(f, bomb)}), "")
	f.Fuzz(func(t *testing.T, data []byte, password string) {
		p, err := DecodeP12(data, password)
		if err == nil && p == nil {
			t.Fatal("nil bundle without an error")
		}
		Validate(Input{P12: data, Password: password, CAPEM: pemOf(ca.cert), Left: "n", Right: "r"}, Options{Now: now})
	})
}

// FuzzP12KDFs: arbitrary bytes never panic the PKCS#12 structure reader, which runs no KDF; what it
// finds is complete and the caps are applied to exactly that.
func FuzzP12KDFs(f *testing.F) {
	ca := newCA(f, "ca")
	c, k := ca.leaf(f, leafOpts{cn: "n", dns: []string{"n"}})
	osl := opensslP12(f, c, k, "left_server", "", "")
	f.Add(osl)
	f.Add(opensslP12(f, c, k, "left_server", "pw", "legacy"))
	for _, e := range []*pkcs12.Encoder{pkcs12.Modern2026, pkcs12.LegacyRC2, pkcs12.Passwordless} {
		p, err := e.Encode(k, c, nil, "")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Add(editP12(f, osl, "", p12Edit{alg: algIter(f, "key", big.NewInt(bomb)), reseal: true}))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x03})
	f.Fuzz(func(t *testing.T, data []byte) {
		kdfs, err := P12KDFs(data)
		cerr := checkP12KDFs(data)
		if err != nil {
			if cerr == nil || cerr.Error() != err.Error() {
				t.Fatalf("reader: %v; check: %v", err, cerr)
			}
			return
		}
		var total int64
		over := 0
		for _, kd := range kdfs {
			if kd.Where == "" || kd.Algorithm == "" {
				t.Fatalf("incomplete %+v", kd)
			}
			if kd.Iterations > MaxP12KDFIterations {
				over++
			}
			if kd.Iterations > 0 {
				total = satAdd(total, kd.Iterations)
			}
		}
		var ke *KDFIterationsError
		refused := errors.As(cerr, &ke)
		if refused != (over > 0 || total > MaxP12KDFIterationsTotal) ||
			(refused && (len(ke.Over) != over || ke.Total != total)) {
			t.Fatalf("kdfs %+v: check %v", kdfs, cerr)
		}
	})
}

// FuzzParsePEMCerts: arbitrary bytes never panic the PEM reader.
func FuzzParsePEMCerts(f *testing.F) {
	ca := newCA(f, "ca")
	f.Add(pemOf(ca.cert))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("junk"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParsePEMCerts(data)
		if err == nil && len(certs) == 0 {
			t.Fatal("no certificates without an error")
		}
	})
}

// FuzzParsePolicy: arbitrary YAML never panics the NNCP reader.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte("apiVersion: nmstate.io/v1\nkind: NodeNetworkConfigurationPolicy\nspec:\n  desiredState:\n" +
		"    interfaces:\n    - name: c\n      type: ipsec\n" +
		"      libreswan: {left: a, right: b, leftcert: left_server, type: transport}\n"))
	f.Add([]byte("kind: NodeNetworkConfigurationPolicy\nspec: {desiredState: {interfaces: [{type: ipsec}]}}"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var in Input
		if err := ParsePolicy(data, &in); err == nil && in.Left == "" && in.Right == "" && in.Type == "" &&
			in.LeftCert == "" && in.RightSubnet == "" {
			// a policy with an empty libreswan section: allowed, Validate reports it
			Validate(in, Options{Now: now})
		}
	})
}
