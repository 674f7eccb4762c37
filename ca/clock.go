package ca

import "time"

// Clock tells the time. Production passes ClockFunc(time.Now); tests pass
// a fake they can move.
type Clock interface {
	Now() time.Time
}

// ClockFunc adapts a function to a Clock.
type ClockFunc func() time.Time

// Now returns f().
func (f ClockFunc) Now() time.Time { return f() }
