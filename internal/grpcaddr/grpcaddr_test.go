package grpcaddr

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // joined, or the error's substring
		ok   bool
	}{
		{"h1:8443", "h1:8443", true},
		{" h1:8443 , h2:8443,", "h1:8443 h2:8443", true},
		{"[::1]:8443,127.0.0.1:1", "[::1]:8443 127.0.0.1:1", true},
		{"h1", "want host:port", false},
		{"h1:8443,h2", `"h2"`, false},
		{",", "no server address", false},
	} {
		got, err := Split(tc.in)
		if tc.ok && (err != nil || strings.Join(got, " ") != tc.want) {
			t.Errorf("Split(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Split(%q) error %v, want one containing %s", tc.in, err, tc.want)
		}
	}
}

// A client given a dead replica first and a live one second reaches the
// live one, verifying it under its own address.
func TestDialFailsOver(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	live, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(live)
	defer srv.Stop()
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()

	pool := x509.NewCertPool()
	pool.AddCert(cert)
	conn, err := Dial(deadAddr+","+live.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "ignored.example"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 5 { // round-robin: every call must land on the live one
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("call %d with the first replica down: %v", i, err)
		}
	}
}
