package ca

import (
	"crypto/elliptic"
	"errors"
	"strings"
	"testing"
)

// FuzzCSRPolicy feeds arbitrary bytes through CSR parsing and the whole
// node policy: it must never panic, and every refusal must be a DenyError
// with a reason.
func FuzzCSRPolicy(f *testing.F) {
	f.Add(makeCSR(f, csrOpts{cn: "node-a", dns: []string{"node-a"}}))
	f.Add(makeCSR(f, csrOpts{cn: "ovs_x", key: mustECDSA(f, elliptic.P384())}))
	f.Add(makeCSR(f, csrOpts{cn: "node-a", tamper: true}))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMII=\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := ParseCSR(data)
		if err != nil {
			var de *DenyError
			if !errors.As(err, &de) || de.Reason == "" {
				t.Fatalf("parse error without a reason: %v", err)
			}
			return
		}
		err = Evaluate(NodePolicy, &Request{CSR: csr, Identity: Identity{Node: "node-a", CN: "node-a"}})
		if err == nil {
			if csr.Subject.CommonName != "node-a" || HasOVSPrefix(csr.Subject.CommonName) {
				t.Fatalf("approved CN %q", csr.Subject.CommonName)
			}
			return
		}
		var de *DenyError
		if !errors.As(err, &de) || de.Reason == "" {
			t.Fatalf("denial without a reason: %v", err)
		}
	})
}

// FuzzParseToken: arbitrary strings never panic, and an error never
// echoes the input (a token must not end up in a log).
func FuzzParseToken(f *testing.F) {
	f.Add("0123456789abcdef.0123456789abcdef0123456789abcdef0123456789abcdef")
	f.Add("")
	f.Add(".")
	f.Add("secret-looking-value.with-a-dot")
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := ParseToken(s)
		if err != nil {
			if len(s) > 3 && strings.Contains(err.Error(), s) {
				t.Fatalf("error echoes the token: %v", err)
			}
			return
		}
		if len(id) != tokenIDLen || len(secret) != tokenSecretLen {
			t.Fatalf("accepted %q as %q.%q", s, id, secret)
		}
	})
}
