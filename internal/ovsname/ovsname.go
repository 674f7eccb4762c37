// Package ovsname is ovs-monitor-ipsec's NSS nickname namespace, which
// ipsecca must keep out of: the one definition behind ca.HasOVSPrefix (the
// CSR policy) and bundle's checks of external endpoint bundles. It imports
// nothing of ipsecca's, so ca and bundle, one layer that may not import
// each other, both use it.
package ovsname

import "strings"

// Prefix starts every nickname ovs-monitor-ipsec owns (ovs_cert_<peer>,
// ovs_certkey_<CN>, ovs_cert_cacert): it deletes every entry under it that
// it does not manage when it (re)starts.
const Prefix = "ovs_"

// HasPrefix reports whether s starts with Prefix in any case (NSS
// nicknames and libreswan IDs are compared without regard to case).
func HasPrefix(s string) bool {
	return len(s) >= len(Prefix) && strings.EqualFold(s[:len(Prefix)], Prefix)
}
