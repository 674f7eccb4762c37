package nssdb

import (
	"regexp"
	"strings"
	"testing"
)

// Seeds are real NSS 3.87 outputs (Debian 12 libnss3-tools) of a database
// holding the CA, two certificates under one node nickname, a peer whose
// nickname has spaces, and an orphan key.
const (
	seedList = "\n" +
		"Certificate Nickname                                         Trust Attributes\n" +
		"                                                             SSL,S/MIME,JAR/XPI\n" +
		"\n" +
		"ovs_cert_cacert                                              CT,, \n" +
		"ovs_certkey_node-a                                           u,u,u\n" +
		"my peer with spaces                                          P,,  \n" +
		"ovs_certkey_node-a                                           u,u,u\n"
	seedKeys = "certutil: Checking token \"NSS Certificate DB\" in slot " +
		"\"NSS User Private Key and Certificate Services\"\n" +
		"< 0> rsa      760a2ee8fd08b0d184c73625661d64424cec6015   ovs_certkey_node-a\n" +
		"< 1> rsa      216bc6c641a3dee9b32ff3312ea83547a56a4a79   ovs_certkey_node-b\n" +
		"< 2> ec       88e08d3f038312d9c22f45f625fd0e2028f680c2   ovs_certkey_node-a\n" +
		"< 3> ec       06c93226def2c4c26a859f2f265a1907f3b35860   (orphan)\n"
	// certutil -L -n ovs_certkey_node-a -a: two certificates, CRLF lines.
	seedCertsPEM = "-----BEGIN CERTIFICATE-----\n" +
		"MIIBxTCCAWugAwIBAgIUF2dCuMF7grnjAR4UqvVsNxCtDSkwCgYIKoZIzj0EAwIw\r\n" +
		"LDEQMA4GA1UECgwHaXBzZWNjYTEYMBYGA1UEAwwPaXBzZWNjYSByb290IENBMB4X\r\n" +
		"DTI2MTEzMDE1MDkxNFoXDTI3MDYxODE1MDkxNFowIzEQMA4GA1UECgwHaXBzZWNj\r\n" +
		"YTEPMA0GA1UEAwwGbm9kZS1hMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEe8Ws\r\n" +
		"wMjhbOwiA9qWP3hhDJvlCdPOEmbGn78a+ltQsCmFZZPKd3qtfnLkQyktUQQmeqbM\r\n" +
		"X0zyDxLQlXpb9RSqvaN0MHIwEQYDVR0RBAowCIIGbm9kZS1iMB0GA1UdJQQWMBQG\r\n" +
		"CCsGAQUFBwMBBggrBgEFBQcDAjAdBgNVHQ4EFgQUiOCNPwODEtnCL0X2Jf0OICj2\r\n" +
		"gMIwHwYDVR0jBBgwFoAUuym/MdYY1rmyMTFzEwF8XSfwL+gwCgYIKoZIzj0EAwID\r\n" +
		"SAAwRQIgeiTdL9UU1DkDnLHyct8CSqPcBb8XrvqGbvE4cxfF4BsCIQDucb15G2c9\r\n" +
		"/TAyvSomJ7Y9uKhif6im6D9Avrka6/TUpw==\n" +
		"-----END CERTIFICATE-----\n" +
		"-----BEGIN CERTIFICATE-----\n" +
		"MIICjzCCAjagAwIBAgIUF2dCuMF7grnjAR4UqvVsNxCtDSYwCgYIKoZIzj0EAwIw\r\n" +
		"LDEQMA4GA1UECgwHaXBzZWNjYTEYMBYGA1UEAwwPaXBzZWNjYSByb290IENBMB4X\r\n" +
		"DTI2MTEzMDE1MDkwNFoXDTI3MDMxMDE1MDkwNFowIzEQMA4GA1UECgwHaXBzZWNj\r\n" +
		"YTEPMA0GA1UEAwwGbm9kZS1hMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKC\r\n" +
		"AQEAvTep18nQqMukTj7LZzVPGcapeQ/qkzYzHLxNi06gM4CGUNedeVyfF7FfbSXL\r\n" +
		"e+FKhFufPGS81lS8Zipog5feNuB6mEYQNOHDD6pyUm9FySM3PbELcJxf4qW0OkAz\r\n" +
		"SiC3XTAUz2G89jDXl3ffcCG9wIsbiWz3McFAfBig2ACdf9jbT7KrSHSC/YsS9AFg\r\n" +
		"8LE2a0SBF8MK6lDExQiEN+CzjJ0KHzhvExjgvvUqpTcVD3G6xz1ckqNiPap8HAi/\r\n" +
		"aOYfwbQzuRX3TfGp4bIyBARt3jpMAbsWWqbvaX41ZWek7zn+6NPNp7nnDzxrlDLn\r\n" +
		"nmnx6l5NDgFepJMfAxhoxhBkowIDAQABo3QwcjARBgNVHREECjAIggZub2RlLWEw\r\n" +
		"HQYDVR0lBBYwFAYIKwYBBQUHAwEGCCsGAQUFBwMCMB0GA1UdDgQWBBS5mKHepPkD\r\n" +
		"mgfrDikqmVzrhZwJjzAfBgNVHSMEGDAWgBS7Kb8x1hjWubIxMXMTAXxdJ/Av6DAK\r\n" +
		"BggqhkjOPQQDAgNHADBEAiApRggYu9jxxi3HIHFpxGW2Lj4AvlqN/6EVSWZShVwz\r\n" +
		"NgIgZubyYD9ZMwP1S8nYrzBOdKP4sjds8Hhk4QHtNisndZc=\n" +
		"-----END CERTIFICATE-----\n"
)

