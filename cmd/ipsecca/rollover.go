package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ipsecca/ipsecca/ca"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// rolloverPoll is how often a wait asks for the rollover status.
var rolloverPoll = time.Second

func newCARolloverCmd(conn *connFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollover",
		Short: "Move the CA to a new key in phases, each gated on what the nodes report",
		Long: `rollover moves the CA to a new key (suspected compromise, another algorithm, a
key-rotation policy) without a moment in which two nodes cannot authenticate
each other. libreswan's rightca=%same compares the CA's subject, so the new
CA keeps it; both CAs are trusted while the nodes move.

  0. request  (a subordinate CA) the new key's request (--csr-out) waits for
              your root's signature: ipsecca ca import NEW-SUB.pem --chain
              CHAIN.pem publishes it.
  1. trust    the new CA is published in every bundle; the old key still
              issues. Ends (by itself) when every node's NSS database holds
              the new CA.
  2. issue    the new key issues; every node rotates onto it (spread over
              --spread); the old CA stays trusted. Complete when every
              node's certificate and every live pair (mesh status) is on
              the new key and no admin credential is left on the old one.
  3. retire   (ipsecca ca rollover finish) the old CA leaves every bundle,
              its key is dropped and its certificates are revoked. Ends when
              no node's NSS database holds it.

A node whose sidecar is stopped holds its phase back until it returns, or
until finish --force. abort goes back to the old key while it is still
trusted everywhere (phases 1 and 2).`,
	}
	out := new(outputFlags)
	var wait time.Duration
	var keyType string
	var spread time.Duration
	var emergency, force bool
	var csrOut string
	type rpc func(cmd *cobra.Command, c ipseccav1.AdminServiceClient, ctx context.Context) (*ipseccav1.RolloverStatus,
		error)
	run := func(use string, call rpc, waitFor func(*ipseccav1.RolloverStatus) bool,
	) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			if wait < 0 || spread < 0 {
				return usageError("durations must not be negative")
			}
			return adminCall(conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
				resp, err := call(cmd, c, ctx)
				if err != nil {
					return rpcError("", err)
				}
				if wait > 0 && waitFor != nil && !waitFor(resp) {
					if resp, err = waitRollover(cmd, c, conn, wait, waitFor); resp == nil {
						return err
					}
				}
				if out.structured() {
					if perr := out.data(cmd, resp); perr != nil {
						return perr
					}
				} else if perr := printRollover(cmd.OutOrStdout(), resp); perr != nil {
					return perr
				}
				return err
			})
		}
	}
	issueComplete := func(s *ipseccav1.RolloverStatus) bool { return s.GetPhase() == "issue" && s.GetReady() }
	done := func(s *ipseccav1.RolloverStatus) bool { return s.GetPhase() == "" }
	start := &cobra.Command{
		Use:   "start",
		Short: "Make a new CA key and publish its certificate (phase 1: trust)",
		Example: `  ipsecca ca rollover start --spread 30m --wait 2h
  ipsecca ca rollover start --key-type ecdsa-p384
  ipsecca ca rollover start --emergency     # the current key is compromised`,
		Args: cobra.NoArgs,
		RunE: run(
			"start",
			func(cmd *cobra.Command, c ipseccav1.AdminServiceClient, ctx context.Context) (*ipseccav1.RolloverStatus, error) {
				if keyType != "" {
					if _, err := ca.ParseKeyType(keyType); err != nil {
						return nil, usageError("--key-type: %v", err)
					}
				}
				resp, err := c.StartRollover(ctx, &ipseccav1.StartRolloverRequest{KeyType: keyType,
					Spread: durationpb.New(spread), Emergency: emergency})
				if err != nil || len(resp.GetCsrPem()) == 0 {
					return resp, err
				}
				// A subordinate CA: its organisation's root signs the new key.
				if err := os.WriteFile(csrOut, resp.GetCsrPem(), 0o644); err != nil {
					return nil, failure(fmt.Errorf("ca rollover start: write the request: %w", err))
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s: the new subordinate CA key's request (same subject).\n"+
					"next: have it signed by your root as before (CA:TRUE, pathlen 0, keyCertSign, cRLSign), then\n"+
					"  ipsecca ca import NEW-SUB.pem --chain CHAIN.pem\n"+
					"which publishes it (phase trust); ipsecca ca rollover status shows the rest.\n", csrOut)
				return resp, nil
			},
			issueComplete,
		),
	}
	start.Flags().StringVar(&keyType, "key-type", "", "type of the new CA key: "+keyTypeNames()+
		" (default: the current key's type)")
	start.Flags().StringVar(&csrOut, "csr-out", "ca-rollover.csr", "for a subordinate CA: where to write the new "+
		"key's request for your root to sign")
	start.Flags().DurationVar(&spread, "spread", 0, "spread the nodes' rotations onto the new key over this long")
	start.Flags().BoolVar(&emergency, "emergency", false, "the current key is compromised: issue with the new key "+
		"at once and rotate every node now, without waiting for the nodes to trust the new CA (pairs drop until "+
		"both sides hold it); then finish --force revokes everything the old key issued")
	start.Flags().DurationVar(&wait, "wait", 0, "wait up to this long (e.g. 1h) until phase 2 is complete "+
		"(every node and pair on the new key); exit 1 if not")
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the phase, what it waits for, and where each node is",
		Args:  cobra.NoArgs,
		RunE: run(
			"status",
			func(cmd *cobra.Command, c ipseccav1.AdminServiceClient, ctx context.Context) (*ipseccav1.RolloverStatus, error) {
				return c.GetRollover(ctx, &ipseccav1.GetRolloverRequest{})
			},
			nil,
		),
	}
	finish := &cobra.Command{
		Use:   "finish",
		Short: "Retire the old key once every node and pair is on the new one (phase 3: retire)",
		Args:  cobra.NoArgs,
		RunE: run(
			"finish",
			func(cmd *cobra.Command, c ipseccav1.AdminServiceClient, ctx context.Context) (*ipseccav1.RolloverStatus, error) {
				if force {
					fmt.Fprintln(
						cmd.ErrOrStderr(),
						"WARNING: --force retires the old CA now: every certificate it issued is "+
							"revoked and leaves every bundle; nodes not yet on the new key lose their tunnels and must "+
							"enrol again with a new token (ipsecca token create)",
					)
				}
				return c.FinishRollover(ctx, &ipseccav1.FinishRolloverRequest{Force: force})
			},
			done,
		),
	}
	finish.Flags().BoolVar(&force, "force", false, "retire the old key even though not every node and pair is on "+
		"the new one (they lose their tunnels and need new tokens)")
	finish.Flags().DurationVar(&wait, "wait", 0, "wait up to this long until no node's NSS database holds the "+
		"retired CA (the rollover completes); exit 1 if not")
	abort := &cobra.Command{
		Use:   "abort",
		Short: "Go back to the old key while it is still trusted everywhere",
		Args:  cobra.NoArgs,
		RunE: run(
			"abort",
			func(cmd *cobra.Command, c ipseccav1.AdminServiceClient, ctx context.Context) (*ipseccav1.RolloverStatus, error) {
				return c.AbortRollover(ctx, &ipseccav1.AbortRolloverRequest{})
			},
			nil,
		),
	}
	for _, c := range []*cobra.Command{start, status, finish, abort} {
		out.register(c, true)
		cmd.AddCommand(c)
	}
	return cmd
}

