// Package grpcaddr dials the CA service at one address or at several
// replicas' addresses, so clients fail over on their own.
package grpcaddr

import (
	"crypto/tls"
	"fmt"
	"net"
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

// Dial returns a lazy TLS connection to list: one host:port (a DNS name
// with several records is tried record by record), or several
// comma-separated replicas, spread over round-robin and skipped while
// down. Each address is verified under its own host name; cfg.ServerName
// is ignored.
func Dial(list string, cfg *tls.Config) (*grpc.ClientConn, error) {
	addrs, err := Split(list)
	if err != nil {
		return nil, err
	}
	cfg = cfg.Clone()
	if len(addrs) == 1 {
		host, _, _ := net.SplitHostPort(addrs[0])
		cfg.ServerName = host
		return grpc.NewClient(addrs[0], grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	cfg.ServerName = "" // per address, from resolver.Address.ServerName
	r := manual.NewBuilderWithScheme("ipsecca-replicas")
	var state resolver.State
	for _, a := range addrs {
		host, _, _ := net.SplitHostPort(a)
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a, ServerName: host})
	}
	r.InitialState(state)
	return grpc.NewClient(r.Scheme()+":///replicas", grpc.WithResolvers(r), grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
}
