// Package server is the gRPC front door of the CA: thin handlers over the
// ca.Authority and the store's queries, mTLS authentication, the
// authorization table, limits, metrics, the Watch hub, and the one mapping
// from domain errors to gRPC status codes. It assembles no process: package
// daemon builds one around it (store, root, data directory, TLS material,
// scheduler, listeners).
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/ipsecca/ipsecca/ca"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store"
)

// Authority is the CA core as the handlers use it.
type Authority interface {
	EnrollWithToken(ctx context.Context, token string, csrPEM []byte) (*store.Cert, error)
	Renew(ctx context.Context, caller ca.Caller, csrPEM []byte) (*store.Cert, error)
	CreateToken(ctx context.Context, node, cn string, ttl time.Duration, actor string) (string, *store.Token, error)
	Authenticate(ctx context.Context, leaf *x509.Certificate) (ca.Caller, error)
	Root() *ca.Root
	RenewRoot(ctx context.Context, actor string) (*ca.Root, error)
	RevokeNode(ctx context.Context, node, reason, actor string) (int, error)
	ReadmitNode(ctx context.Context, node, actor string) error
	ForgetNode(ctx context.Context, node, actor string) ([]string, error)
	RotateAdmin(ctx context.Context, caller ca.Caller, csrPEM []byte) (*store.Cert, error)
	RevokeAdmin(ctx context.Context, caller ca.Caller, serial, reason string) (*store.Cert, error)
	RevokeCertificate(ctx context.Context, caller ca.Caller, serial, reason string) (store.CertRevocation, error)
	RevokeToken(ctx context.Context, id, actor string) (*store.Token, bool, error)
	CRL(ctx context.Context) ([]byte, error)
	Record(ctx context.Context, ev store.Event) error
	ReportInventory(ctx context.Context, node string, rep store.Report) (*ca.ReportReply, error)
	MeshStatus(ctx context.Context, now time.Time) (*ca.Mesh, error)
	StartRollover(ctx context.Context, opts ca.RolloverOptions, actor string) (*ca.Root, error)
	RolloverStatus(ctx context.Context, now time.Time) (*ca.RolloverReport, error)
	FinishRollover(ctx context.Context, force bool, actor string) (*ca.Root, int, error)
	AbortRollover(ctx context.Context, actor string) (*ca.Root, error)
	ImportSubordinate(ctx context.Context, certPEM, chainPEM []byte, actor string) (*ca.Root, *ca.SubordinateImport,
		error)
}

// Queries are the read-only store calls behind the admin listings.
type Queries interface {
	Cert(ctx context.Context, serial string) (*store.Cert, error)
	ListCerts(ctx context.Context, f store.CertFilter) ([]*store.Cert, string, error)
	ListEvents(ctx context.Context, f store.EventFilter) ([]*store.Event, bool, error)
	VerifyAudit(ctx context.Context) (uint64, error)
	CurrentCert(ctx context.Context, node string) (*store.Cert, error)
	ActiveNodes(ctx context.Context) ([]string, error)
	Node(ctx context.Context, name string) (*store.NodeInfo, error)
	Schedule(ctx context.Context, limit int) ([]*store.Cert, error)
	ListTokens(ctx context.Context, f store.TokenFilter) ([]*store.Token, string, error)
}

// Scheduler is the rotation scheduler as the admin calls use it.
type Scheduler interface {
	Force(ctx context.Context, node string, all bool, spread time.Duration, actor string) (int, error)
	// Wake makes the scheduler step now (a rollover's phase changed).
	Wake()
}

// Cluster is a store shared by several replicas, as GetStatus reports it.
type Cluster interface {
	// ClusterStatus reports the replicas and the store's own cluster.
	ClusterStatus(ctx context.Context) (*store.ClusterStatus, error)
}

// Notifier is told about changes made through the API that nodes' Watch
// streams must hear of.
type Notifier interface {
	CABundleChanged(bundlePEM []byte)
	Revoked(node, reason string)
}

var _ Authority = (*ca.Authority)(nil)

