package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ipsecca/ipsecca/internal/grpcaddr"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

func newStatusCmd() *cobra.Command {
	var conn connFlags
	var out *outputFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the store backend, the replicas (which one leads, each one's health) and the etcd members",
		Long: `status asks one replica (any of --server) for the cluster's state (and that replica's FIPS
140-3 mode: off, on or only, with the Go Cryptographic Module's version): the
replicas holding a live session in the store, the one leading (it runs the
rotation scheduler and CA renewal) and, on etcd, every member's health. It
then checks each replica's readiness itself (the gRPC health of its node
service, NOT_SERVING while it cannot reach etcd), over TLS against the CA
bundle. Exit status 1 when a replica or an etcd member is unhealthy.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp *ipseccav1.GetStatusResponse
			if err := adminCall(&conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
				var err error
				if resp, err = c.GetStatus(ctx, &ipseccav1.GetStatusRequest{}); err != nil {
					return rpcError("", err)
				}
				return nil
			}); err != nil {
				return err
			}
			if out.structured() {
				return out.data(cmd, resp)
			}
			caPEM, err := readInput("read CA bundle", conn.caFile)
			if err != nil {
				return err
			}
			bad := 0
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "backend: %s\nleader: %s\nversion: %s\nfips140: %s\n\n", resp.GetBackend(),
				orNone(resp.GetLeader()), versionOf(resp.GetVersion(), resp.GetRevision()), fipsOf(resp))
			t := newTable("REPLICA", "ADDRESS", "ROLE", "HEALTH", "VERSION", "STARTED")
			for _, r := range resp.GetReplicas() {
				role := "follower"
				if r.GetLeader() {
					role = "leader"
				}
				health := replicaHealth(r.GetAddress(), caPEM)
				if health != "SERVING" {
					bad++
				}
				t.row(r.GetId(), r.GetAddress(), role, health, versionOf(r.GetVersion(), r.GetRevision()),
					fmtTime(r.GetStartedAt()))
			}
			if err := out.table(w, t); err != nil {
				return err
			}
			if len(resp.GetMembers()) > 0 {
				fmt.Fprintln(w)
				t = newTable("ETCD MEMBER", "ENDPOINT", "ROLE", "HEALTH", "DB SIZE", "RAFT INDEX")
				for _, m := range resp.GetMembers() {
					role, health := "follower", "healthy"
					if m.GetLeader() {
						role = "leader"
					}
					if !m.GetHealthy() {
						health, role = "UNHEALTHY: "+m.GetError(), "-"
						bad++
					}
					t.row(m.GetName(), m.GetEndpoint(), role, health, m.GetDbSize(), m.GetRaftIndex())
				}
				if err := out.table(w, t); err != nil {
					return err
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d unhealthy (see above)", bad)
			}
			return nil
		},
	}
	conn.register(cmd.Flags(), true)
	out = addOutput(cmd, true)
	return cmd
}

// versionOf is a build's version with the start of its revision: replicas
// of one release built from different commits differ.
func versionOf(version, revision string) string {
	switch {
	case version == "":
		return "(unknown)"
	case len(revision) > 12:
		return version + " (" + revision[:12] + ")"
	case revision != "":
		return version + " (" + revision + ")"
	}
	return version
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// replicaHealth is the gRPC health status of the node service of the
// replica at addr: its readiness, which follows the store. Like every
// client, it accepts only an ipsecca server certificate (grpcaddr.Dial).
func replicaHealth(addr string, caPEM []byte) string {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conn, err := grpcaddr.Dial(addr, &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool})
	if err != nil {
		return "UNREACHABLE: " + err.Error()
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).
		Check(ctx, &healthpb.HealthCheckRequest{Service: ipseccav1.NodeService_ServiceDesc.ServiceName})
	switch {
	case err != nil && strings.Contains(err.Error(), grpcaddr.NotServer):
		return "REFUSED: " + grpcaddr.NotServer // something else answers at the replica's address
	case err != nil:
		return "UNREACHABLE"
	}
	return resp.GetStatus().String()
}

// fipsOf is the answering server's FIPS 140-3 mode as status prints it:
// "off", or "on (module v1.0.0)"; "unknown" from a server too old to say.
func fipsOf(resp *ipseccav1.GetStatusResponse) string {
	switch mode := resp.GetFips140(); mode {
	case "":
		return "unknown"
	case "off":
		return mode
	default:
		return mode + " (module " + resp.GetFips140Module() + ")"
	}
}
