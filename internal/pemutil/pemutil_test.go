package pemutil

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

func selfSigned(t testing.TB, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: BlockType, Bytes: der})
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestParseCertificates(t *testing.T) {
	a, b := selfSigned(t, "a"), selfSigned(t, "b")
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	bad := pem.EncodeToMemory(&pem.Block{Type: BlockType, Bytes: []byte{0x30, 0x03, 1, 2, 3}})
	strict, lenient := Options{}, Options{SkipOtherTypes: true, AllowTrailing: true, AllowEmpty: true}
	for _, tc := range []struct {
		name string
		in   []byte
		opts Options
		cns  string // the CNs parsed, comma-separated
		err  string // a part of the error
	}{
		{"two", cat(a, b), strict, "a,b", ""},
		{"text around", cat([]byte("subject=CN=a\n"), a, []byte("\n# b\n"), b, []byte("\n\n")), strict, "a,b", ""},
		{"empty", nil, strict, "", "no certificate found"},
		{"blank", []byte(" \n\t"), strict, "", "no certificate found"},
		{"empty allowed", []byte("\n"), Options{AllowEmpty: true}, "", ""},
		{"junk", []byte("junk"), strict, "", "the input is not PEM"},
		{"junk lenient", []byte("junk"), lenient, "", ""},
		{"trailing", cat(a, []byte("junk")), strict, "", "what follows block 1 is not PEM"},
		{"truncated", cat(a, b[:len(b)/2]), strict, "", "what follows block 1 is not PEM"},
		{"trailing allowed", cat(a, b[:len(b)/2]), Options{AllowTrailing: true}, "a", ""},
		{"other type", cat(a, key), strict, "", "block 2 (PRIVATE KEY): not a CERTIFICATE"},
		{"other type skipped", cat(key, a), Options{SkipOtherTypes: true}, "a", ""},
		{"only other type", key, Options{SkipOtherTypes: true}, "", "no certificate found"},
		{"bad certificate", cat(a, bad), lenient, "", "block 2 (CERTIFICATE): x509: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certs, err := ParseCertificates(tc.in, tc.opts)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || certs != nil {
					t.Fatalf("got %d certificates, %v; want an error with %q", len(certs), err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var cns []string
			for _, c := range certs {
				cns = append(cns, c.Subject.CommonName)
			}
			if got := strings.Join(cns, ","); got != tc.cns {
				t.Fatalf("got %q, want %q", got, tc.cns)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	if _, err := ParseCertificates(nil, Options{}); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("empty: %v", err)
	}
	var pe *Error
	if _, err := ParseCertificates([]byte("junk"), Options{}); !errors.As(err, &pe) || !errors.Is(err, ErrNotPEM) ||
		pe.Block != 1 {
		t.Fatalf("junk: %v", err)
	}
	_, err := ParseCertificates(pem.EncodeToMemory(&pem.Block{Type: BlockType, Bytes: []byte{5}}), Options{})
	if !errors.As(err, &pe) || pe.Block != 1 || pe.Type != BlockType || !strings.Contains(err.Error(), "x509: ") {
		t.Fatalf("bad DER: %v", err)
	}
}

var optionSets = []Options{
	{},
	{SkipOtherTypes: true},
	{AllowTrailing: true},
	{AllowEmpty: true},
	{SkipOtherTypes: true, AllowTrailing: true, AllowEmpty: true},
}

// FuzzParseCertificates: arbitrary bytes never panic the parser under any
// options; what it accepts is complete (every certificate parsed, at least
// one unless empty is allowed), and relaxing an option never turns an
// accepted bundle into a refused one or changes its certificates.
func FuzzParseCertificates(f *testing.F) {
	a, b := selfSigned(f, "a"), selfSigned(f, "b")
	f.Add(cat(a, b))
	f.Add(cat(a, []byte("junk")))
	f.Add(cat(a, b[:len(b)/2]))
	f.Add(cat(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), a))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("junk"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		strict, strictErr := ParseCertificates(data, optionSets[0])
		for _, o := range optionSets {
			certs, err := ParseCertificates(data, o)
			if err != nil {
				var pe *Error
				if certs != nil || !errors.Is(err, ErrNoCertificate) && !errors.As(err, &pe) {
					t.Fatalf("%+v: %d certificates with error %v", o, len(certs), err)
				}
				if strictErr == nil {
					t.Fatalf("%+v: refused (%v) what the strictest options accept", o, err)
				}
				continue
			}
			if len(certs) == 0 && !o.AllowEmpty {
				t.Fatalf("%+v: no certificates without an error", o)
			}
			for _, c := range certs {
				if c == nil || len(c.Raw) == 0 {
					t.Fatalf("%+v: a certificate without DER", o)
				}
			}
			if strictErr == nil && (len(certs) != len(strict) || !certs[0].Equal(strict[0])) {
				t.Fatalf("%+v: %d certificates where the strictest options gave %d", o, len(certs), len(strict))
			}
		}
	})
}
