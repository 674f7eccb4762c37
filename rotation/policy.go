// Package rotation decides when certificates rotate and drives it: pure
// functions of (certificate, now, policy) for due, overdue and spread; a
// scheduler that sleeps until the next due time from the store's index,
// marks certificates due, tells their nodes and records the events; and
// the root renewal that keeps every node certificate uncapped.
//
// Nothing here calls time.Now: the clock comes from the caller.
package rotation

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/ipsecca/ipsecca/ca"
)

// Policy is the rotation rule.
type Policy struct {
	// Fraction of a certificate's lifetime after which it is due: 0.9
	// (4.5 of 5 years) by default.
	Fraction float64
	// Spread widens the due point into a window after it, by an offset
	// derived from the serial (so restarts never reshuffle); 0 (off) by
	// default.
	Spread time.Duration
	// Grace is how long a due certificate may stay unrotated before it is
	// reported overdue: 7 days by default.
	Grace time.Duration
}

// DefaultPolicy is the policy when none is configured.
var DefaultPolicy = Policy{Fraction: ca.RotateFraction, Grace: 7 * 24 * time.Hour}

// Validate checks that the policy rotates well before expiry for a
// certificate of the given lifetime: the due point plus spread plus grace
// must leave at least half of the remaining margin (three months of a
// five-year certificate) before NotAfter.
func (p Policy) Validate(lifetime time.Duration) error {
	if p.Fraction <= 0 || p.Fraction >= 1 {
		return fmt.Errorf("rotation: fraction %.2f is outside (0, 1)", p.Fraction)
	}
	if p.Spread < 0 || p.Grace < 0 {
		return fmt.Errorf("rotation: spread and grace must not be negative")
	}
	margin := time.Duration(float64(lifetime) * (1 - p.Fraction))
	if p.Spread+p.Grace > margin/2 {
		return fmt.Errorf(
			"rotation: spread %s + grace %s exceed half of the %s left after the due point; "+
				"rotation would come too close to expiry",
			p.Spread,
			p.Grace,
			margin.Round(time.Hour),
		)
	}
	return nil
}

// SpreadOffset is the serial's deterministic offset in [0, window).
func SpreadOffset(serial string, window time.Duration) time.Duration {
	if window <= 0 {
		return 0
	}
	sum := sha256.Sum256([]byte(serial))
	return time.Duration(binary.BigEndian.Uint64(sum[:8]) % uint64(window))
}

// DueAt is when a certificate with this validity and serial is due:
// NotBefore + Fraction of the lifetime + its spread offset, to the second.
func (p Policy) DueAt(notBefore, notAfter time.Time, serial string) time.Time {
	life := notAfter.Sub(notBefore)
	return notBefore.Add(time.Duration(float64(life)*p.Fraction) + SpreadOffset(serial, p.Spread)).Truncate(time.Second)
}

// GraceUntil is when a certificate due at dueAt counts as overdue: the
// grace later, but never later than halfway from dueAt to NotAfter.
func (p Policy) GraceUntil(dueAt, notAfter time.Time) time.Time {
	g := dueAt.Add(p.Grace)
	if half := dueAt.Add(notAfter.Sub(dueAt) / 2); g.After(half) {
		g = half
	}
	return g
}

// NodeLifetime is the lifetime of a node certificate issued at t.
func NodeLifetime(t time.Time) time.Duration { return t.AddDate(ca.NodeYears, 0, 0).Sub(t) }

// RootRenewAt is when a root must be renewed so that no node certificate
// is ever capped by it: before its remaining life drops below one node
// lifetime plus the rotation margin (the part of a node lifetime after the
// due point).
func (p Policy) RootRenewAt(root *x509.Certificate) time.Time {
	life := NodeLifetime(root.NotAfter.AddDate(-ca.NodeYears, 0, 0))
	margin := time.Duration(float64(life) * (1 - p.Fraction))
	return root.NotAfter.AddDate(-ca.NodeYears, 0, 0).Add(-margin)
}
