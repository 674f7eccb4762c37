package bundle

import (
	"testing"
)

// FuzzDecodeP12: arbitrary bytes never panic the PKCS#12 decoder.
func FuzzDecodeP12(f *testing.F) {
	ca := newCA(f, "ca")
	c, k := ca.leaf(f, leafOpts{cn: "n", dns: []string{"n"}})
	f.Add(opensslP12(f, c, k, "left_server", "", ""), "")
	f.Add(opensslP12(f, c, k, "left_server", "pw", "legacy"), "pw")
	f.Add([]byte{0x30, 0x80, 0x02, 0x01, 0x03}, "")
	f.Fuzz(func(t *testing.T, data []byte, password string) {
		p, err := DecodeP12(data, password)
		if err == nil && p == nil {
			t.Fatal("nil bundle without an error")
		}
		Validate(Input{P12: data, Password: password, CAPEM: pemOf(ca.cert), Left: "n", Right: "r"}, Options{Now: now})
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
	f.Add([]byte("apiVersion: nmstate.io/v1\nkind: NodeNetworkConfigurationPolicy\nspec:\n  desiredState:\n    interfaces:\n    - name: c\n      type: ipsec\n      libreswan: {left: a, right: b, leftcert: left_server, type: transport}\n"))
	f.Add([]byte("kind: NodeNetworkConfigurationPolicy\nspec: {desiredState: {interfaces: [{type: ipsec}]}}"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var in Input
		if err := ParsePolicy(data, &in); err == nil && in.Left == "" && in.Right == "" && in.Type == "" && in.LeftCert == "" && in.RightSubnet == "" {
			// a policy with an empty libreswan section: allowed, Validate reports it
			Validate(in, Options{Now: now})
		}
	})
}
