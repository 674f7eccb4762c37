package sidecar

import (
	"testing"
	"time"
)

// The retry delays keep the hand-written loops' timings: the n-th delay
// is drawn from [d/2, d] with d = 1 s doubling up to the cap, then stays
// in [cap/2, cap].
func TestBackoffTimings(t *testing.T) {
	for _, max := range []time.Duration{5 * time.Minute, 10 * time.Second} {
		b := newBackoff(max)
		d := minBackoff
		for i := range 20 {
			got := b.Step()
			if got < d/2 || got > d {
				t.Errorf("max %s, retry %d: %s; want within [%s, %s]", max, i, got, d/2, d)
			}
			d = min(2*d, max)
		}
	}
}
