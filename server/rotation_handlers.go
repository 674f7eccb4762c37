package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/internal/pemutil"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store"
)

func (s nodeService) Watch(_ *ipseccav1.WatchRequest, stream ipseccav1.NodeService_WatchServer) error {
	ctx := stream.Context()
	caller, _ := CallerFrom(ctx)
	sub := s.hub.Subscribe(caller.Node)
	defer sub.Close()
	snap, err := s.snapshot(ctx, caller.Node)
	if err != nil {
		return s.toStatus(err)
	}
	if err := stream.Send(snap); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-sub.C:
			if !ok {
				return sub.Err()
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

// snapshot is the first Watch message: what the node must hold now.
func (s *Server) snapshot(ctx context.Context, node string) (*ipseccav1.NodeEvent, error) {
	bundle := s.auth.Root().BundlePEM
	ev := &ipseccav1.NodeEvent{
		Kind:           ipseccav1.NodeEvent_SNAPSHOT,
		CaBundlePem:    bundle,
		CaBundleSha256: bundleHash(bundle),
	}
	cur, err := s.queries.CurrentCert(ctx, node)
	switch {
	case errors.Is(err, store.ErrNotFound):
		ev.RotationDue = true
		ev.Reason = "no active certificate"
		return ev, nil
	case err != nil:
		return nil, err
	}
	ev.CurrentSerial = cur.Serial
	ev.RotateAfter = timestamppb.New(cur.RotateAfter)
	if !cur.DueAt.IsZero() {
		ev.RotationDue, ev.Reason = true, cur.DueReason
	}
	return ev, nil
}

// Bounds of a report: its inventory, its tunnels (a node has one per
// peer) and each tunnel's strings.
const (
	maxInventory = 256
	maxTunnels   = 4096
	maxTunnelStr = 256
)

func (s nodeService) ReportInventory(
	ctx context.Context,
	req *ipseccav1.ReportInventoryRequest,
) (*ipseccav1.ReportInventoryResponse, error) {
	caller, _ := CallerFrom(ctx)
	if len(req.GetEntries()) > maxInventory {
		return nil, status.Errorf(
			codes.InvalidArgument,
			"inventory of %d entries; at most %d",
			len(req.GetEntries()),
			maxInventory,
		)
	}
	if len(req.GetTunnels()) > maxTunnels {
		return nil, status.Errorf(codes.InvalidArgument, "%d tunnels; at most %d", len(req.GetTunnels()), maxTunnels)
	}
	rep := store.Report{Entries: make([]store.InventoryEntry, 0, len(req.GetEntries())),
		TunnelsReported: req.GetTunnelsReported(), PlutoRestartDue: req.GetPlutoRestartDue()}
	for _, e := range req.GetEntries() {
		rep.Entries = append(
			rep.Entries,
			store.InventoryEntry{
				Nickname: e.GetNickname(),
				Serial:   e.GetSerial(),
				NotAfter: e.GetNotAfter().AsTime().UTC(),
				Trust:    e.GetTrust(),
				Subject:  e.GetSubject(),
			},
		)
	}
	for _, t := range req.GetTunnels() {
		for _, v := range []string{t.GetPeer(), t.GetPeerAddress(), t.GetPeerKeyId(), t.GetLocalSerial()} {
			if len(v) > maxTunnelStr {
				return nil, status.Errorf(codes.InvalidArgument, "a tunnel field of %d bytes; at most %d",
					len(v), maxTunnelStr)
			}
		}
		if t.GetPeer() == "" {
			return nil, status.Error(codes.InvalidArgument, "a tunnel without a peer")
		}
		rep.Tunnels = append(rep.Tunnels, store.TunnelRecord{
			Peer:            t.GetPeer(),
			PeerAddress:     t.GetPeerAddress(),
			Established:     t.GetEstablished(),
			IKEState:        t.GetIkeState(),
			PeerKeyID:       t.GetPeerKeyId(),
			PeerNotAfter:    optTime(t.GetPeerNotAfter()),
			AuthenticatedAt: optTime(t.GetAuthenticatedAt()),
			ChildSAs:        t.GetChildSas(),
			ChildAddedAt:    optTime(t.GetChildAddedAt()),
			LocalSerial:     t.GetLocalSerial(),
		})
	}
	reply, err := s.auth.ReportInventory(ctx, caller.Node, rep)
	if err != nil {
		return nil, s.toStatus(err)
	}
	if s.auth.Root().Rollover != nil {
		s.sched.Wake() // a rollover's gate waits on the nodes' reports
	}
	resp := &ipseccav1.ReportInventoryResponse{RevokedIkeStates: reply.RevokedIKEStates,
		ReauthenticateIkeStates: reply.ReauthenticateIKEStates}
	if !reply.RestartPlutoAt.IsZero() {
		resp.RestartPlutoAt = timestamppb.New(reply.RestartPlutoAt)
	}
	return resp, nil
}

// optTime is t in UTC, or the zero time when t is not set.
func optTime(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime().UTC()
}

func (s adminService) VerifyAudit(
	ctx context.Context,
	_ *ipseccav1.VerifyAuditRequest,
) (*ipseccav1.VerifyAuditResponse, error) {
	n, err := s.queries.VerifyAudit(ctx)
	var ae *store.AuditError
	switch {
	case errors.As(err, &ae):
		return &ipseccav1.VerifyAuditResponse{
			Ok:          false,
			Records:     ae.Seq - 1,
			FirstBadSeq: ae.Seq,
			Problem:     ae.Problem,
		}, nil
	case err != nil:
		return nil, s.toStatus(err)
	}
	return &ipseccav1.VerifyAuditResponse{Ok: true, Records: n}, nil
}

func (s adminService) Rotate(ctx context.Context, req *ipseccav1.RotateRequest) (*ipseccav1.RotateResponse, error) {
	if (req.GetNode() == "") == !req.GetAll() {
		return nil, status.Error(codes.InvalidArgument, "give a node or all, not both")
	}
	spread := req.GetSpread().AsDuration()
	if spread < 0 || spread > 30*24*time.Hour {
		return nil, status.Error(codes.InvalidArgument, "spread must be between 0 and 720h")
	}
	caller, _ := CallerFrom(ctx)
	n, err := s.sched.Force(ctx, req.GetNode(), req.GetAll(), spread, caller.String())
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "node %q has no active certificate", req.GetNode())
	}
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &ipseccav1.RotateResponse{Marked: int32(n)}, nil
}

