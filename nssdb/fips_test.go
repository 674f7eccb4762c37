//go:debug fips140=only

package nssdb

import (
	"crypto/fips140"
	"testing"
)

// The directive above runs every test of this package in FIPS 140-3 mode
// with enforcement (GODEBUG=fips140=only): a SHA-1, 3DES or other call that
// is not approved panics or fails. This is the FIPS lane of the code a node
// runs to fill its NSS database (key IDs, the PKCS#12 handed to pk12util).

// TestFIPSOnlyEnforced fails when the lane is not on, so it cannot pass
// silently.
func TestFIPSOnlyEnforced(t *testing.T) {
	if !fips140.Enabled() || !fips140.Enforced() {
		t.Fatalf("fips140.Enabled()=%v Enforced()=%v: want both (//go:debug fips140=only)", fips140.Enabled(),
			fips140.Enforced())
	}
}
