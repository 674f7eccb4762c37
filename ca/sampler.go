package ca

import (
	"sync"
	"time"
)

// Sampler lets through the first occurrence of a key per period and
// counts the rest, so a flood of junk (anonymous Enroll calls, CSRs from
// one requester) logs one line a period, not one per call.
type Sampler struct {
	Every time.Duration

	mu   sync.Mutex
	seen map[string]*sampled
}

type sampled struct {
	at         time.Time // the last occurrence let through
	suppressed int       // occurrences held back since
}

// maxSampled bounds the keys kept; beyond it, keys older than a period go.
const maxSampled = 4096

// Allow reports whether this occurrence of key is let through at now and,
// if so, how many were held back since the last one let through.
func (s *Sampler) Allow(key string, now time.Time) (ok bool, suppressed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]*sampled{}
	}
	e := s.seen[key]
	if e != nil && now.Sub(e.at) < s.Every {
		e.suppressed++
		return false, 0
	}
	if e == nil {
		if len(s.seen) >= maxSampled {
			for k, v := range s.seen {
				if now.Sub(v.at) >= s.Every {
					delete(s.seen, k)
				}
			}
		}
		e = &sampled{}
		s.seen[key] = e
	}
	suppressed, e.at, e.suppressed = e.suppressed, now, 0
	return true, suppressed
}
