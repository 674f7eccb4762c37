package server

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ipsecca/ipsecca/ca"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store"
)

// maxTokenPage bounds a ListTokens page.
const maxTokenPage = 1000

func (s adminService) ListTokens(
	ctx context.Context,
	req *ipseccav1.ListTokensRequest,
) (*ipseccav1.ListTokensResponse, error) {
	if req.GetPageSize() < 0 || req.GetPageSize() > maxTokenPage {
		return nil, status.Errorf(codes.InvalidArgument, "page_size must be in [0, %d]", maxTokenPage)
	}
	toks, next, err := s.queries.ListTokens(ctx, store.TokenFilter{All: req.GetAll(), Now: s.clock.Now(),
		Node: store.CanonicalName(req.GetNode()), After: req.GetPageToken(), Limit: int(req.GetPageSize())})
	if err != nil {
		return nil, s.toStatus(err)
	}
	resp := &ipseccav1.ListTokensResponse{NextPageToken: next}
	for _, t := range toks {
		resp.Tokens = append(resp.Tokens, s.tokenProto(t))
	}
	return resp, nil
}

// tokenProto shows a token without its secret (only its hash is stored).
func (s *Server) tokenProto(t *store.Token) *ipseccav1.Token {
	ts := func(t time.Time) *timestamppb.Timestamp {
		if t.IsZero() {
			return nil
		}
		return timestamppb.New(t)
	}
	return &ipseccav1.Token{Id: t.ID, Node: t.Node, CommonName: t.CommonName, State: t.StateAt(s.clock.Now()),
		CreatedAt: ts(t.CreatedAt), ExpiresAt: ts(t.ExpiresAt), CreatedBy: t.CreatedBy, UsedAt: ts(t.UsedAt),
		UsedFor: t.UsedFor, RevokedAt: ts(t.RevokedAt), RevokedBy: t.RevokedBy}
}

func (s adminService) RevokeToken(
	ctx context.Context,
	req *ipseccav1.RevokeTokenRequest,
) (*ipseccav1.RevokeTokenResponse, error) {
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id is required")
	}
	caller, _ := CallerFrom(ctx)
	tok, already, err := s.auth.RevokeToken(ctx, req.GetId(), caller.String())
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &ipseccav1.RevokeTokenResponse{Token: s.tokenProto(tok), Already: already}, nil
}

func (s adminService) RevokeCertificate(
	ctx context.Context,
	req *ipseccav1.RevokeCertificateRequest,
) (*ipseccav1.RevokeCertificateResponse, error) {
	caller, _ := CallerFrom(ctx)
	res, err := s.auth.RevokeCertificate(ctx, caller, req.GetSerial(), req.GetReason())
	if err != nil {
		return nil, s.toStatus(err)
	}
	if !res.Already {
		node := ""
		if res.NodeRevoked {
			node = res.Cert.Node
		}
		// The nodes' Watch streams, and the Kubernetes door's CRL ConfigMap.
		s.notify.Revoked(node, req.GetReason())
	}
	return &ipseccav1.RevokeCertificateResponse{Certificate: s.toProto(res.Cert), Already: res.Already,
		NodeRevoked: res.NodeRevoked, Revoked: int32(res.Certificates),
		Reason: ca.ReasonName(res.Cert.RevocationReason)}, nil
}

// alreadyRevoked reports whether err says the node was revoked before
// (RevokeNode is idempotent).
func alreadyRevoked(err error) bool { return errors.Is(err, store.ErrAlreadyRevoked) }
