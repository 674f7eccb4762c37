package ca

import (
	"fmt"
	"testing"
	"time"
)

// The first occurrence per key per period is let through, with the count
// held back since the last one; other keys are not affected.
func TestSampler(t *testing.T) {
	s := Sampler{Every: time.Minute}
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if ok, n := s.Allow("a", t0); !ok || n != 0 {
		t.Fatalf("first: %v %d", ok, n)
	}
	for i := range 99 {
		if ok, _ := s.Allow("a", t0.Add(time.Duration(i)*time.Millisecond)); ok {
			t.Fatalf("occurrence %d within the minute let through", i+2)
		}
	}
	if ok, _ := s.Allow("b", t0.Add(time.Second)); !ok {
		t.Fatal("another key held back")
	}
	if ok, n := s.Allow("a", t0.Add(time.Minute)); !ok || n != 99 {
		t.Fatalf("after a minute: %v, %d held back; want true, 99", ok, n)
	}
	// Bounded: when full, keys older than a period go.
	for i := range maxSampled {
		s.Allow(fmt.Sprint("user-", i), t0.Add(time.Hour))
	}
	s.Allow("late", t0.Add(time.Hour+2*time.Minute))
	if len(s.seen) != 1 {
		t.Fatalf("%d keys kept after pruning, want 1", len(s.seen))
	}
}
