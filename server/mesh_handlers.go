package server

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

func (s adminService) MeshStatus(
	ctx context.Context,
	_ *ipseccav1.MeshStatusRequest,
) (*ipseccav1.MeshStatusResponse, error) {
	mesh, err := s.auth.MeshStatus(ctx, s.clock.Now())
	if err != nil {
		return nil, s.toStatus(err)
	}
	resp := &ipseccav1.MeshStatusResponse{
		CurrentRootSerial: mesh.CurrentRootSerial,
		NodesReporting:    uint32(mesh.NodesReporting),
		Converged:         mesh.Converged,
	}
	for _, p := range mesh.Pairs {
		resp.Pairs = append(resp.Pairs, &ipseccav1.MeshPair{
			Node:                  p.Node,
			Peer:                  p.Peer,
			State:                 p.State,
			PeerSerial:            p.PeerSerial,
			PeerRootSerial:        p.PeerRootSerial,
			NodeTrustsCurrentRoot: p.NodeTrustsCurrentRoot,
			AuthenticatedAt:       optTimestamp(p.AuthenticatedAt),
			ChildSas:              p.ChildSAs,
			ReportedAt:            optTimestamp(p.ReportedAt),
			IkeState:              p.IKEState,
		})
	}
	return resp, nil
}

// optTimestamp is t, or nil for the zero time.
func optTimestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
