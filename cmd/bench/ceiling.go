package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// The ceiling of this host: the bench re-runs itself as a minimal
// gRPC+TLS signer (no token, no policy, no storage, no audit) in its own
// process and drives it with the same clients as `ipsecca serve`. What
// that reaches is the most any durable CA can reach here with the client
// on the same cores, so a gap between it and the in-process limit belongs
// to the host and the transport, not to ipsecca.

// minimalSignerEnv tells a re-executed bench to serve as the minimal
// signer, writing its CA certificate to the named file.
const minimalSignerEnv = "IPSECCA_BENCH_MINIMAL_SIGNER"

type minimalSigner struct {
	ipseccav1.UnimplementedNodeServiceServer
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	caPEM  []byte
	serial int64
}

// Enroll parses the CSR, checks its signature and signs a leaf: the
// in-process limit's work behind one gRPC call.
func (m *minimalSigner) Enroll(_ context.Context, req *ipseccav1.EnrollRequest) (*ipseccav1.IssueResponse, error) {
	b, _ := pem.Decode(req.GetCsrPem())
	if b == nil {
		return nil, status.Error(codes.InvalidArgument, "no PEM")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	now := time.Now()
	serial := make([]byte, 16)
	rand.Read(serial)
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes(serial),
		Subject:      pkix.Name{Organization: []string{"ipsecca"}, CommonName: csr.Subject.CommonName},
		NotBefore:    now,
		NotAfter:     now.AddDate(5, 0, 0),
		DNSNames:     []string{csr.Subject.CommonName},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{
			x509.ExtKeyUsageServerAuth,
			x509.ExtKeyUsageClientAuth,
		},
		AuthorityKeyId: m.cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.cert, csr.PublicKey, m.key)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &ipseccav1.IssueResponse{
		Certificate: &ipseccav1.Certificate{
			CertificatePem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		},
		CaBundlePem: m.caPEM,
	}, nil
}

// serveMinimalSigner runs the minimal signer on addr until killed.
func serveMinimalSigner(addr, caFile string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench minimal signer"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, SubjectKeyId: []byte{1, 2, 3, 4}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		fatal("%v", err)
	}
	cert, _ := x509.ParseCertificate(der)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		fatal("%v", err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS13})))
	ipseccav1.RegisterNodeServiceServer(srv, &minimalSigner{cert: cert, key: key, caPEM: caPEM})
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		fatal("%v", err)
	}
	if err := srv.Serve(lis); err != nil {
		fatal("%v", err)
	}
}

// ceilingRows starts the minimal signer in its own process and drives it
// at each concurrency level, like enrolLoad.
func ceilingRows(c config, limit float64, base *baseline) []row {
	self, err := os.Executable()
	if err != nil {
		fatal("%v", err)
	}
	tmp, _ := os.MkdirTemp("", "ipsecca-bench-ceiling-")
	defer os.RemoveAll(tmp)
	s := &server{addr: freeAddr()}
	caFile := filepath.Join(tmp, "ca.pem")
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), minimalSignerEnv+"="+s.addr+","+caFile)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		fatal("%v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for start := time.Now(); s.caPEM == nil; time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			fatal("the minimal signer did not start")
		}
		s.caPEM, _ = os.ReadFile(caFile)
	}
	// No tokens here, so CSRs can be reused: the signer keeps nothing.
	ps := makeCSRs(4096, "ceiling")
	var rows []row
	for _, conc := range c.concurrency {
		clients := s.conns(conc/8 + 1)
		cpu0 := cpuSeconds([]int{cmd.Process.Pid})[0]
		rate, p50, p99, n := load(conc, c.duration, 1<<62, func(w, i int) error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := clients[w%len(clients)].Enroll(ctx, &ipseccav1.EnrollRequest{CsrPem: ps[i%len(ps)].csr})
			return err
		})
		us := perCert(cpuSeconds([]int{cmd.Process.Pid})[0]-cpu0, n)
		say(
			"ceiling: minimal signer (no storage) at %d in flight: %.0f/s, p50 %.2f ms, p99 %.2f ms, server CPU %.0f "+
				"µs/cert",
			conc,
			rate,
			p50,
			p99,
			us,
		)
		rows = append(rows, row{Name: fmt.Sprintf("ceiling: minimal gRPC+TLS signer, no storage, %d in flight", conc),
			Rate: rate, P50: p50, P99: p99, Ratio: rate / limit, CPUus: us})
		base.Ceiling[conc] = rows[len(rows)-1]
	}
	return rows
}
