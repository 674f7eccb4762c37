package server

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ipsecca/ipsecca/ca"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

func (s adminService) StartRollover(
	ctx context.Context, req *ipseccav1.StartRolloverRequest,
) (*ipseccav1.RolloverStatus, error) {
	opts := ca.RolloverOptions{Spread: req.GetSpread().AsDuration(), Emergency: req.GetEmergency()}
	if opts.Spread < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "spread %s: want zero or more", opts.Spread)
	}
	if req.GetKeyType() != "" {
		kt, err := ca.ParseKeyType(req.GetKeyType())
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		opts.KeyType = kt
	}
	caller, _ := CallerFrom(ctx)
	r, err := s.auth.StartRollover(ctx, opts, caller.String())
	if err != nil {
		return nil, s.toStatus(err)
	}
	s.notify.CABundleChanged(r.BundlePEM)
	if opts.Emergency {
		// Every node rotates now; the scheduler's rollover step finds them.
		s.sched.Wake()
	}
	return s.rolloverStatus(ctx)
}

func (s adminService) GetRollover(
	ctx context.Context,
	_ *ipseccav1.GetRolloverRequest,
) (*ipseccav1.RolloverStatus, error) {
	return s.rolloverStatus(ctx)
}

func (s adminService) FinishRollover(
	ctx context.Context, req *ipseccav1.FinishRolloverRequest,
) (*ipseccav1.RolloverStatus, error) {
	caller, _ := CallerFrom(ctx)
	r, revoked, err := s.auth.FinishRollover(ctx, req.GetForce(), caller.String())
	if err != nil {
		return nil, s.toStatus(err)
	}
	s.notify.CABundleChanged(r.BundlePEM)
	s.sched.Wake()
	resp, err := s.rolloverStatus(ctx)
	if err == nil && revoked > 0 {
		resp.Warnings = append(resp.Warnings, fmt.Sprintf("revoked %d certificates of the retired key", revoked))
	}
	return resp, err
}

func (s adminService) AbortRollover(
	ctx context.Context,
	_ *ipseccav1.AbortRolloverRequest,
) (*ipseccav1.RolloverStatus, error) {
	caller, _ := CallerFrom(ctx)
	r, err := s.auth.AbortRollover(ctx, caller.String())
	if err != nil {
		return nil, s.toStatus(err)
	}
	s.notify.CABundleChanged(r.BundlePEM)
	s.sched.Wake()
	return s.rolloverStatus(ctx)
}

func (s *Server) rolloverStatus(ctx context.Context) (*ipseccav1.RolloverStatus, error) {
	rep, err := s.auth.RolloverStatus(ctx, s.clock.Now())
	if err != nil {
		return nil, s.toStatus(err)
	}
	return rolloverToProto(rep), nil
}

func rolloverToProto(rep *ca.RolloverReport) *ipseccav1.RolloverStatus {
	out := &ipseccav1.RolloverStatus{Phase: rep.Phase, Emergency: rep.Emergency, Aborted: rep.Aborted,
		NewSerial: rep.NewSerial, OldSerial: rep.OldSerial, Ready: rep.Ready, WaitingFor: rep.WaitingFor,
		PairsOnNew: int32(rep.PairsOnNew), Pairs: int32(rep.Pairs), CsrPem: rep.CSRPEM}
	if rep.Phase == "" {
		return out
	}
	out.StartedAt, out.PhaseAt = timestamppb.New(rep.StartedAt), timestamppb.New(rep.PhaseAt)
	for _, n := range rep.Nodes {
		rn := &ipseccav1.RolloverNode{Node: n.Node, TrustsNew: n.TrustsNew, OnNew: n.OnNew, HoldsOld: n.HoldsOld,
			CurrentSerial: n.CurrentSerial}
		if !n.ReportedAt.IsZero() {
			rn.ReportedAt = timestamppb.New(n.ReportedAt)
		}
		out.Nodes = append(out.Nodes, rn)
	}
	if rep.Emergency {
		out.Warnings = append(out.Warnings, "emergency rollover: the nodes rotate at once, before every peer "+
			"trusts the new CA; pairs drop until both sides hold it")
	}
	return out
}
