package server

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/ipsecca/ipsecca/ca"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store"
)

// access is who may call a method.
type access int

const (
	anyone access = iota // authenticated in the handler (a token), or public
	nodeOnly
	adminOnly
)

// methodAccess is the authorization table. A registered method missing
// from it is refused (fail closed).
var methodAccess = map[string]access{
	ipseccav1.NodeService_Enroll_FullMethodName:             anyone,
	ipseccav1.NodeService_GetCABundle_FullMethodName:        anyone,
	ipseccav1.NodeService_GetCRL_FullMethodName:             anyone,
	ipseccav1.AdminService_RevokeNode_FullMethodName:        adminOnly,
	ipseccav1.AdminService_ReadmitNode_FullMethodName:       adminOnly,
	ipseccav1.AdminService_ForgetNode_FullMethodName:        adminOnly,
	ipseccav1.AdminService_RotateAdmin_FullMethodName:       adminOnly,
	ipseccav1.AdminService_RevokeAdmin_FullMethodName:       adminOnly,
	ipseccav1.AdminService_RevokeCertificate_FullMethodName: adminOnly,
	ipseccav1.AdminService_RevokeToken_FullMethodName:       adminOnly,
	ipseccav1.AdminService_ListTokens_FullMethodName:        adminOnly,
	ipseccav1.NodeService_Renew_FullMethodName:              nodeOnly,
	ipseccav1.AdminService_CreateToken_FullMethodName:       adminOnly,
	ipseccav1.AdminService_CreateTokens_FullMethodName:      adminOnly,
	ipseccav1.AdminService_ValidateBundle_FullMethodName:    adminOnly,
	ipseccav1.AdminService_GetStatus_FullMethodName:         adminOnly,
	ipseccav1.AdminService_ListCertificates_FullMethodName:  adminOnly,
	ipseccav1.AdminService_GetCertificate_FullMethodName:    adminOnly,
	ipseccav1.AdminService_ListEvents_FullMethodName:        adminOnly,
	ipseccav1.NodeService_Watch_FullMethodName:              nodeOnly,
	ipseccav1.NodeService_ReportInventory_FullMethodName:    nodeOnly,
	ipseccav1.AdminService_VerifyAudit_FullMethodName:       adminOnly,
	ipseccav1.AdminService_Rotate_FullMethodName:            adminOnly,
	ipseccav1.AdminService_ListSchedule_FullMethodName:      adminOnly,
	ipseccav1.AdminService_ListNodes_FullMethodName:         adminOnly,
	ipseccav1.AdminService_GetCA_FullMethodName:             adminOnly,
	ipseccav1.AdminService_RenewCA_FullMethodName:           adminOnly,
	ipseccav1.AdminService_MeshStatus_FullMethodName:        adminOnly,
	ipseccav1.AdminService_ImportCA_FullMethodName:          adminOnly,
	ipseccav1.AdminService_StartRollover_FullMethodName:     adminOnly,
	ipseccav1.AdminService_GetRollover_FullMethodName:       adminOnly,
	ipseccav1.AdminService_FinishRollover_FullMethodName:    adminOnly,
	ipseccav1.AdminService_AbortRollover_FullMethodName:     adminOnly,
}

// publicPrefixes are the standard services anyone may use (health probes,
// grpcurl discovery).
var publicPrefixes = []string{"/grpc.health.v1.", "/grpc.reflection."}

type callerKey struct{}

// CallerFrom returns the authenticated mTLS caller, if any.
func CallerFrom(ctx context.Context) (ca.Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(ca.Caller)
	return c, ok
}

