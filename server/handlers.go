package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ipsecca/ipsecca/ca"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store"
)

type nodeService struct {
	ipseccav1.UnimplementedNodeServiceServer
	*Server
}

type adminService struct {
	ipseccav1.UnimplementedAdminServiceServer
	*Server
}

var (
	_ ipseccav1.NodeServiceServer  = nodeService{}
	_ ipseccav1.AdminServiceServer = adminService{}
)

func (s nodeService) Enroll(ctx context.Context, req *ipseccav1.EnrollRequest) (*ipseccav1.IssueResponse, error) {
	if len(req.GetCsrPem()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "csr_pem is empty")
	}
	// Limit per token id (a token belongs to one node) and, for calls no
	// token vouches for, per peer address: the id is the caller's choice.
	peerAddr := peerHost(ctx)
	if err := s.limit.allowPeer(peerAddr); err != nil {
		return nil, err
	}
	id, _, _ := strings.Cut(req.GetToken(), ".")
	if err := s.limit.allow("token " + trunc(id, 16)); err != nil {
		return nil, err
	}
	start := time.Now()
	rec, err := s.auth.EnrollWithToken(ctx, req.GetToken(), req.GetCsrPem())
	s.observe("token", start, err)
	if err != nil {
		if ca.ReasonOf(err) == ca.ReasonTokenInvalid {
			s.limit.failed(peerAddr)
		}
		return nil, s.toStatus(err)
	}
	s.metrics.tokenEvent("used", 1)
	return s.issueResponse(rec), nil
}

func (s nodeService) Renew(ctx context.Context, req *ipseccav1.RenewRequest) (*ipseccav1.IssueResponse, error) {
	if len(req.GetCsrPem()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "csr_pem is empty")
	}
	caller, _ := CallerFrom(ctx)
	if err := s.limit.allow("node " + caller.Node); err != nil {
		return nil, err
	}
	start := time.Now()
	rec, err := s.auth.Renew(ctx, caller, req.GetCsrPem())
	s.observe("renewal", start, err)
	if err != nil {
		return nil, s.toStatus(err)
	}
	return s.issueResponse(rec), nil
}

func (s nodeService) GetCABundle(context.Context, *ipseccav1.GetCABundleRequest) (*ipseccav1.CABundle, error) {
	root := s.auth.Root()
	return &ipseccav1.CABundle{Pem: root.BundlePEM, Sha256Fingerprint: root.Fingerprint()}, nil
}

