package server

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store"
)

// A server stopping gracefully must not wait on its Watch streams: they
// never end by themselves, and while a graceful stop waits, every node
// holds a stream to a server that takes no new call. Closing the hub ends
// them with Unavailable (the sidecar reconnects) and the stop returns.
func TestHubCloseEndsWatchStreamsSoAStopDoesNotWait(t *testing.T) {
	var hub *Hub
	c := startCAWith(t, func(d *Deps) { hub = d.Hub })
	node := c.enrollNode(t, "node-a")

	// A server of its own, so the test can stop it gracefully.
	serverPair := issuePair(t, c.in.Authority, store.KindServer, "ipsecca-server", []string{"localhost"}, nil)
	g, _ := c.in.Server.GRPCServer(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return serverPair, nil })
	lis := bufconn.Listen(1 << 20)
	go g.Serve(lis)
	c.lis = lis
	t.Cleanup(g.Stop)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc := ipseccav1.NewNodeServiceClient(c.conn(t, node))
	var streams []ipseccav1.NodeService_WatchClient
	for range 3 {
		s, err := nc.Watch(ctx, &ipseccav1.WatchRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := s.Recv(); err != nil || ev.GetKind() != ipseccav1.NodeEvent_SNAPSHOT {
			t.Fatalf("first message: %v, %v; want the snapshot", ev, err)
		}
		streams = append(streams, s)
	}
	if n := hub.Watchers(); n != 3 {
		t.Fatalf("%d watchers; want 3", n)
	}

	hub.Close()
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	for i, s := range streams {
		_, err := s.Recv()
		if status.Code(err) != codes.Unavailable ||
			status.Convert(err).Message() != "the server is stopping; reconnect" {
			t.Fatalf("stream %d after Close: %v; want Unavailable, the server is stopping", i, err)
		}
	}
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("GracefulStop still waits on Watch streams after the hub closed")
	}
	if n := hub.Watchers(); n != 0 {
		t.Fatalf("%d watchers after Close; want 0", n)
	}
}

// A stream that subscribes after the hub closed (it raced the stop) ends
// at once instead of holding the stop; the events of the others still
// reach nobody after Close.
func TestHubSubscribeAfterCloseEndsAtOnce(t *testing.T) {
	h := NewHub()
	before := h.Subscribe("a")
	h.Close()
	after := h.Subscribe("a")
	h.RotationDue("a", "01", "forced")
	for _, s := range []*Subscription{before, after} {
		if _, ok := <-s.C; ok {
			t.Fatal("an event reached a subscription of a closed hub")
		}
		if status.Code(s.Err()) != codes.Unavailable {
			t.Fatalf("Err = %v; want Unavailable", s.Err())
		}
		s.Close() // a no-op now, and must not panic on the closed channel
	}
}

// A subscriber that falls behind is dropped with its own reason, and the
// others keep receiving.
func TestHubDropsOnlyTheSubscriberThatFellBehind(t *testing.T) {
	h := NewHub()
	slow, fast := h.Subscribe("a"), h.Subscribe("a")
	for i := 0; i <= subscriptionBuffer; i++ {
		h.RotationDue("a", "01", "forced")
		<-fast.C
	}
	for range subscriptionBuffer {
		<-slow.C
	}
	if _, ok := <-slow.C; ok {
		t.Fatal("the slow subscriber got more than its buffer")
	}
	if got := status.Convert(slow.Err()).Message(); got != "watch stream fell behind; reconnect for a fresh snapshot" {
		t.Fatalf("Err = %q", got)
	}
	if n := h.Watchers(); n != 1 {
		t.Fatalf("%d watchers; want the fast one", n)
	}
	fast.Close()
}

// rotate --all over more nodes than the hub tells at once: the first are
// told, the next one only when one of them renewed and reconnected (its
// stream ended), as a sidecar does; every node is told in the end.
func TestRotateAllIsToldInTurn(t *testing.T) {
	c := startCAWith(t, func(d *Deps) { d.Hub.maxTold = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type watcher struct {
		pair   *tls.Certificate
		stream ipseccav1.NodeService_WatchClient
		cancel context.CancelFunc
		events chan *ipseccav1.NodeEvent
	}
	var ws []*watcher
	for _, name := range []string{"node-a", "node-b"} {
		w := &watcher{pair: c.enrollNode(t, name), events: make(chan *ipseccav1.NodeEvent, 4)}
		var sctx context.Context
		sctx, w.cancel = context.WithCancel(ctx)
		var err error
		if w.stream, err = ipseccav1.NewNodeServiceClient(c.conn(t, w.pair)).Watch(sctx,
			&ipseccav1.WatchRequest{}); err != nil {
			t.Fatal(err)
		}
		if _, err := w.stream.Recv(); err != nil { // the snapshot
			t.Fatal(err)
		}
		go func() {
			for {
				ev, err := w.stream.Recv()
				if err != nil {
					return
				}
				w.events <- ev
			}
		}()
		ws = append(ws, w)
	}
	if _, err := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t))).Rotate(ctx,
		&ipseccav1.RotateRequest{All: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.in.Scheduler.Step(ctx); err != nil { // marks both due and tells the hub
		t.Fatal(err)
	}
	var first, second *watcher
	select {
	case <-ws[0].events:
		first, second = ws[0], ws[1]
	case <-ws[1].events:
		first, second = ws[1], ws[0]
	case <-ctx.Done():
		t.Fatal("no node was told to rotate")
	}
	select {
	case ev := <-second.events:
		t.Fatalf("both told at once (%v); want one at a time", ev)
	case <-time.After(200 * time.Millisecond):
	}
	// The first renews and reconnects: its stream ends, the second's turn.
	if _, err := ipseccav1.NewNodeServiceClient(c.conn(t, first.pair)).Renew(ctx,
		&ipseccav1.RenewRequest{CsrPem: csrFor(t, newKey(t), first.pair.Leaf.Subject.CommonName)}); err != nil {
		t.Fatal(err)
	}
	first.cancel()
	select {
	case ev := <-second.events:
		if ev.GetKind() != ipseccav1.NodeEvent_ROTATION_DUE || ev.GetCurrentSerial() == "" {
			t.Fatalf("second node got %v; want ROTATION_DUE for its serial", ev)
		}
	case <-ctx.Done():
		t.Fatal("the second node was never told to rotate")
	}
	second.cancel()
}

// A told node that neither renews nor disconnects holds its turn only
// toldFor; a node with no stream takes no turn; a revocation is never
// held back.
func TestHubTurnsExpireAndSkipNodesWithoutStreams(t *testing.T) {
	h := NewHub()
	h.maxTold, h.toldFor = 1, 50*time.Millisecond
	h.RotationDue("offline", "00", "forced") // no stream: no turn taken
	a, b := h.Subscribe("a"), h.Subscribe("b")
	h.RotationDue("a", "01", "forced")
	h.RotationDue("b", "02", "forced")
	if ev := <-a.C; ev.GetCurrentSerial() != "01" {
		t.Fatalf("a got %v", ev)
	}
	h.Revoked("b", "key compromise")
	if ev := <-b.C; ev.GetKind() != ipseccav1.NodeEvent_REVOKED {
		t.Fatalf("b got %v first; want the revocation at once", ev)
	}
	select {
	case ev := <-b.C:
		if ev.GetCurrentSerial() != "02" {
			t.Fatalf("b got %v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b was never told: a's turn did not expire")
	}
	a.Close()
	b.Close()
}