func (s *Server) authorize(ctx context.Context, method string) (context.Context, error) {
	if err := s.checkMode(method); err != nil {
		return ctx, err
	}
	need, ok := methodAccess[method]
	if !ok {
		for _, p := range publicPrefixes {
			if strings.HasPrefix(method, p) {
				return ctx, nil
			}
		}
		return ctx, status.Errorf(codes.PermissionDenied, "no access rule for %s", method)
	}
	if need == anyone {
		return ctx, nil
	}
	leaf, err := s.verifiedPeer(ctx)
	if err != nil {
		return ctx, err
	}
	caller, err := s.auth.Authenticate(ctx, leaf)
	// A superseded node certificate may only retry the Renew whose reply
	// it lost; Authority.Renew decides whether it did.
	retry := method == ipseccav1.NodeService_Renew_FullMethodName && caller.Kind == store.KindNode &&
		caller.SupersededBy != ""
	if err != nil && !retry {
		return ctx, s.toStatus(err)
	}
	switch {
	case need == nodeOnly && caller.Kind != store.KindNode:
		return ctx, status.Errorf(
			codes.PermissionDenied,
			"this call is for nodes; the client certificate is a %s certificate",
			caller.Kind,
		)
	case need == adminOnly && caller.Kind != store.KindAdmin:
		return ctx, status.Errorf(
			codes.PermissionDenied,
			"this call needs the admin certificate; the client certificate belongs to %s %q",
			caller.Kind,
			caller.Node,
		)
	}
	return context.WithValue(ctx, callerKey{}, caller), nil
}

// verifiedPeer returns the client certificate after verifying it against
// the CA bundle at the clock's time, for client authentication.
func (s *Server) verifiedPeer(ctx context.Context) (*x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "this call needs a client certificate issued by this CA (mTLS)")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil, status.Error(codes.Unauthenticated, "this call needs a client certificate issued by this CA (mTLS)")
	}
	leaf := ti.State.PeerCertificates[0]
	root := s.auth.Root()
	now := s.clock.Now()
	key := chainKey(ti.State.PeerCertificates)
	if s.verified.ok(key, root, now, leaf) {
		return leaf, nil
	}
	inter := x509.NewCertPool()
	for _, c := range ti.State.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         root.Pool(),
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			return nil, status.Errorf(
				codes.Unauthenticated,
				"the client certificate (serial %s) has expired; enrol again with a new token",
				ca.SerialString(leaf.SerialNumber),
			)
		}
		return nil, status.Errorf(
			codes.Unauthenticated,
			"the client certificate (subject %q) was not issued by this CA: %v",
			leaf.Subject.String(),
			err,
		)
	}
	s.verified.add(key, root)
	return leaf, nil
}

// verifiedChains remembers client certificate chains that verified against
// a root, so a node renewing or watching again is not charged an ECDSA
// verification per call. Validity is rechecked on every hit; revocation is
// checked in the store on every call (Authenticate) regardless.
type verifiedChains struct {
	mu sync.Mutex
	m  map[[32]byte]*ca.Root
}

// maxVerifiedChains bounds the cache; it is emptied when full.
const maxVerifiedChains = 100000

func chainKey(certs []*x509.Certificate) [32]byte {
	h := sha256.New()
	for _, c := range certs {
		h.Write(c.Raw)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func (v *verifiedChains) ok(key [32]byte, root *ca.Root, now time.Time, leaf *x509.Certificate) bool {
	v.mu.Lock()
	r := v.m[key]
	v.mu.Unlock()
	return r == root && !now.Before(leaf.NotBefore) && now.Before(leaf.NotAfter)
}

func (v *verifiedChains) add(key [32]byte, root *ca.Root) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil || len(v.m) >= maxVerifiedChains {
		v.m = map[[32]byte]*ca.Root{}
	}
	v.m[key] = root
}

func (s *Server) unaryAuth(
	ctx context.Context,
	req any,
	info *grpc.UnaryServerInfo,
	handler grpc.UnaryHandler,
) (any, error) {
	ctx, err := s.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w wrappedStream) Context() context.Context { return w.ctx }

func (s *Server) streamAuth(
	srv any,
	ss grpc.ServerStream,
	info *grpc.StreamServerInfo,
	handler grpc.StreamHandler,
) error {
	ctx, err := s.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, wrappedStream{ss, ctx})
}
