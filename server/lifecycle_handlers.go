package server

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store"
)

func (s adminService) ReadmitNode(
	ctx context.Context,
	req *ipseccav1.ReadmitNodeRequest,
) (*ipseccav1.ReadmitNodeResponse, error) {
	if req.GetNode() == "" {
		return nil, status.Error(codes.InvalidArgument, "node is required")
	}
	caller, _ := CallerFrom(ctx)
	if err := s.auth.ReadmitNode(ctx, req.GetNode(), caller.String()); err != nil {
		return nil, s.toStatus(err)
	}
	return &ipseccav1.ReadmitNodeResponse{}, nil
}

func (s adminService) ForgetNode(
	ctx context.Context,
	req *ipseccav1.ForgetNodeRequest,
) (*ipseccav1.ForgetNodeResponse, error) {
	if req.GetNode() == "" {
		return nil, status.Error(codes.InvalidArgument, "node is required")
	}
	caller, _ := CallerFrom(ctx)
	names, err := s.auth.ForgetNode(ctx, req.GetNode(), caller.String())
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &ipseccav1.ForgetNodeResponse{Released: names}, nil
}

func (s adminService) RotateAdmin(
	ctx context.Context,
	req *ipseccav1.RotateAdminRequest,
) (*ipseccav1.IssueResponse, error) {
	if len(req.GetCsrPem()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "csr_pem is empty")
	}
	caller, _ := CallerFrom(ctx)
	rec, err := s.auth.RotateAdmin(ctx, caller, req.GetCsrPem())
	if err != nil {
		return nil, s.toStatus(err)
	}
	return s.issueResponse(rec), nil
}

func (s adminService) RevokeAdmin(
	ctx context.Context,
	req *ipseccav1.RevokeAdminRequest,
) (*ipseccav1.RevokeAdminResponse, error) {
	serial := strings.TrimLeft(strings.ToLower(strings.ReplaceAll(req.GetSerial(), ":", "")), "0")
	if serial == "" {
		return nil, status.Error(codes.InvalidArgument, "serial is required (hex)")
	}
	caller, _ := CallerFrom(ctx)
	rec, err := s.auth.RevokeAdmin(ctx, caller, serial, req.GetReason())
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "no certificate with serial %s", serial)
	}
	if err != nil {
		return nil, s.toStatus(err)
	}
	s.notify.Revoked("", req.GetReason())
	return &ipseccav1.RevokeAdminResponse{Certificate: s.toProto(rec)}, nil
}
