package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// parseTime accepts RFC 3339 or a date (YYYY-MM-DD, UTC midnight).
func parseTime(flag, s string) (*timestamppb.Timestamp, error) {
	if s == "" {
		return nil, nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return timestamppb.New(t), nil
		}
	}
	return nil, usageError("%s %q: want RFC 3339 (2031-05-26T04:50:00Z) or a date (2031-05-26)", flag, s)
}

// adminCall runs fn with an admin client and a deadline.
//
// The CA replaces its admin pair in the data directory after it recorded
// the new certificate, which supersedes the old one: a call made between the
// two is refused (certificate-superseded) before anything runs, so it is
// made again, on a new connection with the pair read again, for up to a
// second.
func adminCall(conn *connFlags, fn func(c ipseccav1.AdminServiceClient, ctx context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := adminCallOnce(conn, fn)
		if attempt == 5 || !supersededPair(err) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// supersededPair reports whether err is the server refusing a client
// certificate that a newer one of the same identity replaced.
func supersededPair(err error) bool {
	if re := (*rpcErr)(nil); errors.As(err, &re) {
		return re.code == codes.Unauthenticated && strings.Contains(re.msg, "certificate-superseded")
	}
	return status.Code(err) == codes.Unauthenticated && strings.Contains(err.Error(), "certificate-superseded")
}

func adminCallOnce(conn *connFlags, fn func(c ipseccav1.AdminServiceClient, ctx context.Context) error) error {
	client, done, err := conn.adminClient()
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := conn.context()
	defer cancel()
	return conn.unreachable(fn(client, ctx))
}

func newRotateCmd() *cobra.Command {
	var conn connFlags
	var node string
	var all bool
	var out *outputFlags
	var spread, wait time.Duration
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Force rotation of a node's certificate (--node) or of every node (--all)",
		Long: `rotate marks the node's (--node) or every node's (--all) active certificate due
now (or spread over --spread): each node's sidecar renews it. With --wait it
then asks every second for the mesh status until every pair the sidecars
report is current and authenticates with a certificate issued since (not one
that was active when the command started): exit 0, or 1 when --wait passes
first, naming the pairs still pending.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if node == "" && !all { // --all=false
				return usageError("give --node NODE or --all")
			}
			if wait < 0 {
				return usageError("--wait %s: want a positive duration", wait)
			}
			if spread != 0 && !all {
				return usageError("--spread %s applies to --all only: one node's rotation is not spread", spread)
			}
			if spread < 0 {
				return usageError("--spread %s: want a positive duration", spread)
			}
			return adminCall(&conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
				var before map[string]bool
				if wait > 0 {
					var err error
					if before, err = activeNodeCerts(ctx, c, node); err != nil {
						return err
					}
				}
				resp, err := c.Rotate(
					ctx,
					&ipseccav1.RotateRequest{Node: node, All: all, Spread: durationpb.New(spread)},
				)
				if err != nil {
					return rpcError(nodeWhat(node), err)
				}
				err = out.print(cmd, resp, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "%d certificate(s) scheduled for rotation\n", resp.GetMarked())
					return err
				})
				if err != nil || wait == 0 {
					return err
				}
				_, err = waitMesh(cmd, c, &conn, wait, "rotated",
					func(p *ipseccav1.MeshPair) bool { return !before[p.GetPeerSerial()] })
				return err
			})
		},
	}
	conn.register(cmd.Flags(), true)
	cmd.Flags().StringVarP(&node, "node", "n", "", "node to rotate")
	cmd.Flags().BoolVar(&all, "all", false, "rotate every node")
	cmd.Flags().DurationVar(&spread, "spread", 0, "with --all, spread the rotations evenly over this window (e.g. 24h)")
	out = addOutput(cmd, true)
	cmd.Flags().DurationVar(&wait, "wait", 0,
		"wait up to this long (e.g. 10m) for every reported pair to authenticate with a new certificate; exit 1 if not")
	cmd.MarkFlagsOneRequired("node", "all")
	cmd.MarkFlagsMutuallyExclusive("node", "all")
	return cmd
}

// activeNodeCerts returns the serials of the active node certificates of
// node (every node's when empty).
func activeNodeCerts(ctx context.Context, c ipseccav1.AdminServiceClient, node string) (map[string]bool, error) {
	out := map[string]bool{}
	req := &ipseccav1.ListCertificatesRequest{Node: node, Kind: "node", State: "active", PageSize: 1000}
	for {
		resp, err := c.ListCertificates(ctx, req)
		if err != nil {
			return nil, rpcError("", err)
		}
		for _, cert := range resp.GetCertificates() {
			out[cert.GetSerial()] = true
		}
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			return out, nil
		}
	}
}

func newScheduleCmd() *cobra.Command {
	var conn connFlags
	var limit int
	var out *outputFlags
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Show the next rotations: overdue, due, then scheduled, soonest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return adminCall(&conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
				resp, err := c.ListSchedule(ctx, &ipseccav1.ListScheduleRequest{Limit: int32(limit)})
				if err != nil {
					return rpcError("", err)
				}
				t := newTable("NODE", "SERIAL", "STATUS", "DUE", "NOT AFTER")
				for _, e := range resp.GetEntries() {
					t.row(e.GetNode(), e.GetSerial(), e.GetStatus(), fmtTime(e.GetDueAt()), fmtTime(e.GetNotAfter()))
				}
				return out.list(cmd, resp, t)
			})
		},
	}
	conn.register(cmd.Flags(), true)
	cmd.Flags().IntVar(&limit, "limit", 20, "show at most this many")
	out = addOutput(cmd, true)
	return cmd
}

func newRotationsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "rotations", Short: "Query past rotations"}
	conn := adminConnFlags(cmd)
	var node, since, until string
	var out *outputFlags
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List rotation events (due, forced, completed, overdue)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return listEvents(
				cmd,
				conn,
				&ipseccav1.ListEventsRequest{Node: node, Type: "rotation."},
				since,
				until,
				limit,
				out,
			)
		},
	}
	list.Flags().StringVarP(&node, "node", "n", "", "only this node")
	list.Flags().StringVar(&since, "since", "", "only events at or after this time")
	list.Flags().StringVar(&until, "until", "", "only events before this time")
	list.Flags().IntVar(&limit, "limit", 0, "show at most this many, the newest (0: all)")
	out = addOutput(list, true)
	cmd.AddCommand(list)
	return cmd
}

// listEvents pages through the audit log and prints it.
func listEvents(
	cmd *cobra.Command,
	conn *connFlags,
	req *ipseccav1.ListEventsRequest,
	since, until string,
	limit int,
	out *outputFlags,
) error {
	var err error
	if req.Since, err = parseTime("--since", since); err != nil {
		return err
	}
	if req.Until, err = parseTime("--until", until); err != nil {
		return err
	}
	return adminCall(conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
		all := &ipseccav1.ListEventsResponse{}
		req.PageSize = 1000
		for {
			resp, err := c.ListEvents(ctx, req)
			if err != nil {
				return rpcError("", err)
			}
			all.Events = append(all.Events, resp.GetEvents()...)
			if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
				break
			}
		}
		if limit > 0 && len(all.Events) > limit {
			all.Events = all.Events[len(all.Events)-limit:]
		}
		t := newTable("SEQ", "TIME", "TYPE", "ACTOR", "NODE", "SERIAL", "OLD SERIAL", "REASON")
		for _, e := range all.GetEvents() {
			reason := e.GetReason()
			if reason == "" {
				reason = e.GetDetail()["reason"]
			}
			t.row(e.GetSeq(), e.GetTime().AsTime().UTC().Format(time.RFC3339), e.GetType(), e.GetActor(),
				e.GetNode(), e.GetSerial(), e.GetOldSerial(), reason)
		}
		return out.list(cmd, all, t)
	})
}

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Show or renew the root CA"}
	conn := adminConnFlags(cmd)
	show := func(use, short string, renew bool) *cobra.Command {
		var out *outputFlags
		var wait time.Duration
		c := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if wait < 0 {
					return usageError("--wait %s: want a positive duration", wait)
				}
				return adminCall(conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
					var resp *ipseccav1.GetCAResponse
					var err error
					if renew {
						resp, err = c.RenewCA(ctx, &ipseccav1.RenewCARequest{})
					} else {
						resp, err = c.GetCA(ctx, &ipseccav1.GetCARequest{})
					}
					if err != nil {
						return rpcError("", err)
					}
					if out.structured() {
						err = out.data(cmd, resp)
					} else {
						err = printRoots(cmd, out, resp)
					}
					if err != nil || wait == 0 {
						return err
					}
					root := ""
					for _, r := range resp.GetRoots() {
						if r.GetCurrent() {
							root = r.GetSerial()
						}
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "mesh: waiting for every node to hold root %s in its NSS "+
						"database, with every pair up on a certificate the new root verifies\n", root)
					_, err = waitMesh(cmd, c, conn, wait, "every node trusts root "+root,
						func(p *ipseccav1.MeshPair) bool { return p.GetNodeTrustsCurrentRoot() })
					return err
				})
			},
		}
		out = addOutput(c, true)
		if renew {
			c.Flags().DurationVar(&wait, "wait", 0, "wait up to this long (e.g. 10m) for every node to trust the "+
				"new root (in its NSS inventory) and every pair to be up and current; exit 1 if not")
		}
		return c
	}
	var outFile string
	var der bool
	var crlOut *outputFlags
	crl := &cobra.Command{
		Use:   "crl",
		Short: "Fetch the current CRL (PEM by default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if conn.caFile == "" {
				conn.resolveAdmin()
				conn.certFile, conn.keyFile = "", ""
			}
			cc, err := conn.dial()
			if err != nil {
				return err
			}
			defer cc.Close()
			ctx, cancel := conn.context()
			defer cancel()
			resp, err := ipseccav1.NewNodeServiceClient(cc).GetCRL(ctx, &ipseccav1.GetCRLRequest{})
			if err != nil {
				return conn.unreachable(rpcError("", err))
			}
			data := resp.GetDer()
			if crlOut.structured() {
				return printCRL(cmd, crlOut, data)
			}
			if !der {
				data = pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: data})
			}
			if outFile != "" {
				return os.WriteFile(outFile, data, 0o644)
			}
			_, err = cmd.OutOrStdout().Write(data)
			return err
		},
	}
	crl.Flags().StringVar(&outFile, "out", "", "write the CRL here (default stdout)")
	crlOut = addOutput(crl, false)
	crl.Flags().BoolVar(&der, "der", false, "write DER instead of PEM")
	cmd.AddCommand(
		show("show", "Show the current and previous roots with their dates", false),
		show("renew", "Re-issue the root now (same key and subject, new validity); nodes get the new bundle", true),
		crl,
		newCARolloverCmd(conn),
		newCAImportCmd(conn),
	)
	return cmd
}

func newNodesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "nodes",
		Aliases: []string{"node"},
		Short:   "Show nodes, their certificates and NSS inventory; revoke a node",
	}
	conn := adminConnFlags(cmd)
	mk := func(use, short string, args cobra.PositionalArgs) *cobra.Command {
		var out *outputFlags
		var limit int
		c := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  args,
			RunE: func(cmd *cobra.Command, args []string) error {
				node := ""
				if len(args) == 1 {
					node = args[0]
				}
				return adminCall(conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
					resp, err := c.ListNodes(ctx, &ipseccav1.ListNodesRequest{Node: node})
					if err != nil {
						return rpcError(nodeWhat(node), err)
					}
					if limit > 0 && len(resp.GetNodes()) > limit {
						resp.Nodes = resp.Nodes[:limit]
					}
					if out.structured() {
						return out.data(cmd, resp)
					}
					if node == "" {
						t := newTable("NODE", "CN", "SERIAL", "STATE", "NOT AFTER", "ROTATE AFTER", "NSS ENTRIES",
							"REPORTED")
						for _, n := range resp.GetNodes() {
							cur := n.GetCurrent()
							t.row(n.GetName(), n.GetCommonName(), cur.GetSerial(), cur.GetState(),
								fmtTime(cur.GetNotAfter()), fmtTime(cur.GetRotateAfter()), len(n.GetInventory()),
								fmtTime(n.GetInventoryReportedAt()))
						}
						return out.list(cmd, resp, t)
					}
					if len(resp.GetNodes()) == 0 { // an older server answers an unknown node with no nodes
						return rpcError(nodeWhat(node), status.Error(codes.NotFound, ""))
					}
					w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
					for _, n := range resp.GetNodes() {
						cur := n.GetCurrent()
						fmt.Fprintf(
							w,
							"node:\t%s\ncn:\t%s\ncurrent:\t%s (%s, not after %s)\ninventory reported:\t%s\n\n",
							n.GetName(),
							n.GetCommonName(),
							cur.GetSerial(),
							cur.GetState(),
							fmtTime(cur.GetNotAfter()),
							fmtTime(n.GetInventoryReportedAt()),
						)
						if err := w.Flush(); err != nil {
							return err
						}
						t := newTable("NICKNAME", "SERIAL", "TRUST", "NOT AFTER", "SUBJECT")
						for _, e := range n.GetInventory() {
							t.row(
								e.GetNickname(),
								e.GetSerial(),
								e.GetTrust(),
								fmtTime(e.GetNotAfter()),
								e.GetSubject(),
							)
						}
						if err := out.table(cmd.OutOrStdout(), t); err != nil {
							return err
						}
					}
					return nil
				})
			},
		}
		out = addOutput(c, true)
		if use == "list" {
			c.Flags().IntVar(&limit, "limit", 0, "show at most this many (0: all)")
		}
		return c
	}
	cmd.AddCommand(
		mk("list", "List nodes with their current certificate", cobra.NoArgs),
		mk("show NODE", "Show one node and what its NSS database holds", cobra.ExactArgs(1)),
	)

	var reason string
	var rOut, aOut, fOut *outputFlags
	revoke := &cobra.Command{
		Use: "revoke NODE",
		Short: "Revoke every certificate of a node and void its unused tokens; published in the CRL, the node is " +
			"told, and it gets no certificate by any door until 'nodes readmit'",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return adminCall(conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
				resp, err := c.RevokeNode(ctx, &ipseccav1.RevokeNodeRequest{Node: args[0], Reason: reason})
				if err != nil {
					return rpcError(nodeWhat(args[0]), err)
				}
				return rOut.print(cmd, resp, func(w io.Writer) error {
					if resp.GetAlreadyRevoked() {
						_, err := fmt.Fprintf(w, "%s is already revoked; it gets no certificate until "+
							"'ipsecca nodes readmit %s'\n", args[0], args[0])
						return err
					}
					_, err := fmt.Fprintf(w, "revoked %d certificate(s) of %s; its unused tokens are void; it gets "+
						"no certificate until 'ipsecca nodes readmit %s'\n", resp.GetRevoked(), args[0], args[0])
					return err
				})
			})
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log)")

	readmit := &cobra.Command{
		Use:   "readmit NODE",
		Short: "Let a revoked node be issued certificates again (with a token made after this; earlier ones stay void)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return adminCall(conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
				resp, err := c.ReadmitNode(ctx, &ipseccav1.ReadmitNodeRequest{Node: args[0]})
				if err != nil {
					return rpcError(nodeWhat(args[0]), err)
				}
				return aOut.print(cmd, resp, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "re-admitted %s: create a new token for it (ipsecca token create "+
						"--node %s)\n", args[0], args[0])
					return err
				})
			})
		},
	}

	forget := &cobra.Command{
		Use: "forget NODE",
		Short: "Release the certificate names a revoked node holds, so another node (a re-provisioned chassis) may " +
			"take them",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return adminCall(conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
				resp, err := c.ForgetNode(ctx, &ipseccav1.ForgetNodeRequest{Node: args[0]})
				if err != nil {
					return rpcError(nodeWhat(args[0]), err)
				}
				return fOut.print(cmd, resp, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "released %d name(s) of %s: %s\n", len(resp.GetReleased()), args[0],
						strings.Join(resp.GetReleased(), ", "))
					return err
				})
			})
		},
	}
	rOut, aOut, fOut = addOutput(revoke, false), addOutput(readmit, false), addOutput(forget, false)
	cmd.AddCommand(revoke, readmit, forget)
	return cmd
}

// printRoots prints the CA's roots as a table, then what is pending.
func printRoots(cmd *cobra.Command, o *outputFlags, resp *ipseccav1.GetCAResponse) error {
	t := newTable("ROLE", "SERIAL", "SUBJECT", "NOT BEFORE", "NOT AFTER", "SHA256")
	for _, r := range resp.GetRoots() {
		t.row(r.GetRole(), r.GetSerial(), r.GetSubject(), fmtTime(r.GetNotBefore()), fmtTime(r.GetNotAfter()),
			r.GetSha256Fingerprint())
	}
	if err := o.table(cmd.OutOrStdout(), t); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if resp.GetSubordinate() {
		fmt.Fprintf(out, "subordinate CA: node certificates end by %s; renew it (ipsecca ca import) before %s\n",
			fmtTime(resp.GetNodeNotAfterCap()), fmtTime(resp.GetRenewBy()))
	}
	if ro := resp.GetRollover(); ro != nil {
		fmt.Fprintf(out, "key rollover in progress: phase %s since %s (ipsecca ca rollover status)\n", ro.GetPhase(),
			fmtTime(ro.GetPhaseAt()))
	}
	for _, line := range resp.GetWarnings() {
		fmt.Fprintf(out, "warning: %s\n", line)
	}
	return nil
}

// printCRL prints the CRL as data: its PEM and what it lists.
func printCRL(cmd *cobra.Command, o *outputFlags, der []byte) error {
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return fmt.Errorf("the server's CRL: %w", err)
	}
	type revoked struct {
		Serial    string    `json:"serial"`
		RevokedAt time.Time `json:"revokedAt"`
	}
	v := struct {
		Issuer     string    `json:"issuer"`
		Number     string    `json:"number"`
		ThisUpdate time.Time `json:"thisUpdate"`
		NextUpdate time.Time `json:"nextUpdate"`
		Revoked    []revoked `json:"revoked"`
		PEM        string    `json:"pem"`
	}{Issuer: crl.Issuer.String(), ThisUpdate: crl.ThisUpdate.UTC(), NextUpdate: crl.NextUpdate.UTC(),
		Revoked: []revoked{}, PEM: string(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))}
	if crl.Number != nil {
		v.Number = crl.Number.String()
	}
	for _, e := range crl.RevokedCertificateEntries {
		v.Revoked = append(
			v.Revoked,
			revoked{Serial: fmt.Sprintf("%x", e.SerialNumber), RevokedAt: e.RevocationTime.UTC()},
		)
	}
	return o.data(cmd, v)
}
