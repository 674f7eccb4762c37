package server

import (
	"crypto/sha256"
	"encoding/hex"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// subscriptionBuffer is how many events a Watch stream may fall behind
// before it is closed (the node reconnects and gets a fresh snapshot).
const subscriptionBuffer = 16

// The rotation fan-out is paced: at most maxTold nodes are told to renew
// and not yet done (their stream ended: the sidecar reconnects with its
// new certificate), for at most toldFor each (the sidecar's call
// timeout). Told all at once, 5,000 nodes renewing over 2 cores wait so
// long behind each other that some calls time out, and a sidecar whose
// renewal failed waits for the next event. A told node costs about 12-20
// ms of server CPU (five TLS handshakes, a signature, two commits), so 64
// per core keep the cores busy while each node is served within a couple
// of seconds. The others wait in order; each still learns it is due from
// its snapshot if it reconnects meanwhile.
var (
	maxTold = 64 * runtime.GOMAXPROCS(0)
	toldFor = 30 * time.Second
)

// Why the hub ends a stream: both send the node back to reconnect.
var (
	errFellBehind = status.Error(codes.Unavailable, "watch stream fell behind; reconnect for a fresh snapshot")
	errStopping   = status.Error(codes.Unavailable, "the server is stopping; reconnect")
)

// Hub fans node events out to Watch streams. It implements
// rotation.Notifier.
type Hub struct {
	mu     sync.Mutex
	subs   map[string]map[*Subscription]struct{}
	closed bool

	maxTold int
	toldFor time.Duration
	told    map[string]*time.Timer // nodes told to rotate, until done or toldFor
	waiting []*dueNote             // in order, for a slot among the told
	queued  map[string]*dueNote    // the waiting by node
}

// dueNote is a RotationDue waiting for its turn.
type dueNote struct{ node, serial, reason string }

// Subscription receives the events of one node; C is closed when the
// subscriber fell too far behind or the hub closed, and Err says which.
type Subscription struct {
	C     chan *ipseccav1.NodeEvent
	node  string
	hub   *Hub
	ended error // set under hub.mu before C is closed
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	return &Hub{subs: map[string]map[*Subscription]struct{}{}, maxTold: maxTold, toldFor: toldFor,
		told: map[string]*time.Timer{}, queued: map[string]*dueNote{}}
}

// Subscribe registers a stream for node's events. After Close the
// subscription comes closed.
func (h *Hub) Subscribe(node string) *Subscription {
	s := &Subscription{C: make(chan *ipseccav1.NodeEvent, subscriptionBuffer), node: node, hub: h}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		s.ended = errStopping
		close(s.C)
		return s
	}
	if h.subs[node] == nil {
		h.subs[node] = map[*Subscription]struct{}{}
	}
	h.subs[node][s] = struct{}{}
	return s
}

// Err is the status a Watch stream ends with once C is closed.
func (s *Subscription) Err() error { return s.ended }

// Close ends every stream and refuses new ones: the server is stopping.
// A Watch stream never ends by itself, so without this a graceful stop
// waits its whole timeout for them while every sidecar holds a stream to
// a server that accepts no new call; ended now, the nodes start their
// backoff at once and find the successor when it listens.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for node, m := range h.subs {
		for s := range m {
			s.ended = errStopping
			close(s.C)
		}
		delete(h.subs, node)
	}
	for node, t := range h.told {
		t.Stop()
		delete(h.told, node)
	}
	h.waiting, h.queued = nil, map[string]*dueNote{}
}

// Close unregisters the subscription.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s.node][s]; ok {
		delete(h.subs[s.node], s)
		close(s.C)
		h.gone(s.node)
	}
}

// gone notes that one of node's streams ended; when it was the last, a
// node told to rotate is done (the sidecar reconnects with its new
// certificate). Called with h.mu held.
func (h *Hub) gone(node string) {
	if len(h.subs[node]) > 0 {
		return
	}
	delete(h.subs, node)
	if _, ok := h.told[node]; ok {
		h.done(node)
	}
}

// Watchers returns how many streams are open.
func (h *Hub) Watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.subs {
		n += len(m)
	}
	return n
}

// send delivers without blocking; a full subscriber is dropped. Called
// with h.mu held.
func (h *Hub) send(s *Subscription, ev *ipseccav1.NodeEvent) {
	select {
	case s.C <- ev:
	default:
		delete(h.subs[s.node], s)
		s.ended = errFellBehind
		close(s.C)
	}
}

// RotationDue tells node's streams to rotate serial, when a slot among
// the told is free; otherwise in turn. A node without a stream is not
// told (its snapshot says so when it connects) and takes no slot.
func (h *Hub) RotationDue(node, serial, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || len(h.subs[node]) == 0 {
		return
	}
	if n := h.queued[node]; n != nil {
		n.serial, n.reason = serial, reason
		return
	}
	if _, told := h.told[node]; !told && len(h.told) >= h.maxTold {
		n := &dueNote{node, serial, reason}
		h.waiting = append(h.waiting, n)
		h.queued[node] = n
		return
	}
	h.tell(node, serial, reason)
}

// tell sends a RotationDue and holds node's slot until its streams end
// or toldFor passes. Called with h.mu held.
func (h *Hub) tell(node, serial, reason string) {
	if t := h.told[node]; t != nil {
		t.Reset(h.toldFor)
	} else {
		h.told[node] = time.AfterFunc(h.toldFor, func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if _, ok := h.told[node]; ok {
				h.done(node)
			}
		})
	}
	ev := &ipseccav1.NodeEvent{
		Kind:          ipseccav1.NodeEvent_ROTATION_DUE,
		CurrentSerial: serial,
		RotationDue:   true,
		Reason:        reason,
	}
	for s := range h.subs[node] {
		h.send(s, ev)
	}
	if len(h.subs[node]) == 0 {
		h.gone(node) // every stream fell behind: nobody to wait for
	}
}

// done frees node's slot and tells the next waiting nodes that still
// have a stream. Called with h.mu held.
func (h *Hub) done(node string) {
	h.told[node].Stop()
	delete(h.told, node)
	for len(h.told) < h.maxTold && len(h.waiting) > 0 {
		n := h.waiting[0]
		h.waiting[0] = nil
		h.waiting = h.waiting[1:]
		delete(h.queued, n.node)
		if len(h.subs[n.node]) > 0 {
			h.tell(n.node, n.serial, n.reason)
		}
	}
}

// Revoked tells node's streams that its certificates were revoked.
func (h *Hub) Revoked(node, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[node] {
		h.send(s, &ipseccav1.NodeEvent{Kind: ipseccav1.NodeEvent_REVOKED, Reason: reason})
	}
}

// CABundleChanged tells every stream the new bundle.
func (h *Hub) CABundleChanged(bundlePEM []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.subs {
		for s := range m {
			h.send(
				s,
				&ipseccav1.NodeEvent{
					Kind:           ipseccav1.NodeEvent_CA_BUNDLE_CHANGED,
					CaBundlePem:    bundlePEM,
					CaBundleSha256: bundleHash(bundlePEM),
					Reason:         "ca renewed",
				},
			)
		}
	}
}

// bundleHash identifies a CA bundle: SHA-256 of its PEM bytes.
func bundleHash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