func (s adminService) ListSchedule(
	ctx context.Context,
	req *ipseccav1.ListScheduleRequest,
) (*ipseccav1.ListScheduleResponse, error) {
	limit := int(req.GetLimit())
	switch {
	case limit < 0 || limit > maxPageSize:
		return nil, status.Errorf(codes.InvalidArgument, "limit must be between 0 and %d", maxPageSize)
	case limit == 0:
		limit = 20
	}
	certs, err := s.queries.Schedule(ctx, limit)
	if err != nil {
		return nil, s.toStatus(err)
	}
	resp := &ipseccav1.ListScheduleResponse{}
	for _, c := range certs {
		e := &ipseccav1.ScheduleEntry{
			Node:     c.Node,
			Serial:   c.Serial,
			NotAfter: timestamppb.New(c.NotAfter),
			DueAt:    timestamppb.New(c.RotateAfter),
			Status:   "scheduled",
		}
		switch {
		case !c.OverdueAt.IsZero():
			e.Status, e.DueAt = "overdue", timestamppb.New(c.DueAt)
		case !c.DueAt.IsZero():
			e.Status, e.DueAt = "due", timestamppb.New(c.DueAt)
		case c.DueReason == "forced":
			e.Status = "forced"
		}
		resp.Entries = append(resp.Entries, e)
	}
	return resp, nil
}

func (s adminService) ListNodes(
	ctx context.Context,
	req *ipseccav1.ListNodesRequest,
) (*ipseccav1.ListNodesResponse, error) {
	names := []string{req.GetNode()}
	if req.GetNode() == "" {
		var err error
		if names, err = s.queries.ActiveNodes(ctx); err != nil {
			return nil, s.toStatus(err)
		}
	}
	resp := &ipseccav1.ListNodesResponse{}
	for _, name := range names {
		info, err := s.queries.Node(ctx, name)
		if errors.Is(err, store.ErrNotFound) && req.GetNode() != "" {
			return nil, status.Errorf(codes.NotFound, "no node %q", name)
		}
		if err != nil {
			return nil, s.toStatus(err)
		}
		n := &ipseccav1.Node{Name: info.Name, CommonName: info.CommonName}
		if !info.ReportedAt.IsZero() {
			n.InventoryReportedAt = timestamppb.New(info.ReportedAt)
		}
		for _, e := range info.Inventory {
			n.Inventory = append(
				n.Inventory,
				&ipseccav1.InventoryEntry{
					Nickname: e.Nickname,
					Serial:   e.Serial,
					NotAfter: timestamppb.New(e.NotAfter),
					Trust:    e.Trust,
					Subject:  e.Subject,
				},
			)
		}
		if cur, err := s.queries.CurrentCert(ctx, name); err == nil {
			n.Current = s.toProto(cur)
		}
		resp.Nodes = append(resp.Nodes, n)
	}
	return resp, nil
}

