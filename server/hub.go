package server

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// subscriptionBuffer is how many events a Watch stream may fall behind
// before it is closed (the node reconnects and gets a fresh snapshot).
const subscriptionBuffer = 16

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
}

// Subscription receives the events of one node; C is closed when the
// subscriber fell too far behind or the hub closed, and Err says which.
type Subscription struct {
	C     chan *ipseccav1.NodeEvent
	node  string
	hub   *Hub
	ended error // set under hub.mu before C is closed
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{subs: map[string]map[*Subscription]struct{}{}} }

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
}

// Close unregisters the subscription.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s.node][s]; ok {
		delete(h.subs[s.node], s)
		close(s.C)
		if len(h.subs[s.node]) == 0 {
			delete(h.subs, s.node)
		}
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

// RotationDue tells node's streams to rotate serial.
func (h *Hub) RotationDue(node, serial, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[node] {
		h.send(
			s,
			&ipseccav1.NodeEvent{
				Kind:          ipseccav1.NodeEvent_ROTATION_DUE,
				CurrentSerial: serial,
				RotationDue:   true,
				Reason:        reason,
			},
		)
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