// Limits of the gRPC server.
const (
	// MaxRecvMsgSize bounds a request; CSRs are limited further by ca.MaxCSRBytes.
	MaxRecvMsgSize = 1 << 20
	// MaxConcurrentStreams bounds streams per connection.
	MaxConcurrentStreams = 256
	// HandshakeTimeout bounds the TLS handshake.
	HandshakeTimeout = 10 * time.Second
	// MaxConnectionIdle closes connections idle this long.
	MaxConnectionIdle = 15 * time.Minute
)

// Deps are the Server's collaborators.
type Deps struct {
	Authority Authority
	Queries   Queries
	Scheduler Scheduler
	Hub       *Hub     // Watch streams
	Notifier  Notifier // told when RenewCA changes the bundle or RevokeNode revokes; the Hub when nil
	Clock     ca.Clock
	Logger    *slog.Logger
	Limits    Limits // zero fields: off (serve's flags default to DefaultLimits)
	Mode      Mode   // ModeFull when empty
	// Cluster, when the store is shared by replicas, answers GetStatus.
	Cluster Cluster
	// Self is this replica, for GetStatus.
	Self store.Replica
}

// Server holds the handlers' dependencies.
type Server struct {
	auth     Authority
	queries  Queries
	sched    Scheduler
	hub      *Hub
	notify   Notifier
	clock    ca.Clock
	log      *slog.Logger
	metrics  *metrics
	limit    *limiter
	mode     Mode
	verified verifiedChains
	cluster  Cluster
	self     store.Replica
}

// New returns a Server.
func New(d Deps) *Server {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Hub == nil {
		d.Hub = NewHub()
	}
	if d.Notifier == nil {
		d.Notifier = d.Hub
	}
	s := &Server{
		auth:    d.Authority,
		queries: d.Queries,
		sched:   d.Scheduler,
		hub:     d.Hub,
		notify:  d.Notifier,
		clock:   d.Clock,
		log:     d.Logger,
		metrics: newMetrics(),
		limit:   newLimiter(d.Limits),
		mode:    d.Mode,
		cluster: d.Cluster,
		self:    d.Self,
	}
	if ts, ok := d.Queries.(TxnStats); ok {
		s.metrics.registerTxnStats(ts)
	}
	if ms, ok := d.Queries.(MetricsStore); ok {
		s.metrics.registry.MustRegister(&stateCollector{st: ms, auth: d.Authority, hub: d.Hub, clock: d.Clock,
			policy: policyOf(d.Scheduler)})
	}
	return s
}

// GRPCServer builds the gRPC server with the services, the standard
// health service and reflection. Client certificates are requested but
// verified by the authorization interceptor (against the CA bundle at the
// injected clock's time), so a bad one gets a clear Unauthenticated
// instead of a failed handshake.
func (s *Server) GRPCServer(
	getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error),
) (*grpc.Server, *health.Server) {
	tlsCfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		ClientAuth:     tls.RequestClientCert,
		GetCertificate: getCert,
	}
	g := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.MaxRecvMsgSize(MaxRecvMsgSize),
		// TLS buffers each record already: gRPC's own 32 KiB read buffer per
		// connection was a third of an idle Watch stream's memory (issue #23).
		grpc.ReadBufferSize(0),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.ConnectionTimeout(HandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: MaxConnectionIdle}),
		grpc.KeepaliveEnforcementPolicy(
			keepalive.EnforcementPolicy{MinTime: 20 * time.Second, PermitWithoutStream: true},
		),
		// The gRPC metrics come first (outermost), so calls the
		// authorization refuses are counted too, with their code.
		grpc.ChainUnaryInterceptor(s.metrics.grpc.UnaryServerInterceptor(), s.unaryAuth),
		grpc.ChainStreamInterceptor(s.metrics.grpc.StreamServerInterceptor(), s.streamAuth),
	)
	ipseccav1.RegisterNodeServiceServer(g, nodeService{Server: s})
	ipseccav1.RegisterAdminServiceServer(g, adminService{Server: s})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	for _, name := range []string{
		"", ipseccav1.NodeService_ServiceDesc.ServiceName, ipseccav1.AdminService_ServiceDesc.ServiceName,
	} {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	reflection.Register(g)
	// Every method's series exist from the start (at 0), so rate() and
	// alerts on denials work before the first call.
	s.metrics.grpc.InitializeMetrics(g)
	return g, hs
}