func keyTypeNames() string {
	names := make([]string, len(ca.KeyTypes))
	for i, k := range ca.KeyTypes {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}

// waitRollover asks for the rollover status every rolloverPoll until ok
// holds (nil error) or wait passes (exit 1, naming what it waits for).
func waitRollover(cmd *cobra.Command, client ipseccav1.AdminServiceClient, conn *connFlags, wait time.Duration,
	ok func(*ipseccav1.RolloverStatus) bool,
) (*ipseccav1.RolloverStatus, error) {
	deadline := time.Now().Add(wait)
	var last *ipseccav1.RolloverStatus
	for {
		ctx, cancel := conn.context()
		resp, err := client.GetRollover(ctx, &ipseccav1.GetRolloverRequest{})
		cancel()
		if err != nil {
			return last, rpcError("", err)
		}
		last = resp
		if ok(resp) {
			return resp, nil
		}
		if time.Now().After(deadline) {
			return resp, failure(fmt.Errorf("ca rollover: not there after %s (phase %q): %s", wait, resp.GetPhase(),
				strings.Join(resp.GetWaitingFor(), "; ")))
		}
		time.Sleep(rolloverPoll)
	}
}

func printRollover(out io.Writer, s *ipseccav1.RolloverStatus) error {
	if s.GetPhase() == "" {
		_, err := fmt.Fprintln(out, "no CA key rollover in progress")
		return err
	}
	flags := ""
	if s.GetEmergency() {
		flags += " (emergency)"
	}
	if s.GetAborted() {
		flags += " (aborted: back to the key it started from)"
	}
	ready := "in progress"
	if s.GetReady() {
		ready = "complete"
	}
	fmt.Fprintf(out, "phase: %s%s, %s (since %s; started %s)\nnew CA: %s\nold CA: %s\npairs on the new key: %d of %d\n",
		s.GetPhase(), flags, ready, fmtTime(s.GetPhaseAt()), fmtTime(s.GetStartedAt()), s.GetNewSerial(),
		s.GetOldSerial(), s.GetPairsOnNew(), s.GetPairs())
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tTRUSTS-NEW\tON-NEW\tHOLDS-OLD\tCERT\tREPORTED")
	for _, n := range s.GetNodes() {
		fmt.Fprintf(w, "%s\t%t\t%t\t%t\t%s\t%s\n", n.GetNode(), n.GetTrustsNew(), n.GetOnNew(), n.GetHoldsOld(),
			n.GetCurrentSerial(), fmtTime(n.GetReportedAt()))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, line := range s.GetWaitingFor() {
		fmt.Fprintf(out, "waiting for: %s\n", line)
	}
	for _, line := range s.GetWarnings() {
		fmt.Fprintf(out, "warning: %s\n", line)
	}
	return nil
}
