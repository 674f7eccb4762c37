package ca

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"
)

// TestNewSerial: serials are 20 bytes, positive, distinct at one instant
// (the random part) and ascend with the issue time, as hex strings too
// (the store's keys).
func TestNewSerial(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	seen := map[string]bool{}
	prev := ""
	for i := range 1000 {
		// Ten serials per instant, instants one nanosecond apart.
		n, err := newSerial(rand.Reader, t0.Add(time.Duration(i/10)))
		if err != nil {
			t.Fatal(err)
		}
		if n.Sign() <= 0 || len(n.Bytes()) != 20 {
			t.Fatalf("serial %x: want a positive 20-byte number", n.Bytes())
		}
		s := SerialString(n)
		if seen[s] {
			t.Fatalf("serial %s drawn twice", s)
		}
		seen[s] = true
		if i%10 == 0 && s <= prev {
			t.Errorf("serial %s at a later instant sorts before %s", s, prev)
		}
		prev = max(prev, s)
	}
	// The random part comes from the reader given, so a failing reader fails.
	if _, err := newSerial(bytes.NewReader(nil), t0); err == nil {
		t.Error("newSerial with an empty reader: no error")
	}
}
