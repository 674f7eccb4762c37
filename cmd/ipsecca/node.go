package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// issueFlags are shared by enroll and renew.
type issueFlags struct {
	conn    connFlags
	csrFile string
	out     string
	caOut   string
	output  *outputFlags
}

func (f *issueFlags) register(cmd *cobra.Command) {
	f.conn.register(cmd.Flags(), false)
	cmd.Flags().StringVar(&f.csrFile, "csr", "", "PEM certificate request (made by openssl, Go or any tool)")
	cmd.Flags().StringVar(&f.out, "out", "", "write the issued certificate (PEM) here (default stdout)")
	cmd.Flags().StringVar(&f.caOut, "ca-out", "", "also write the CA bundle returned by the server here")
	f.output = addOutput(cmd, true)
	cmd.MarkFlagRequired("csr")
	cmd.MarkFlagRequired("ca-file")
}

func (f *issueFlags) readCSR() ([]byte, error) {
	b, err := readInput("--csr", f.csrFile)
	if err != nil {
		return nil, err
	}
	// Refused here, not by the server: the message can name the file.
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, usageError("--csr %s: not a PEM certificate request (want -----BEGIN CERTIFICATE REQUEST-----)",
			f.csrFile)
	}
	if _, err := x509.ParseCertificateRequest(block.Bytes); err != nil {
		return nil, usageError("--csr %s: %v", f.csrFile, err)
	}
	return b, nil
}

// issue reads the CSR, calls the server through call and writes the result.
func (f *issueFlags) issue(
	cmd *cobra.Command,
	op string,
	call func(context.Context, ipseccav1.NodeServiceClient, []byte) (*ipseccav1.IssueResponse, error),
) error {
	csr, err := f.readCSR()
	if err != nil {
		return err
	}
	conn, err := f.conn.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := f.conn.context()
	defer cancel()
	resp, err := call(ctx, ipseccav1.NewNodeServiceClient(conn), csr)
	if err != nil {
		return f.conn.unreachable(rpcError("", err))
	}
	return f.write(cmd, resp)
}

// write stores the certificate (and bundle) and reports.
func (f *issueFlags) write(cmd *cobra.Command, resp *ipseccav1.IssueResponse) error {
	c := resp.GetCertificate()
	if f.out != "" {
		if err := os.WriteFile(f.out, c.GetCertificatePem(), 0o644); err != nil {
			return err
		}
	}
	if f.caOut != "" {
		if err := os.WriteFile(f.caOut, resp.GetCaBundlePem(), 0o644); err != nil {
			return err
		}
	}
	switch {
	case f.output.structured():
		return f.output.data(cmd, resp)
	case f.out == "":
		_, err := cmd.OutOrStdout().Write(c.GetCertificatePem())
		return err
	}
	fmt.Fprintf(
		cmd.ErrOrStderr(),
		"issued %s for %s (serial %s, valid until %s, rotate after %s) -> %s\n",
		c.GetSubject(),
		c.GetNode(),
		c.GetSerial(),
		c.GetNotAfter().AsTime().Format("2006-01-02"),
		c.GetRotateAfter().AsTime().Format("2006-01-02"),
		f.out,
	)
	return nil
}

func newEnrollCmd() *cobra.Command {
	var f issueFlags
	var token, tokenFile string
	cmd := &cobra.Command{
		Use:   "enroll",
		Short: "Get a node certificate for a CSR with a bootstrap token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tokenFile != "" {
				b, err := readInput("--token-file", tokenFile)
				if err != nil {
					return err
				}
				token = strings.TrimSpace(string(b))
			}
			return f.issue(
				cmd,
				"enroll",
				func(ctx context.Context, c ipseccav1.NodeServiceClient, csr []byte) (*ipseccav1.IssueResponse, error) {
					return c.Enroll(ctx, &ipseccav1.EnrollRequest{Token: token, CsrPem: csr})
				},
			)
		},
	}
	f.register(cmd)
	cmd.Flags().
		StringVar(&token, "token", "",
			"bootstrap token (prefer --token-file: command lines are visible to other users)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file holding the bootstrap token")
	cmd.MarkFlagsOneRequired("token", "token-file")
	cmd.MarkFlagsMutuallyExclusive("token", "token-file")
	return cmd
}

func newRenewCmd() *cobra.Command {
	var f issueFlags
	cmd := &cobra.Command{
		Use:   "renew",
		Short: "Renew a node certificate over mTLS with the node's current certificate",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.issue(
				cmd,
				"renew",
				func(ctx context.Context, c ipseccav1.NodeServiceClient, csr []byte) (*ipseccav1.IssueResponse, error) {
					return c.Renew(ctx, &ipseccav1.RenewRequest{CsrPem: csr})
				},
			)
		},
	}
	f.register(cmd)
	// --cert/--key are, as on the admin commands, the client certificate the
	// call authenticates with: here the node's.
	cmd.Flags().StringVar(&f.conn.certFile, "cert", "", "client certificate: the node's current certificate (PEM)")
	cmd.Flags().StringVar(&f.conn.keyFile, "key", "", "client key: the node's current private key (PEM)")
	cmd.MarkFlagRequired("cert")
	cmd.MarkFlagRequired("key")
	return cmd
}
