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
	// PeerFailures bounds how many calls that fail before any credential
	// is recognised (an unknown or wrong token) one peer address may make:
	// per second, with a burst of PeerFailuresBurst. Successful calls are
	// not counted, so many nodes behind one address enrol unhindered.
	PeerFailures      float64
	PeerFailuresBurst int
}

// DefaultLimits are the limits serve uses unless told otherwise: 10000/s
// overall (above what the CA can sign, so it only sheds a flood) and 2/s
// per node with a burst of 20 (a node retrying with backoff never meets it).
// A peer address may fail 1/s with a burst of 30 before it is refused.
var DefaultLimits = Limits{Global: 10000, PerNode: 2, PerNodeBurst: 20, PeerFailures: 1, PeerFailuresBurst: 30}

// maxTrackedKeys bounds the per-node limiter table; when full it is reset
// (an attacker spraying keys then meets only the global limit).
const maxTrackedKeys = 100000

type limiter struct {
	l      Limits
	global *rate.Limiter

	mu       sync.Mutex
	keys     map[string]*rate.Limiter
	failures map[string]*rate.Limiter // by peer address
}

func newLimiter(l Limits) *limiter {
	lim := &limiter{l: l, keys: map[string]*rate.Limiter{}, failures: map[string]*rate.Limiter{}}
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

// failureLimiter returns peer's failure budget (nil when the limit is off).
func (l *limiter) failureLimiter(peer string) *rate.Limiter {
	if l.l.PeerFailures <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k, ok := l.failures[peer]
	if !ok {
		if len(l.failures) >= maxTrackedKeys {
			l.failures = map[string]*rate.Limiter{}
		}
		k = rate.NewLimiter(rate.Limit(l.l.PeerFailures), max(l.l.PeerFailuresBurst, 1))
		l.failures[peer] = k
	}
	return k
}

// allowPeer refuses a peer address that spent its failure budget.
func (l *limiter) allowPeer(peer string) error {
	k := l.failureLimiter(peer)
	if k == nil || k.Tokens() >= 1 {
		return nil
	}
	return exhausted("too many failed attempts from "+peer, time.Duration(float64(time.Second)/l.l.PeerFailures))
}

// failed charges one failure to peer's budget.
func (l *limiter) failed(peer string) {
	if k := l.failureLimiter(peer); k != nil {
		k.Allow()
	}
}

func exhausted(msg string, retry time.Duration) error {
	retry = max(retry.Round(time.Millisecond), time.Millisecond)
	st := status.New(codes.ResourceExhausted, msg+"; retry after "+retry.String())
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)}); err == nil {
		st = d
	}
	return st.Err()
}
