package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ipsecca/ipsecca/ca"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// tunnelTo is an established tunnel whose peer authenticated with cert
// (an ECDSA key: matched by its NotAfter).
func tunnelTo(peer string, cert *tls.Certificate, state uint64) *ipseccav1.Tunnel {
	return &ipseccav1.Tunnel{Peer: peer, PeerAddress: "10.0.0.2", Established: true, IkeState: state,
		PeerKeyId: "ECDSA", PeerNotAfter: timestamppb.New(cert.Leaf.NotAfter),
		AuthenticatedAt: timestamppb.Now(), ChildSas: 2, ChildAddedAt: timestamppb.Now()}
}

// A node's report carries its tunnels: the reply names the IKE SA whose
// peer is revoked, MeshStatus classifies each pair, a report without
// tunnels keeps them, and the pairs are counted in the metrics.
func TestMeshStatusOverGRPC(t *testing.T) {
	c := startCA(t)
	ctx := context.Background()
	nodeA := c.enrollNode(t, "node-a")
	nodeB := c.enrollNode(t, "node-b")
	nodeR := c.enrollNode(t, "node-r")
	if _, err := c.in.Authority.RevokeNode(ctx, "node-r", "test", "test"); err != nil {
		t.Fatal(err)
	}
	node := ipseccav1.NewNodeServiceClient(c.conn(t, nodeA))
	admin := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t)))
	// node-b's pluto lists no key: node-a's report of what it presents counts.
	serialA := ca.SerialString(nodeA.Leaf.SerialNumber)
	if _, err := ipseccav1.NewNodeServiceClient(c.conn(t, nodeB)).ReportInventory(ctx,
		&ipseccav1.ReportInventoryRequest{TunnelsReported: true,
			Tunnels: []*ipseccav1.Tunnel{{Peer: "node-a", Established: true, IkeState: 1}}}); err != nil {
		t.Fatal(err)
	}
	toB := tunnelTo("Node-B", nodeB, 3)
	toB.LocalSerial = strings.ToUpper(serialA)
	resp, err := node.ReportInventory(ctx, &ipseccav1.ReportInventoryRequest{TunnelsReported: true,
		Tunnels: []*ipseccav1.Tunnel{
			toB,
			tunnelTo("node-r", nodeR, 4),
			{Peer: "node-c", PeerAddress: "10.0.0.3"},
		}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetRevokedIkeStates(); len(got) != 1 || got[0] != 4 {
		t.Fatalf("revoked IKE states %v; want [4]", got)
	}
	check := func(when string) {
		t.Helper()
		mesh, err := admin.MeshStatus(ctx, &ipseccav1.MeshStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range mesh.GetPairs() {
			got = append(got, fmt.Sprintf("%s>%s:%s:%s", p.GetNode(), p.GetPeer(), p.GetState(), p.GetPeerSerial()))
		}
		want := []string{
			"node-a>node-b:current:" + ca.SerialString(nodeB.Leaf.SerialNumber),
			"node-a>node-c:down:",
			"node-a>node-r:revoked:" + ca.SerialString(nodeR.Leaf.SerialNumber),
			"node-b>node-a:current:" + serialA,
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: pairs %v; want %v", when, got, want)
		}
		root := ca.SerialString(c.in.Authority.Root().Cert.SerialNumber)
		if mesh.GetConverged() || mesh.GetNodesReporting() != 2 || mesh.GetCurrentRootSerial() != root {
			t.Errorf("%s: converged %v, %d reporting, root %s", when, mesh.GetConverged(),
				mesh.GetNodesReporting(), mesh.GetCurrentRootSerial())
		}
		if p := mesh.GetPairs()[0]; p.GetPeerRootSerial() != root || p.GetChildSas() != 2 || p.GetIkeState() != 3 ||
			p.GetAuthenticatedAt() == nil || p.GetReportedAt() == nil {
			t.Errorf("%s: pair %v", when, p)
		}
	}
	check("after the report")
	if _, err := node.ReportInventory(ctx, &ipseccav1.ReportInventoryRequest{
		Entries: []*ipseccav1.InventoryEntry{{Nickname: "ovs_cert_cacert", Serial: "1", Trust: "CT,,"}},
	}); err != nil {
		t.Fatal(err)
	}
	check("after a report without tunnels")

	gauges := map[string]float64{}
	families, err := c.in.Server.MetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "ipsecca_mesh_pairs" {
			continue
		}
		for _, m := range f.GetMetric() {
			gauges[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	if len(gauges) != len(ca.PairStates) || gauges["current"] != 2 || gauges["revoked"] != 1 ||
		gauges["down"] != 1 || gauges["old-root"] != 0 {
		t.Errorf("ipsecca_mesh_pairs %v", gauges)
	}

	for name, req := range map[string]*ipseccav1.ReportInventoryRequest{
		"no peer":   {TunnelsReported: true, Tunnels: []*ipseccav1.Tunnel{{PeerAddress: "10.0.0.3"}}},
		"long peer": {TunnelsReported: true, Tunnels: []*ipseccav1.Tunnel{{Peer: strings.Repeat("p", 300)}}},
		"too many":  {TunnelsReported: true, Tunnels: make([]*ipseccav1.Tunnel, maxTunnels+1)},
	} {
		if _, err := node.ReportInventory(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v", name, err)
		}
	}
	check("after refused reports")
}
