package sidecar

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestNextCRLStep: a CRL re-signed with the same revocations is imported
// again (NSS must not keep one past its NextUpdate) without a reload; a
// changed set is imported and reloads; nothing is done twice.
func TestNextCRLStep(t *testing.T) {
	v1, v2 := []byte("crl signed monday"), []byte("crl signed thursday")
	first := nextCRLStep("", []string{"a1"}, v1)
	for _, tc := range []struct {
		name             string
		prev             string
		serials          []string
		der              []byte
		importIt, change bool
	}{
		{"first CRL with a revocation", "", []string{"a1"}, v1, true, true},
		{"the same CRL again", first.state, []string{"a1"}, v1, false, false},
		{"re-signed, same revocations", first.state, []string{"a1"}, v2, true, false},
		{"a new revocation", first.state, []string{"a1", "b2"}, v2, true, true},
		{"state of an older sidecar (serials only)", "a1", []string{"a1"}, v1, true, false},
		{"nothing revoked, nothing imported before", "", nil, v1, false, false},
		{"the last revocation expired", first.state, nil, v2, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := nextCRLStep(tc.prev, tc.serials, tc.der)
			if got.importIt != tc.importIt || got.changed != tc.change {
				t.Fatalf("import %v, changed %v; want %v, %v", got.importIt, got.changed, tc.importIt, tc.change)
			}
			if !strings.HasPrefix(got.state, strings.Join(tc.serials, ",")+"\n") {
				t.Fatalf("state %q does not start with the serials", got.state)
			}
		})
	}
}

// TestKubeImportCRL: the ConfigMap's CRL is imported into NSS when a CA of
// the bundle signed it: the subordinate CA (the CA's own certificate in
// subordinate mode, an intermediate in NSS) as well as a root, and during
// a key rollover the older key (crlutil alone would check it with the newer
// certificate of the subject, and refuse it); not when a CA outside the
// bundle did.
func TestKubeImportCRL(t *testing.T) {
	root := newTestRoot(t, name("example", "example root"), time.Now().Add(-time.Hour))
	sub := root.subordinate(t, name("ipsecca", "ipsecca CA"))
	stranger := newTestRoot(t, name("other", "other root"), time.Now().Add(-time.Hour))
	rekeyed := newTestRoot(t, name("example", "example root"), time.Now().Add(-time.Minute))
	for _, tc := range []struct {
		name   string
		bundle []*testCA
		signer *testCA
		listed string // the nickname crlutil -L lists the CRL under; "" for refused
	}{
		{"signed by the subordinate CA", []*testCA{sub, root}, sub,
			IntermediateNickname(CANickname, sub.cert.RawSubject)},
		{"signed by the root", []*testCA{sub, root}, root, CANickname},
		{"a key rollover, signed by the older key", []*testCA{rekeyed, root}, root, CANickname},
		{"a key rollover, signed by the newer key", []*testCA{rekeyed, root}, rekeyed, CANickname},
		{"signed by a CA outside the bundle", []*testCA{sub, root}, stranger, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			a := newTestAgent(t, true)
			bundle := pemOf(tc.bundle...)
			if _, err := a.syncTrust(ctx, bundle); err != nil {
				t.Fatal(err)
			}
			der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
				ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(24 * time.Hour),
				RevokedCertificateEntries: []x509.RevocationListEntry{
					{SerialNumber: big.NewInt(42), RevocationTime: time.Now().Add(-time.Minute)}},
			}, tc.signer.cert, tc.signer.key)
			if err != nil {
				t.Fatal(err)
			}
			crl := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
			imported, err := a.kubeImportCRL(ctx, crl, bundle)
			out, lerr := exec.Command("crlutil", "-L", "-d", "sql:"+a.cfg.NSSDir).CombinedOutput()
			if lerr != nil && tc.listed != "" {
				t.Fatalf("crlutil -L: %v %s", lerr, out)
			}
			held := regexp.MustCompile(`(?m)^\S.*\sCRL\s*$`).FindString(string(out))
			if tc.listed == "" {
				if err == nil || imported || held != "" {
					t.Fatalf("imported=%v err=%v, crlutil -L lists %q; want it refused", imported, err, held)
				}
				return
			}
			if err != nil || !imported || !strings.HasPrefix(held, tc.listed+" ") {
				t.Fatalf("imported=%v err=%v, crlutil -L lists %q, want %s\n%s", imported, err, held, tc.listed, out)
			}
			if imported, err := a.kubeImportCRL(ctx, crl, bundle); err != nil || imported {
				t.Fatalf("the same CRL again: imported=%v err=%v", imported, err)
			}
		})
	}
}
