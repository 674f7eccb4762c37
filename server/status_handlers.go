package server

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ipsecca/ipsecca/internal/buildinfo"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

func (s adminService) GetStatus(
	ctx context.Context,
	_ *ipseccav1.GetStatusRequest,
) (*ipseccav1.GetStatusResponse, error) {
	build := buildinfo.Get()
	if s.cluster == nil {
		// One replica on its own bbolt file: it is the leader.
		return &ipseccav1.GetStatusResponse{Backend: "bolt", Leader: s.self.ID, Version: build.Version,
			Revision: build.Revision, Fips140: build.FIPS140, Fips140Module: build.FIPS140Module,
			Replicas: []*ipseccav1.Replica{{Id: s.self.ID, Address: s.self.Address,
				StartedAt: timestamppb.New(s.self.StartedAt), Leader: true, Self: true, Version: build.Version,
				Revision: build.Revision}}}, nil
	}
	st, err := s.cluster.ClusterStatus(ctx)
	if err != nil {
		return nil, s.toStatus(err)
	}
	resp := &ipseccav1.GetStatusResponse{Backend: st.Backend, Leader: st.Leader, Version: build.Version,
		Revision: build.Revision, Fips140: build.FIPS140, Fips140Module: build.FIPS140Module}
	for _, r := range st.Replicas {
		resp.Replicas = append(
			resp.Replicas,
			&ipseccav1.Replica{Id: r.ID, Address: r.Address, StartedAt: timestamppb.New(r.StartedAt),
				Leader: r.ID == st.Leader, Self: r.ID == s.self.ID, Version: r.Version, Revision: r.Revision},
		)
	}
	for _, m := range st.Members {
		resp.Members = append(
			resp.Members,
			&ipseccav1.StoreMember{Name: m.Name, Id: m.ID, Endpoint: m.Endpoint, Healthy: m.Healthy,
				Leader: m.Leader, Error: m.Error, DbSize: m.DBSize, RaftIndex: m.RaftIndex},
		)
	}
	return resp, nil
}