func (s adminService) GetCA(context.Context, *ipseccav1.GetCARequest) (*ipseccav1.GetCAResponse, error) {
	return caInfo(s.auth.Root(), s.clock.Now()), nil
}

func (s adminService) RenewCA(ctx context.Context, _ *ipseccav1.RenewCARequest) (*ipseccav1.GetCAResponse, error) {
	caller, _ := CallerFrom(ctx)
	r, err := s.auth.RenewRoot(ctx, caller.String())
	if err != nil {
		return nil, s.toStatus(err)
	}
	s.notify.CABundleChanged(r.BundlePEM)
	return caInfo(r, s.clock.Now()), nil
}

func caInfo(r *ca.Root, now time.Time) *ipseccav1.GetCAResponse {
	resp := &ipseccav1.GetCAResponse{BundlePem: r.BundlePEM}
	fillSubordinate(resp, r, now, nil)
	roots, _ := pemutil.ParseCertificates(r.BundlePEM, pemutil.Options{})
	for _, c := range roots {
		sum := sha256.Sum256(c.Raw)
		resp.Roots = append(resp.Roots, &ipseccav1.RootInfo{
			Serial: ca.SerialString(c.SerialNumber), Subject: c.Subject.String(),
			NotBefore: timestamppb.New(c.NotBefore), NotAfter: timestamppb.New(c.NotAfter),
			Sha256Fingerprint: hex.EncodeToString(sum[:]), Current: c.Equal(r.Cert), Role: caRole(r, c),
			SelfSigned: bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil,
		})
	}
	if ro := r.Rollover; ro != nil {
		resp.Rollover = &ipseccav1.RolloverStatus{Phase: ro.Phase, StartedAt: timestamppb.New(ro.StartedAt),
			PhaseAt: timestamppb.New(ro.PhaseAt), Emergency: ro.Emergency, Aborted: ro.Aborted}
	}
	return resp
}

// caRole names what c is to the CA r (RootInfo.role).
func caRole(r *ca.Root, c *x509.Certificate) string {
	switch {
	case c.Equal(r.Cert):
		return "issuing"
	case slices.ContainsFunc(r.Chain, c.Equal):
		return "issuer"
	case r.Other != nil && c.Equal(r.Other) && r.Rollover.Phase == store.RolloverTrust:
		return "incoming"
	case r.Other != nil && c.Equal(r.Other):
		return "outgoing"
	}
	return "previous"
}

func (s nodeService) GetCRL(ctx context.Context, _ *ipseccav1.GetCRLRequest) (*ipseccav1.CRL, error) {
	der, err := s.auth.CRL(ctx)
	if err != nil {
		return nil, s.toStatus(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &ipseccav1.CRL{
		Der:        der,
		NextUpdate: timestamppb.New(crl.NextUpdate),
		Entries:    int32(len(crl.RevokedCertificateEntries)),
	}, nil
}

func (s adminService) RevokeNode(
	ctx context.Context,
	req *ipseccav1.RevokeNodeRequest,
) (*ipseccav1.RevokeNodeResponse, error) {
	if req.GetNode() == "" {
		return nil, status.Error(codes.InvalidArgument, "node is required")
	}
	caller, _ := CallerFrom(ctx)
	n, err := s.auth.RevokeNode(ctx, req.GetNode(), req.GetReason(), caller.String())
	if alreadyRevoked(err) {
		return &ipseccav1.RevokeNodeResponse{AlreadyRevoked: true}, nil
	}
	if err != nil {
		return nil, s.toStatus(err)
	}
	s.notify.Revoked(req.GetNode(), req.GetReason())
	return &ipseccav1.RevokeNodeResponse{Revoked: int32(n)}, nil
}
