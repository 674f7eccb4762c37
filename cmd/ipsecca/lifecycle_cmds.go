package main

// Token and certificate lifecycle commands: token list, token revoke,
// certs revoke. Each constructor makes a whole command with its own
// connection and output flags, for the token and certs groups to add.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ipsecca/ipsecca/ca"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// newTokenListCmd is "token list": the tokens that can still admit a node,
// or every token with --all. Never the secret: it is shown once, by token
// create, and stored only as a hash.
func newTokenListCmd() *cobra.Command {
	var conn connFlags
	var all bool
	var node string
	var limit int
	var out *outputFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List bootstrap tokens that can still admit a node (--all: used, expired and revoked too)",
		Long: `list shows bootstrap tokens by id (the part of the token before the dot), never
their secret. By default only tokens that can still admit a node: not used,
not expired, not revoked. --all shows every token with its state.`,
		Example: `  ipsecca token list
  ipsecca token list --all --node node-a -o wide`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usageError("--limit %d: want 0 (all) or more", limit)
			}
			return adminCall(&conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
				all, err := listTokens(ctx, c, &ipseccav1.ListTokensRequest{All: all, Node: node}, limit)
				if err != nil {
					return err
				}
				t := newTable("ID", "NODE", "CN", "STATE", "CREATED", "EXPIRES", "CREATED BY*", "USED FOR*",
					"REVOKED BY*")
				for _, tok := range all.GetTokens() {
					t.row(tok.GetId(), tok.GetNode(), tok.GetCommonName(), tok.GetState(), fmtTime(tok.GetCreatedAt()),
						fmtTime(tok.GetExpiresAt()), tok.GetCreatedBy(), dash(tok.GetUsedFor()),
						dash(tok.GetRevokedBy()))
				}
				return out.list(cmd, all, t)
			})
		},
	}
	conn.register(cmd.Flags(), true)
	cmd.Flags().BoolVar(&all, "all", false, "every token, used, expired and revoked ones too")
	cmd.Flags().StringVarP(&node, "node", "n", "", "only this node's tokens")
	cmd.Flags().IntVar(&limit, "limit", 0, "show at most this many (0: all)")
	out = addOutput(cmd, false)
	return cmd
}

// listTokens reads every page (or up to limit tokens).
func listTokens(
	ctx context.Context,
	c ipseccav1.AdminServiceClient,
	req *ipseccav1.ListTokensRequest,
	limit int,
) (*ipseccav1.ListTokensResponse, error) {
	all := &ipseccav1.ListTokensResponse{}
	req.PageSize = 1000
	for {
		resp, err := c.ListTokens(ctx, req)
		if err != nil {
			return nil, rpcError(nodeWhat(req.GetNode()), err)
		}
		all.Tokens = append(all.Tokens, resp.GetTokens()...)
		req.PageToken = resp.GetNextPageToken()
		if req.PageToken == "" || (limit > 0 && len(all.Tokens) >= limit) {
			break
		}
	}
	if limit > 0 && len(all.Tokens) > limit {
		all.Tokens = all.Tokens[:limit]
	}
	return all, nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// newTokenRevokeCmd is "token revoke ID": the token admits no node any
// more. Revoking a revoked token succeeds and says so.
func newTokenRevokeCmd() *cobra.Command {
	var conn connFlags
	var out *outputFlags
	cmd := &cobra.Command{
		Use:   "revoke TOKEN_ID",
		Short: "Revoke an unused bootstrap token: it admits no node any more",
		Long: `revoke takes the token's id (the part before the dot, as token list shows it) or
the whole token. A node enrolling with a revoked token is refused (exit 1,
token-revoked). Revoking a revoked token succeeds and says "already revoked";
a used token cannot be revoked: revoke the certificate it was used for
(ipsecca certs revoke SERIAL).`,
		Example: `  ipsecca token revoke 3f2a9c01d4e5b6a7`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return adminCall(&conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
				id, _, _ := strings.Cut(strings.TrimSpace(args[0]), ".") // never send the secret
				resp, err := c.RevokeToken(ctx, &ipseccav1.RevokeTokenRequest{Id: id})
				if err != nil {
					return rpcError("token "+id, err)
				}
				return out.print(cmd, resp, func(w io.Writer) error {
					tok := resp.GetToken()
					if resp.GetAlready() {
						_, err := fmt.Fprintf(w, "token %s (node %s) already revoked\n", tok.GetId(), tok.GetNode())
						return err
					}
					_, err := fmt.Fprintf(w, "token %s (node %s) revoked\n", tok.GetId(), tok.GetNode())
					return err
				})
			})
		},
	}
	conn.register(cmd.Flags(), true)
	out = addOutput(cmd, false)
	return cmd
}

