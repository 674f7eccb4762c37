package server

import (
	"context"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ipsecca/ipsecca/ca"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// ImportCA gives the running subordinate CA a renewed certificate (same
// key and subject) after ca.SubordinateChecks; a failed check is
// InvalidArgument, a self-signed root FailedPrecondition. The nodes are
// told of the new bundle.
func (s adminService) ImportCA(ctx context.Context, req *ipseccav1.ImportCARequest) (*ipseccav1.GetCAResponse, error) {
	if len(req.GetCertPem()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "cert_pem is empty")
	}
	caller, _ := CallerFrom(ctx)
	r, res, err := s.auth.ImportSubordinate(ctx, req.GetCertPem(), req.GetChainPem(), caller.String())
	if err != nil {
		return nil, s.toStatus(err)
	}
	s.notify.CABundleChanged(r.BundlePEM)
	resp := caInfo(r, s.clock.Now())
	fillSubordinate(resp, r, s.clock.Now(), res.Warnings)
	return resp, nil
}

// fillSubordinate sets what GetCAResponse says of a subordinate CA
// (ca.Root.SubordinateInfo), with extra warnings (the import's) first and
// those resp already holds kept, each once.
func fillSubordinate(resp *ipseccav1.GetCAResponse, r *ca.Root, now time.Time, extra []string) {
	capAt, renewBy, warnings := r.SubordinateInfo(now)
	resp.Subordinate = r.Subordinate()
	if !capAt.IsZero() {
		resp.NodeNotAfterCap, resp.RenewBy = timestamppb.New(capAt), timestamppb.New(renewBy)
	}
	var all []string
	for _, w := range slices.Concat(extra, resp.Warnings, warnings) {
		if !slices.Contains(all, w) {
			all = append(all, w)
		}
	}
	resp.Warnings = all
}