// peerHost is the caller's IP address ("" when unknown).
func peerHost(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// observe records an issuance's latency (wall time: a metric, not a decision).
func (s *Server) observe(via string, start time.Time, err error) {
	if err == nil {
		s.metrics.issued.WithLabelValues(via).Inc()
		s.metrics.latency.WithLabelValues(via).Observe(time.Since(start).Seconds())
	}
}

func (s *Server) issueResponse(rec *store.Cert) *ipseccav1.IssueResponse {
	return &ipseccav1.IssueResponse{Certificate: s.toProto(rec), CaBundlePem: s.auth.Root().BundlePEM}
}

func (s adminService) CreateToken(
	ctx context.Context,
	req *ipseccav1.CreateTokenRequest,
) (*ipseccav1.CreateTokenResponse, error) {
	if req.GetNode() == "" {
		return nil, status.Error(codes.InvalidArgument, "node is required")
	}
	caller, _ := CallerFrom(ctx)
	token, rec, err := s.auth.CreateToken(
		ctx,
		req.GetNode(),
		req.GetCommonName(),
		req.GetTtl().AsDuration(),
		caller.String(),
	)
	if err != nil {
		return nil, s.toStatus(err)
	}
	s.metrics.tokenEvent("created", 1)
	return &ipseccav1.CreateTokenResponse{Token: token, TokenId: rec.ID, ExpiresAt: timestamppb.New(rec.ExpiresAt)}, nil
}

// maxTokensPerCall bounds CreateTokens.
const maxTokensPerCall = 10000

func (s adminService) CreateTokens(
	ctx context.Context,
	req *ipseccav1.CreateTokensRequest,
) (*ipseccav1.CreateTokensResponse, error) {
	if n := len(req.GetRequests()); n == 0 || n > maxTokensPerCall {
		return nil, status.Errorf(codes.InvalidArgument, "give between 1 and %d token requests", maxTokensPerCall)
	}
	caller, _ := CallerFrom(ctx)
	resp := &ipseccav1.CreateTokensResponse{Tokens: make([]*ipseccav1.CreateTokenResponse, len(req.GetRequests()))}
	// Created concurrently so the store commits them in a few group commits.
	var wg sync.WaitGroup
	errs := make([]error, len(req.GetRequests()))
	sem := make(chan struct{}, 64)
	for i, r := range req.GetRequests() {
		if r.GetNode() == "" {
			return nil, status.Errorf(codes.InvalidArgument, "request %d: node is required", i)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			token, rec, err := s.auth.CreateToken(
				ctx,
				r.GetNode(),
				r.GetCommonName(),
				r.GetTtl().AsDuration(),
				caller.String(),
			)
			if err != nil {
				errs[i] = err
				return
			}
			s.metrics.tokenEvent("created", 1)
			resp.Tokens[i] = &ipseccav1.CreateTokenResponse{
				Token:     token,
				TokenId:   rec.ID,
				ExpiresAt: timestamppb.New(rec.ExpiresAt),
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, status.Errorf(
				status.Code(s.toStatus(err)),
				"request %d (node %q): %s (other tokens of this call may have been created)",
				i,
				req.GetRequests()[i].GetNode(),
				status.Convert(s.toStatus(err)).Message(),
			)
		}
	}
	return resp, nil
}

// maxPageSize bounds list pages.
const maxPageSize = 1000

func pageSize(n int32) (int, error) {
	switch {
	case n < 0 || n > maxPageSize:
		return 0, status.Errorf(codes.InvalidArgument, "page_size must be between 0 and %d", maxPageSize)
	case n == 0:
		return 100, nil
	}
	return int(n), nil
}

func (s adminService) ListCertificates(
	ctx context.Context,
	req *ipseccav1.ListCertificatesRequest,
) (*ipseccav1.ListCertificatesResponse, error) {
	limit, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	f := store.CertFilter{
		Node:  req.GetNode(),
		Kind:  store.Kind(req.GetKind()),
		State: store.State(req.GetState()),
		Now:   s.clock.Now(),
		After: req.GetPageToken(),
		Limit: limit,
	}
	if req.GetDueBefore() != nil {
		f.DueBefore = req.GetDueBefore().AsTime()
	}
	switch f.State {
	case "", store.StateActive, store.StateSuperseded, store.StateRevoked, store.StateExpired:
	default:
		return nil, status.Errorf(
			codes.InvalidArgument,
			"state %q: want active, superseded, revoked or expired",
			f.State,
		)
	}
	switch f.Kind {
	case "", store.KindNode, store.KindAdmin, store.KindServer:
	default:
		return nil, status.Errorf(codes.InvalidArgument, "kind %q: want node, admin or server", f.Kind)
	}
	certs, next, err := s.queries.ListCerts(ctx, f)
	if err != nil {
		return nil, s.toStatus(err)
	}
	resp := &ipseccav1.ListCertificatesResponse{NextPageToken: next}
	for _, c := range certs {
		resp.Certificates = append(resp.Certificates, s.toProto(c))
	}
	return resp, nil
}

func (s adminService) GetCertificate(
	ctx context.Context,
	req *ipseccav1.GetCertificateRequest,
) (*ipseccav1.Certificate, error) {
	serial := strings.TrimPrefix(strings.ToLower(strings.ReplaceAll(req.GetSerial(), ":", "")), "0x")
	serial = strings.TrimLeft(serial, "0")
	if serial == "" {
		return nil, status.Error(codes.InvalidArgument, "serial is required (hex)")
	}
	c, err := s.queries.Cert(ctx, serial)
	if err != nil {
		if st := s.toStatus(err); status.Code(st) == codes.NotFound {
			return nil, status.Errorf(codes.NotFound, "no certificate with serial %s", serial)
		}
		return nil, s.toStatus(err)
	}
	return s.toProto(c), nil
}

func (s adminService) ListEvents(
	ctx context.Context,
	req *ipseccav1.ListEventsRequest,
) (*ipseccav1.ListEventsResponse, error) {
	limit, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	var after uint64
	if t := req.GetPageToken(); t != "" {
		if after, err = strconv.ParseUint(t, 10, 64); err != nil {
			return nil, status.Error(codes.InvalidArgument, "page_token is not one this server returned")
		}
	}
	f := store.EventFilter{Node: req.GetNode(), Type: req.GetType(), AfterSeq: after, Limit: limit}
	if req.GetSince() != nil {
		f.Since = req.GetSince().AsTime()
	}
	if req.GetUntil() != nil {
		f.Until = req.GetUntil().AsTime()
	}
	events, more, err := s.queries.ListEvents(ctx, f)
	if err != nil {
		return nil, s.toStatus(err)
	}
	resp := &ipseccav1.ListEventsResponse{}
	for _, e := range events {
		resp.Events = append(resp.Events, &ipseccav1.Event{
			Seq: e.Seq, Time: timestamppb.New(e.Time), Type: e.Type, Actor: e.Actor, Node: e.Node, Serial: e.Serial,
			OldSerial: e.OldSerial, Reason: e.Reason, Detail: e.Detail, PrevHash: e.Prev, Hash: e.Hash,
		})
	}
	if more && len(events) > 0 {
		resp.NextPageToken = strconv.FormatUint(events[len(events)-1].Seq, 10)
	}
	return resp, nil
}

// toProto converts a stored certificate for the API.
func (s *Server) toProto(c *store.Cert) *ipseccav1.Certificate {
	sum := sha256.Sum256(c.DER)
	var revokedAt *timestamppb.Timestamp
	reason := ""
	if c.State == store.StateRevoked {
		revokedAt, reason = timestamppb.New(c.RevokedAt), ca.ReasonName(c.RevocationReason)
	}
	return &ipseccav1.Certificate{
		RevokedAt:         revokedAt,
		RevocationReason:  reason,
		Serial:            c.Serial,
		Kind:              string(c.Kind),
		Node:              c.Node,
		CommonName:        c.CommonName,
		State:             string(c.StateAt(s.clock.Now())),
		NotBefore:         timestamppb.New(c.NotBefore),
		NotAfter:          timestamppb.New(c.NotAfter),
		RotateAfter:       timestamppb.New(c.RotateAfter),
		IssuedAt:          timestamppb.New(c.IssuedAt),
		IssuedVia:         c.IssuedVia,
		SupersededBy:      c.SupersededBy,
		Subject:           c.Subject,
		Sha256Fingerprint: hex.EncodeToString(sum[:]),
		CertificatePem:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER}),
	}
}
