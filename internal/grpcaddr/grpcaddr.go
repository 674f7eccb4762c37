// Package grpcaddr dials the CA service at one address or at several
// replicas' addresses, so clients fail over on their own, and accepts only
// a server presenting an ipsecca server certificate.
package grpcaddr

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// Split parses a comma-separated list of host:port addresses.
func Split(list string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(list, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("server address %q: %v (want host:port)", a, err)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no server address in %q", list)
	}
	return out, nil
}

// ServerOU is the subject OU the CA puts in its own service certificate
// (ca.Authority.IssueService, kind "server"). Node certificates get a subject
// the CA builds without any OU, so no node can present one, whatever its name.
const ServerOU = "ipsecca server"

// NotServer is in the error of a refused server: gRPC keeps only the text
// of a handshake error, so callers that must tell this case apart match it.
const NotServer = "is not an ipsecca server certificate"

// VerifyServerKind refuses a server whose leaf certificate is not an
// ipsecca server certificate. Node certificates chain to the same root and
// carry serverAuth (libreswan may need it), so a node enrolled under the
// server's host name (say "localhost") passes chain and name checks: only
// the certificate's kind tells it from the CA. Use it as a client's
// tls.Config.VerifyConnection, which runs after those checks.
func VerifyServerKind(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the server presented no certificate: refusing to talk to it")
	}
	leaf := cs.PeerCertificates[0]
	if !slices.Contains(leaf.Subject.OrganizationalUnit, ServerOU) {
		// No quotes: gRPC quotes the handshake error once more.
		return fmt.Errorf("the server's certificate %s (subject %s, without OU=%s): refusing to talk to it",
			NotServer, leaf.Subject.String(), ServerOU)
	}
	return nil
}

// RequireServer returns a copy of cfg that also runs VerifyServerKind, after
// cfg's own VerifyConnection when it has one.
func RequireServer(cfg *tls.Config) *tls.Config {
	cfg = cfg.Clone()
	prev := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		return VerifyServerKind(cs)
	}
	return cfg
}

// Option adds to what Dial configures.
type Option func(*serviceConfig)

// serviceConfig is the part of gRPC's service config
// (https://github.com/grpc/grpc/blob/master/doc/service_config.md) Dial writes.
type serviceConfig struct {
	LoadBalancingConfig []map[string]struct{} `json:"loadBalancingConfig,omitempty"`
	MethodConfig        []methodConfig        `json:"methodConfig,omitempty"`
}

type methodConfig struct {
	Name        []methodName `json:"name"`
	RetryPolicy retryPolicy  `json:"retryPolicy"`
}

type methodName struct {
	Service string `json:"service"`
	Method  string `json:"method"`
}

type retryPolicy struct {
	MaxAttempts          int      `json:"maxAttempts"`
	InitialBackoff       string   `json:"initialBackoff"`
	MaxBackoff           string   `json:"maxBackoff"`
	BackoffMultiplier    float64  `json:"backoffMultiplier"`
	RetryableStatusCodes []string `json:"retryableStatusCodes"`
}

// WithRetry retries the named methods of service (full name, e.g.
// "ipsecca.v1.AdminService") when they fail UNAVAILABLE: a replica
// restarting or a leader change. Only for calls that change nothing.
func WithRetry(service string, methods ...string) Option {
	return func(sc *serviceConfig) {
		mc := methodConfig{RetryPolicy: retryPolicy{
			MaxAttempts: 4, InitialBackoff: "0.25s", MaxBackoff: "2s", BackoffMultiplier: 2,
			RetryableStatusCodes: []string{"UNAVAILABLE"},
		}}
		for _, m := range methods {
			mc.Name = append(mc.Name, methodName{Service: service, Method: m})
		}
		sc.MethodConfig = append(sc.MethodConfig, mc)
	}
}

// Dial returns a lazy TLS connection to list: one host:port (a DNS name
// with several records is tried record by record), or several
// comma-separated replicas, spread over round-robin and skipped while
// down. Each address is verified under its own host name; cfg.ServerName
// is ignored. Only a server presenting an ipsecca server certificate is
// accepted (RequireServer).
func Dial(list string, cfg *tls.Config, opts ...Option) (*grpc.ClientConn, error) {
	addrs, err := Split(list)
	if err != nil {
		return nil, err
	}
	var sc serviceConfig
	for _, o := range opts {
		o(&sc)
	}
	cfg = RequireServer(cfg)
	if len(addrs) == 1 {
		host, _, _ := net.SplitHostPort(addrs[0])
		cfg.ServerName = host
		return grpc.NewClient(addrs[0], grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
			withServiceConfig(sc))
	}
	cfg.ServerName = "" // per address, from resolver.Address.ServerName
	r := manual.NewBuilderWithScheme("ipsecca-replicas")
	var state resolver.State
	for _, a := range addrs {
		host, _, _ := net.SplitHostPort(a)
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a, ServerName: host})
	}
	r.InitialState(state)
	sc.LoadBalancingConfig = []map[string]struct{}{{"round_robin": {}}}
	return grpc.NewClient(r.Scheme()+":///replicas", grpc.WithResolvers(r),
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)), withServiceConfig(sc))
}

func withServiceConfig(sc serviceConfig) grpc.DialOption {
	b, err := json.Marshal(sc)
	if err != nil {
		panic(err) // plain structs
	}
	return grpc.WithDefaultServiceConfig(string(b))
}
