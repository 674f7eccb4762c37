package server

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Limits bound how fast certificates may be requested. A zero field turns
// that limit off.
type Limits struct {
	// Global bounds all Enroll and Renew calls together (per second, with
	// a burst of twice that).
	Global float64
	// PerNode bounds one node's (or one token's) attempts: per second,
	// with a burst of PerNodeBurst.
	PerNode      float64
	PerNodeBurst int
}

// DefaultLimits are the limits serve uses unless told otherwise: 10000/s
// overall (above what the CA can sign, so it only sheds a flood) and 2/s
// per node with a burst of 20 (a node retrying with backoff never meets it).
var DefaultLimits = Limits{Global: 10000, PerNode: 2, PerNodeBurst: 20}

// maxTrackedKeys bounds the per-node limiter table; when full it is reset
// (an attacker spraying keys then meets only the global limit).
const maxTrackedKeys = 100000

type limiter struct {
	l      Limits
	global *rate.Limiter

	mu   sync.Mutex
	keys map[string]*rate.Limiter
}

func newLimiter(l Limits) *limiter {
	lim := &limiter{l: l, keys: map[string]*rate.Limiter{}}
	if l.Global > 0 {
		lim.global = rate.NewLimiter(rate.Limit(l.Global), int(2*l.Global)+1)
	}
	return lim
}

// allow admits one attempt for key, or returns ResourceExhausted with a
// RetryInfo telling the caller when to come back.
func (l *limiter) allow(key string) error {
	if l.l.PerNode > 0 {
		if err := l.allowKey(key); err != nil {
			return err
		}
	}
	if l.global != nil {
		if r := l.global.Reserve(); r.Delay() > 0 {
			d := r.Delay()
			r.Cancel()
			return exhausted("the CA is at its request limit", d)
		}
	}
	return nil
}

func (l *limiter) allowKey(key string) error {
	l.mu.Lock()
	k, ok := l.keys[key]
	if !ok {
		if len(l.keys) >= maxTrackedKeys {
			l.keys = map[string]*rate.Limiter{}
		}
		k = rate.NewLimiter(rate.Limit(l.l.PerNode), max(l.l.PerNodeBurst, 1))
		l.keys[key] = k
	}
	l.mu.Unlock()
	if r := k.Reserve(); r.Delay() > 0 {
		d := r.Delay()
		r.Cancel()
		return exhausted("too many attempts for "+key, d)
	}
	return nil
}

func exhausted(msg string, retry time.Duration) error {
	retry = max(retry.Round(time.Millisecond), time.Millisecond)
	st := status.New(codes.ResourceExhausted, msg+"; retry after "+retry.String())
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)}); err == nil {
		st = d
	}
	return st.Err()
}
