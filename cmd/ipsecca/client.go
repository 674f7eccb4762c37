package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"

	"github.com/ipsecca/ipsecca/daemon"
	"github.com/ipsecca/ipsecca/internal/flagnames"
	"github.com/ipsecca/ipsecca/internal/grpcaddr"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// Defaults and environment variables for finding the server.
const (
	envServer      = flagnames.EnvServer
	envDataDir     = flagnames.EnvDataDir
	defaultServer  = "127.0.0.1:8443"
	defaultDataDir = "/var/lib/ipsecca"
)

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// connFlags are the flags that say how to reach the server.
type connFlags struct {
	server   string
	dataDir  string
	caFile   string
	certFile string
	keyFile  string
	timeout  time.Duration

	addr, addrFrom string // the address dial chose, and why (for errors)
}

// adminConnFlags registers the admin connection flags on a command group
// as persistent flags, which its subcommands share.
func adminConnFlags(group *cobra.Command) *connFlags {
	f := new(connFlags)
	f.register(group.PersistentFlags(), true)
	return f
}

// register adds the connection flags; admin commands default the
// credentials to the ones init wrote into the data directory.
func (f *connFlags) register(fs *pflag.FlagSet, admin bool) {
	fs.StringVar(
		&f.server,
		flagnames.Server,
		"",
		"server address host:port, or several replicas' comma-separated (default "+
			"$"+envServer+", else "+defaultServer+")",
	)
	fs.StringVar(&f.caFile, flagnames.CAFile, "", "CA bundle to verify the server with")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "deadline for the call")
	if admin {
		fs.StringVar(
			&f.dataDir,
			flagnames.DataDir,
			"",
			"data directory holding ca.pem and the admin credentials (default "+
				"$"+envDataDir+", else "+defaultDataDir+")",
		)
		fs.StringVar(&f.certFile, "cert", "", "client certificate: the admin's (default DATA-DIR/"+
			daemon.AdminCertFile+")")
		fs.StringVar(&f.keyFile, "key", "", "client key: the admin's (default DATA-DIR/"+daemon.AdminKeyFile+")")
	}
}

func (f *connFlags) resolveAdmin() {
	if f.dataDir == "" {
		f.dataDir = envOr(envDataDir, defaultDataDir)
	}
	if f.caFile == "" {
		f.caFile = filepath.Join(f.dataDir, daemon.CAFile)
	}
	if f.certFile == "" {
		f.certFile = filepath.Join(f.dataDir, daemon.AdminCertFile)
	}
	if f.keyFile == "" {
		f.keyFile = filepath.Join(f.dataDir, daemon.AdminKeyFile)
	}
}

// dial connects over TLS, verifying the server against caFile (and, in
// grpcaddr.Dial, that it holds an ipsecca server certificate, not a node's)
// and presenting certFile/keyFile when set.
func (f *connFlags) dial() (*grpc.ClientConn, error) {
	f.addr, f.addrFrom = f.server, flagnames.Flag(flagnames.Server)
	if f.addr == "" {
		f.addr, f.addrFrom = os.Getenv(envServer), "$"+envServer
	}
	if f.addr == "" {
		f.addr, f.addrFrom = defaultServer, "the default"
	}
	addr := f.addr
	if f.caFile == "" {
		return nil, usageError("--ca-file is required to verify the server")
	}
	caPEM, err := readInput("read CA bundle", f.caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no PEM certificate", f.caFile)
	}
	if _, err := grpcaddr.Split(addr); err != nil {
		return nil, usageError("%v", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if f.certFile != "" || f.keyFile != "" {
		pair, err := loadKeyPair(f.certFile, f.keyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return grpcaddr.Dial(addr, cfg,
		grpcaddr.WithRetry(ipseccav1.AdminService_ServiceDesc.ServiceName, readMethods...),
		grpcaddr.WithRetry(ipseccav1.NodeService_ServiceDesc.ServiceName, "GetCRL", "GetCABundle"))
}

// readMethods are the AdminService calls that only read: the connection
// retries them when the server is unavailable (a replica restarting, a
// leader change), with backoff, as gRPC's retry policy does.
var readMethods = []string{
	"GetCertificate", "ListCertificates", "ListNodes", "ListEvents", "ListSchedule", "VerifyAudit",
	"GetCA", "GetStatus", "MeshStatus", "GetRollover", "ListTokens",
}

// loadKeyPair loads a client certificate and its key. The CA rewrites its
// admin pair (key, then certificate, each file atomically) when it renews
// it or its issuing key changes; a read between the two files finds a key
// that does not match, so that read is tried again a few times.
func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	for attempt := 1; ; attempt++ {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err == nil || attempt == 5 || !strings.Contains(err.Error(), "does not match") {
			return pair, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (f *connFlags) context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), f.timeout)
}
