package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/ipsecca/ipsecca/internal/atomicfile"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

func newAdminCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "admin", Short: "Rotate or revoke admin credentials"}
	conn := adminConnFlags(cmd)
	out := new(outputFlags)

	rotate := &cobra.Command{
		Use: "rotate",
		Short: "Replace the admin certificate and key in use (--cert/--key) with new ones; the old certificate " +
			"authenticates no more",
		Long: "rotate makes a new key here, has the CA issue an admin certificate for it and writes both over the " +
			"files\n" +
			"the call was made with (DATA-DIR/admin.pem and admin-key.pem by default). From then on only the new\n" +
			"certificate is accepted; revoke the old one with 'ipsecca admin revoke SERIAL' to list it in the CRL.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn.resolveAdmin()
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return err
			}
			der, err := x509.CreateCertificateRequest(
				rand.Reader,
				&x509.CertificateRequest{Subject: pkix.Name{CommonName: "ipsecca admin"}},
				key,
			)
			if err != nil {
				return err
			}
			keyDER, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return err
			}
			keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
			// The new key is on disk before the CA supersedes the old
			// certificate, so a failure after the call leaves both halves.
			next := conn.keyFile + ".next"
			if err := atomicfile.WriteFile(next, keyPEM, 0o600); err != nil {
				return err
			}
			var resp *ipseccav1.IssueResponse
			err = adminCall(conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
				resp, err = c.RotateAdmin(
					ctx,
					&ipseccav1.RotateAdminRequest{
						CsrPem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
					},
				)
				return err
			})
			if err != nil {
				os.Remove(next)
				return rpcError("", err)
			}
			c := resp.GetCertificate()
			if err := atomicfile.WriteFile(conn.certFile+".next", c.GetCertificatePem(), 0o600); err != nil {
				return fmt.Errorf(
					"admin rotate: the CA issued %s but writing it failed (%w); its key is in %s",
					c.GetSerial(),
					err,
					next,
				)
			}
			if err := os.Rename(next, conn.keyFile); err != nil {
				return err
			}
			if err := os.Rename(conn.certFile+".next", conn.certFile); err != nil {
				return err
			}
			return out.print(cmd, resp, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "rotated the admin credential: %s and %s hold serial %s (valid until %s); "+
					"the previous certificate no longer authenticates\n", conn.certFile, conn.keyFile, c.GetSerial(),
					c.GetNotAfter().AsTime().Format("2006-01-02"))
				return err
			})
		},
	}

	var reason string
	revoke := &cobra.Command{
		Use: "revoke SERIAL",
		Short: "Revoke an admin certificate (not the one this call is made with): it no longer authenticates and is " +
			"listed in the CRL",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return adminCall(conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
				resp, err := c.RevokeAdmin(ctx, &ipseccav1.RevokeAdminRequest{Serial: args[0], Reason: reason})
				if err != nil {
					return rpcError("admin certificate "+args[0], err)
				}
				return out.print(cmd, resp, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "revoked admin certificate %s (%s)\n",
						resp.GetCertificate().GetSerial(), resp.GetCertificate().GetSubject())
					return err
				})
			})
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log)")
	out.register(rotate, false)
	out.register(revoke, false)
	cmd.AddCommand(rotate, revoke)
	return cmd
}
