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
		if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != "the server is stopping; reconnect" {
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
