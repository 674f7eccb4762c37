package sidecar

import (
	"strings"
	"testing"
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
