// Package nodecert holds the rules of a node certificate that a node must
// apply as well as the CA: which names are valid, the key type names, and
// when a certificate is due for rotation. It imports nothing but the
// standard library, so the node sidecar can follow the CA's rules without
// linking the CA (cfssl, zlint), which would cost every node's memory.
package nodecert

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Key type names, as on the command line.
const (
	KeyECDSAP256 = "ecdsa-p256"
	KeyECDSAP384 = "ecdsa-p384"
	KeyRSA2048   = "rsa-2048"
	KeyRSA3072   = "rsa-3072"
	KeyRSA4096   = "rsa-4096"
)

// RotateFraction is the part of a certificate's lifetime after which it is
// due for rotation: 90%, so 4.5 years of 5.
const RotateFraction = 0.9

// RotateAfter returns NotBefore + RotateFraction of the lifetime.
func RotateAfter(notBefore, notAfter time.Time) time.Time {
	life := notAfter.Sub(notBefore)
	return notBefore.Add(time.Duration(float64(life) * RotateFraction)).Truncate(time.Second)
}

// MaxNameLength bounds node names and CNs (the X.520 CN upper bound).
const MaxNameLength = 64

var (
	dns1123Label = `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
	dns1123Re    = regexp.MustCompile(`^` + dns1123Label + `(\.` + dns1123Label + `)*$`)
	uuidRe       = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// ValidName reports why s is not a valid node name or CN: a DNS-1123
// subdomain (lower case, labels of at most 63) or a UUID (OVN's chassis
// system-id), at most MaxNameLength characters. nil means valid.
func ValidName(s string) error {
	switch {
	case s == "":
		return errors.New("the name is empty")
	case len(s) > MaxNameLength:
		return fmt.Errorf("the name is %d characters; at most %d are allowed", len(s), MaxNameLength)
	case uuidRe.MatchString(s):
		return nil
	case !dns1123Re.MatchString(s):
		return fmt.Errorf(
			"the name %q is neither a DNS-1123 subdomain (lower-case letters, digits, '-' and '.') nor a UUID", s)
	}
	for _, l := range strings.Split(s, ".") {
		if len(l) > 63 {
			return fmt.Errorf("the name %q has a label longer than 63 characters", s)
		}
	}
	return nil
}
