package server

import (
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipsecca/ipsecca/rotation"
)

// newGRPCMetrics makes the gRPC server metrics (go-grpc-middleware's
// Prometheus provider): grpc_server_started_total,
// grpc_server_handled_total{grpc_code}, grpc_server_msg_received_total,
// grpc_server_msg_sent_total and the grpc_server_handling_seconds
// histogram, each by grpc_service, grpc_method and grpc_type.
func newGRPCMetrics() *grpcprom.ServerMetrics {
	return grpcprom.NewServerMetrics(
		grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(prometheus.DefBuckets)),
	)
}

// policyOf is the rotation policy of sched when it has one (the rotation
// scheduler), else the default: the metrics say when the root renews.
func policyOf(sched Scheduler) rootRenewer {
	if p, ok := sched.(interface{ Policy() rotation.Policy }); ok {
		return p.Policy()
	}
	return rotation.DefaultPolicy
}
