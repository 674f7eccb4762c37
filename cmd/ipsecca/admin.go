package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// adminClient dials the server with the admin credentials.
func (f *connFlags) adminClient() (ipseccav1.AdminServiceClient, func(), error) {
	f.resolveAdmin()
	conn, err := f.dial()
	if err != nil {
		return nil, nil, err
	}
	return ipseccav1.NewAdminServiceClient(conn), func() { conn.Close() }, nil
}

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage bootstrap tokens"}
	conn := adminConnFlags(cmd)
	var node, cn string
	var ttl time.Duration
	var out *outputFlags
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a single-use bootstrap token for a node; prints only the token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &ipseccav1.CreateTokenRequest{Node: node, CommonName: cn}
			if cmd.Flags().Changed("ttl") && ttl <= 0 {
				return usageError("--ttl %s: want a positive duration (default 1h, at most 168h)", ttl)
			}
			if ttl != 0 {
				req.Ttl = durationpb.New(ttl)
			}
			return adminCall(conn, func(client ipseccav1.AdminServiceClient, ctx context.Context) error {
				resp, err := client.CreateToken(ctx, req)
				if err != nil {
					return rpcError(nodeWhat(node), err)
				}
				return out.print(cmd, resp, func(w io.Writer) error {
					_, err := fmt.Fprintln(w, resp.GetToken())
					return err
				})
			})
		},
	}
	create.Flags().StringVarP(&node, "node", "n", "", "node the token admits")
	create.Flags().
		StringVar(&cn, "cn", "",
			"certificate name the node may ask for, e.g. its OVS system-id (default: the node name)")
	create.Flags().DurationVar(&ttl, "ttl", 0, "token lifetime (default 1h, at most 168h)")
	out = addOutput(create, true)
	create.MarkFlagRequired("node")
	cmd.AddCommand(create, newTokenListCmd(), newTokenRevokeCmd()) // lifecycle_cmds.go
	return cmd
}

func fmtTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format("2006-01-02 15:04")
}

func newCertsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "certs", Short: "Show issued certificates"}
	conn := adminConnFlags(cmd)

	var node, state, kind, dueBefore string
	var out *outputFlags
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List issued certificates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			due, err := parseTime("--due-before", dueBefore)
			if err != nil {
				return err
			}
			return adminCall(conn, func(client ipseccav1.AdminServiceClient, ctx context.Context) error {
				all := &ipseccav1.ListCertificatesResponse{}
				token := ""
				for {
					resp, err := client.ListCertificates(
						ctx,
						&ipseccav1.ListCertificatesRequest{
							Node:      node,
							State:     state,
							Kind:      kind,
							DueBefore: due,
							PageSize:  1000,
							PageToken: token,
						},
					)
					if err != nil {
						return rpcError("", err)
					}
					all.Certificates = append(all.Certificates, resp.GetCertificates()...)
					token = resp.GetNextPageToken()
					if token == "" || (limit > 0 && len(all.Certificates) >= limit) {
						break
					}
				}
				if limit > 0 && len(all.Certificates) > limit {
					all.Certificates = all.Certificates[:limit]
				}
				t := newTable("SERIAL", "KIND", "NODE", "CN", "STATE", "NOT AFTER", "ROTATE AFTER", "ISSUED*",
					"VIA*", "SUBJECT*")
				for _, c := range all.Certificates {
					t.row(c.GetSerial(), c.GetKind(), c.GetNode(), c.GetCommonName(), c.GetState(),
						fmtTime(c.GetNotAfter()), fmtTime(c.GetRotateAfter()), fmtTime(c.GetIssuedAt()),
						c.GetIssuedVia(), c.GetSubject())
				}
				return out.list(cmd, all, t)
			})
		},
	}
	list.Flags().StringVarP(&node, "node", "n", "", "only this node's certificates")
	list.Flags().StringVar(&state, "state", "", "only this state: active, superseded, revoked or expired")
	list.Flags().StringVar(&kind, "kind", "", "only this kind: node, admin or server")
	list.Flags().IntVar(&limit, "limit", 0, "show at most this many (0: all)")
	list.Flags().
		StringVar(&dueBefore, "due-before", "",
			"only certificates whose rotation is due before this time (RFC 3339 or YYYY-MM-DD)")
	out = addOutput(list, true)

	var sPEM bool
	var sOut *outputFlags
	show := &cobra.Command{
		Use:   "show SERIAL",
		Short: "Show one certificate by serial (hex)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return adminCall(conn, func(client ipseccav1.AdminServiceClient, ctx context.Context) error {
				c, err := client.GetCertificate(ctx, &ipseccav1.GetCertificateRequest{Serial: args[0]})
				if err != nil {
					return rpcError("certificate "+args[0], err)
				}
				switch {
				case sOut.structured():
					return sOut.data(cmd, c)
				case sPEM:
					_, err := cmd.OutOrStdout().Write(c.GetCertificatePem())
					return err
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				for _, kv := range [][2]string{
					{"serial", c.GetSerial()}, {"kind", c.GetKind()}, {"node", c.GetNode()}, {"subject",
						c.GetSubject()},
					{"state", c.GetState()}, {"not before", fmtTime(c.GetNotBefore())}, {"not after",
						fmtTime(c.GetNotAfter())},
					{"rotate after", fmtTime(c.GetRotateAfter())}, {"issued",
						fmtTime(c.GetIssuedAt()) + " via " + c.GetIssuedVia()},
					{"superseded by", c.GetSupersededBy()}, {"sha256", c.GetSha256Fingerprint()},
				} {
					if kv[1] != "" {
						fmt.Fprintf(w, "%s:\t%s\n", kv[0], kv[1])
					}
				}
				return w.Flush()
			})
		},
	}
	sOut = addOutput(show, true)
	show.Flags().BoolVar(&sPEM, "pem", false, "print only the certificate PEM")
	cmd.AddCommand(list, show, newCertsRevokeCmd())
	return cmd
}

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Query and verify the audit log"}
	conn := adminConnFlags(cmd)
	var node, typ, since, until string
	var out *outputFlags
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List audit events, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return listEvents(cmd, conn, &ipseccav1.ListEventsRequest{Node: node, Type: typ}, since, until, limit, out)
		},
	}
	list.Flags().StringVarP(&node, "node", "n", "", "only events about this node")
	list.Flags().
		StringVar(&typ, "type", "",
			"only this type (cert.enrolled, request.denied, ...) or a prefix ending in '.' (rotation.)")
	list.Flags().StringVar(&since, "since", "", "only events at or after this time (RFC 3339 or YYYY-MM-DD)")
	list.Flags().StringVar(&until, "until", "", "only events before this time")
	list.Flags().IntVar(&limit, "limit", 0, "show at most this many, the newest (0: all)")
	out = addOutput(list, true)

	var vOut *outputFlags
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Recompute the audit hash chain; exit 1 and name the first broken record if it was tampered with",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return adminCall(conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
				resp, err := c.VerifyAudit(ctx, &ipseccav1.VerifyAuditRequest{})
				if err != nil {
					return rpcError("", err)
				}
				if vOut.structured() {
					if err := vOut.data(cmd, resp); err != nil {
						return err
					}
				} else if resp.GetOk() {
					fmt.Fprintf(cmd.OutOrStdout(), "audit log intact: %d records\n", resp.GetRecords())
				}
				if !resp.GetOk() {
					return failure(
						fmt.Errorf(
							"audit log broken at record %d: %s (%d records before it verify)",
							resp.GetFirstBadSeq(),
							resp.GetProblem(),
							resp.GetRecords(),
						),
					)
				}
				return nil
			})
		},
	}
	vOut = addOutput(verify, true)
	cmd.AddCommand(list, verify)
	return cmd
}