// FuzzParseList: `certutil -L` output of any shape never panics and yields
// distinct, non-empty, trimmed nicknames with well-formed trusts, one per
// line listed, the last being Trust.
func FuzzParseList(f *testing.F) {
	f.Add([]byte(seedList))
	f.Add([]byte(""))
	f.Add([]byte("certutil: function failed: SEC_ERROR_BAD_DATABASE: security library: bad database.\n"))
	f.Add([]byte("nick ,,\n\t,,\nCertificate Nickname x,y,z\n a b c  CT,C,C\r\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		seen := map[string]bool{}
		for _, e := range parseList(out) {
			if e.Nickname == "" || e.Nickname != strings.TrimSpace(e.Nickname) || seen[e.Nickname] {
				t.Fatalf("nickname %q (seen %v)", e.Nickname, seen[e.Nickname])
			}
			seen[e.Nickname] = true
			if !trustRe.MatchString(e.Trust) {
				t.Fatalf("trust %q of %q", e.Trust, e.Nickname)
			}
			if len(e.Trusts) == 0 || e.Trusts[len(e.Trusts)-1] != e.Trust {
				t.Fatalf("trusts %q of %q do not end with its trust %q", e.Trusts, e.Nickname, e.Trust)
			}
			for _, tr := range e.Trusts {
				if !trustRe.MatchString(tr) {
					t.Fatalf("trust %q of %q", tr, e.Nickname)
				}
			}
		}
	})
}

var keyIDRe = regexp.MustCompile(`^[0-9a-f]+$`)

// FuzzParseKeys: `certutil -K` output never panics and yields keys with a
// type and a lower-case hex ID.
func FuzzParseKeys(f *testing.F) {
	f.Add([]byte(seedKeys))
	f.Add([]byte("certutil: Checking token \"NSS Certificate DB\" in slot " +
		"\"NSS User Private Key and Certificate Services\"\ncertutil: no keys found\n"))
	f.Add([]byte("<0> ec ABCDEF NSS Certificate DB:ovs_certkey_x\n< 12>\trsa\t00\t\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		for _, k := range parseKeys(out) {
			if k.Type == "" || strings.ContainsAny(k.Type, " \t") || !keyIDRe.MatchString(k.ID) || k.Nickname == "(orphan)" {
				t.Fatalf("key %+v", k)
			}
		}
	})
}

// FuzzParseCerts: `certutil -L -n NICK -a` output never panics; on success
// every certificate is parsed and holds its DER.
func FuzzParseCerts(f *testing.F) {
	f.Add([]byte(seedCertsPEM))
	f.Add([]byte(seedCertsPEM[:len(seedCertsPEM)/2]))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("certutil: Could not find cert: nope\n: PR_FILE_NOT_FOUND_ERROR: File not found\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		certs, err := parseCerts(out)
		if err != nil {
			return
		}
		for _, c := range certs {
			if c == nil || len(c.Raw) == 0 {
				t.Fatal("a certificate without DER")
			}
		}
	})
}
