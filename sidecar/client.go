package sidecar

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/ipsecca/ipsecca/internal/grpcaddr"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// dial connects to the CA server over TLS, trusting bundle and presenting
// pair when given. The connection is lazy: errors show on the first call.
// grpcaddr.Dial accepts only an ipsecca server certificate: a node whose
// certificate names the server's host cannot pose as the CA.
func dial(addr string, bundle []byte, pair *Pair, now func() time.Time) (*grpc.ClientConn, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		return nil, errors.New("sidecar: the CA bundle holds no certificate")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Time: now}
	if pair != nil {
		cfg.Certificates = []tls.Certificate{pair.TLS()}
	}
	// Calls that change nothing retry a replica restarting by themselves;
	// Enroll and Renew issue, and Watch is a stream: those go back to the
	// pass's own backoff.
	conn, err := grpcaddr.Dial(addr, cfg, grpcaddr.WithRetry(ipseccav1.NodeService_ServiceDesc.ServiceName,
		"GetCABundle", "GetCRL"))
	if err != nil {
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	return conn, nil
}

// newCSR makes a PEM CSR for cn with key. The CA builds the subject
// itself, so only the CN and the SAN DNS:<cn> are asked for.
func newCSR(key crypto.Signer, cn string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader,
		&x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn}}, key)
	if err != nil {
		return nil, fmt.Errorf("sidecar: make CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// reasonSuperseded is the server's denial reason for a certificate that is
// no longer the node's active one.
const reasonSuperseded = "certificate-superseded"

// denialReason is the stable reason an ipsecca server gave for a denial
// (its errdetails.ErrorInfo in the ipsecca.io domain), or "".
func denialReason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == "ipsecca.io" {
			return info.GetReason()
		}
	}
	return ""
}