// reasonNames are the revocation reasons certs revoke takes.
func reasonNames() []string {
	names := make([]string, len(ca.RevocationReasons))
	for i, r := range ca.RevocationReasons {
		names[i] = r.Name
	}
	return names
}

// newCertsRevokeCmd is "certs revoke SERIAL --reason R", like step ca
// revoke and vault pki revoke.
func newCertsRevokeCmd() *cobra.Command {
	var conn connFlags
	var reason string
	var out *outputFlags
	cmd := &cobra.Command{
		Use:   "revoke SERIAL",
		Short: "Revoke a certificate by serial, with an RFC 5280 reason carried in the CRL",
		Long: `revoke lists the certificate in the CA's CRL (on the gRPC door and in the
Kubernetes CA-bundle ConfigMap) with the reason's code. SERIAL is hex, with or
without colons (as openssl prints it).

Revoking a node's current certificate revokes the node, as 'ipsecca nodes
revoke' does: every unexpired certificate of the node is revoked, its unused
tokens are void, and it gets no certificate through any door until an admin
re-admits it ('ipsecca nodes readmit NODE', then a new token). A node never
keeps a live credential after its certificate is revoked. Any other
certificate (a superseded one, an admin's) is revoked alone.

Revoking a revoked certificate succeeds and says "already revoked".
certificateHold is not supported: a revocation here is final.`,
		Example: `  ipsecca certs revoke 5f:3a:9c:01 --reason keyCompromise
  ipsecca certs revoke 5f3a9c01 --reason superseded -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := ca.ParseSerial(args[0]); err != nil {
				return usageError("%s", denialDetail(err))
			}
			if _, err := ca.ParseRevocationReason(reason); err != nil {
				return usageError("--reason: %s", denialDetail(err))
			}
			return adminCall(&conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
				resp, err := c.RevokeCertificate(ctx,
					&ipseccav1.RevokeCertificateRequest{Serial: args[0], Reason: reason})
				if err != nil {
					return rpcError("certificate "+args[0], err)
				}
				return out.print(cmd, resp, func(w io.Writer) error {
					return printCertRevocation(w, resp)
				})
			})
		},
	}
	conn.register(cmd.Flags(), true)
	cmd.Flags().StringVar(&reason, "reason", "unspecified",
		"RFC 5280 reason: "+strings.Join(reasonNames(), ", "))
	_ = cmd.RegisterFlagCompletionFunc("reason",
		cobra.FixedCompletions(reasonNames(), cobra.ShellCompDirectiveNoFileComp))
	out = addOutput(cmd, false)
	return cmd
}

func printCertRevocation(w io.Writer, resp *ipseccav1.RevokeCertificateResponse) error {
	c := resp.GetCertificate()
	var err error
	switch {
	case resp.GetAlready():
		_, err = fmt.Fprintf(w, "certificate %s (%s %s) already revoked (%s)\n", c.GetSerial(), c.GetKind(),
			c.GetNode(), c.GetRevocationReason())
	case resp.GetNodeRevoked():
		_, err = fmt.Fprintf(w, "revoked certificate %s (%s): it was node %s's current certificate, so the "+
			"node is revoked with it (%d certificate(s)); it gets no certificate until "+
			"'ipsecca nodes readmit %s'\n", c.GetSerial(), resp.GetReason(), c.GetNode(), resp.GetRevoked(),
			c.GetNode())
	default:
		_, err = fmt.Fprintf(w, "revoked certificate %s (%s %s, %s)\n", c.GetSerial(), c.GetKind(), c.GetNode(),
			resp.GetReason())
	}
	return err
}

// denialDetail is the message of a ca denial, without its reason prefix.
func denialDetail(err error) string {
	var de *ca.DenyError
	if errors.As(err, &de) {
		return de.Detail
	}
	return err.Error()
}
