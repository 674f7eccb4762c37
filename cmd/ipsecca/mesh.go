package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// meshPoll is how often a wait asks for the mesh status.
var meshPoll = time.Second

// pairCurrent is the state of a pair on the peer's active certificate
// under the current root.
const pairCurrent = "current"

func newMeshCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mesh",
		Short: "Show which certificate and root each node pair's IKE SA authenticated with",
	}
	conn := adminConnFlags(cmd)
	var out *outputFlags
	var wait time.Duration
	st := &cobra.Command{
		Use:   "status",
		Short: "List the node pairs the sidecars report, each pair's state, and whether the mesh converged",
		Long: `status lists, for every tunnel the nodes' sidecars report, the certificate the
peer authenticated with and its state:

  current     the peer's active certificate, issued under the current root
  old-root    the peer's active certificate, issued before the current root
  superseded  a certificate the peer has since replaced
  revoked     a revoked certificate (the reporting node's sidecar deletes the IKE SA)
  expired     a certificate past its NotAfter
  unknown     no certificate of the peer matches what its IKE SA authenticated with
  down        no IKE SA with the peer

The mesh has converged when at least one pair is reported and every pair is
current. With --wait it asks every second until the mesh converges (exit 0)
or the duration passes (exit 1, naming the pairs not yet current).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if wait < 0 {
				return usageError("--wait %s: want a positive duration", wait)
			}
			client, done, err := conn.adminClient()
			if err != nil {
				return err
			}
			defer done()
			var resp *ipseccav1.MeshStatusResponse
			var werr error
			if wait == 0 {
				if resp, werr = meshStatus(client, conn); werr != nil {
					return conn.unreachable(werr)
				}
			} else if resp, werr = waitMesh(cmd, client, conn, wait, "converged", nil); resp == nil {
				return werr
			}
			if out.structured() {
				if err := out.data(cmd, resp); err != nil {
					return err
				}
			} else if err := printMesh(cmd.OutOrStdout(), out, resp); err != nil {
				return err
			}
			return werr
		},
	}
	out = addOutput(st, true)
	st.Flags().DurationVar(&wait, "wait", 0, "wait up to this long (e.g. 5m) for the mesh to converge; exit 1 if not")
	cmd.AddCommand(st)
	return cmd
}

// meshStatus asks for the mesh status once, within the call timeout.
func meshStatus(client ipseccav1.AdminServiceClient, conn *connFlags) (*ipseccav1.MeshStatusResponse, error) {
	ctx, cancel := conn.context()
	defer cancel()
	resp, err := client.MeshStatus(ctx, &ipseccav1.MeshStatusRequest{})
	if err != nil {
		return nil, rpcError("", err)
	}
	return resp, nil
}

// printMesh prints the pairs as a table and the summary line.
func printMesh(out io.Writer, o *outputFlags, resp *ipseccav1.MeshStatusResponse) error {
	t := newTable("NODE", "PEER", "STATE", "PEER-SERIAL", "ROOT", "AUTHENTICATED", "CHILD-SAS")
	current := 0
	for _, p := range resp.GetPairs() {
		if p.GetState() == pairCurrent {
			current++
		}
		t.row(p.GetNode(), p.GetPeer(), p.GetState(), orDash(p.GetPeerSerial()), orDash(p.GetPeerRootSerial()),
			fmtTime(p.GetAuthenticatedAt()), p.GetChildSas())
	}
	if err := o.table(out, t); err != nil {
		return err
	}
	verdict := "not converged"
	if resp.GetConverged() {
		verdict = "converged"
	}
	_, err := fmt.Fprintf(out, "%d pairs, %d current; %s\n", len(resp.GetPairs()), current, verdict)
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// waitMesh asks for the mesh status every meshPoll until every reported
// pair (at least one) is current and, when goal is set, meets it (what
// says what is awaited), or until wait passes. It prints a progress line
// to stderr whenever the count of pairs done changes, and keeps asking
// through a replica that does not answer. It returns the last status,
// and on timeout a failure (exit 1) naming the pairs still pending.
func waitMesh(
	cmd *cobra.Command,
	client ipseccav1.AdminServiceClient,
	conn *connFlags,
	wait time.Duration,
	what string,
	goal func(*ipseccav1.MeshPair) bool,
) (*ipseccav1.MeshStatusResponse, error) {
	progress := cmd.ErrOrStderr()
	deadline := time.Now().Add(wait)
	var last *ipseccav1.MeshStatusResponse
	lastLine := ""
	for {
		resp, err := meshStatus(client, conn)
		switch code := status.Code(err); {
		case err == nil:
			last = resp
		case code == codes.Unavailable || code == codes.DeadlineExceeded:
			fmt.Fprintf(progress, "mesh: %v; asking again\n", err)
		default:
			return last, err
		}
		var pending []*ipseccav1.MeshPair
		if last != nil {
			pending = pendingPairs(last, goal)
			if line := progressLine(last, pending); line != lastLine {
				fmt.Fprintf(progress, "mesh: %s\n", line)
				lastLine = line
			}
			if len(last.GetPairs()) > 0 && len(pending) == 0 {
				fmt.Fprintf(progress, "mesh: %s (%d pairs)\n", what, len(last.GetPairs()))
				return last, nil
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			return last, failure(pendingError(last, pending, wait, what))
		}
		select {
		case <-cmd.Context().Done():
			return last, cmd.Context().Err()
		case <-time.After(min(meshPoll, left)):
		}
	}
}

// pendingPairs are the pairs not current or not meeting goal.
func pendingPairs(resp *ipseccav1.MeshStatusResponse, goal func(*ipseccav1.MeshPair) bool) []*ipseccav1.MeshPair {
	var out []*ipseccav1.MeshPair
	for _, p := range resp.GetPairs() {
		if p.GetState() != pairCurrent || (goal != nil && !goal(p)) {
			out = append(out, p)
		}
	}
	return out
}

// progressLine counts the pairs done and the states of the others.
func progressLine(resp *ipseccav1.MeshStatusResponse, pending []*ipseccav1.MeshPair) string {
	if len(resp.GetPairs()) == 0 {
		return fmt.Sprintf("no pairs reported yet (%d nodes reporting tunnels)", resp.GetNodesReporting())
	}
	states := map[string]int{}
	for _, p := range pending {
		states[p.GetState()]++
	}
	var parts []string
	for s, n := range states {
		parts = append(parts, fmt.Sprintf("%d %s", n, s))
	}
	sort.Strings(parts)
	line := fmt.Sprintf("%d/%d pairs done", len(resp.GetPairs())-len(pending), len(resp.GetPairs()))
	if len(parts) > 0 {
		line += "; pending: " + strings.Join(parts, ", ")
	}
	return line
}

// maxPendingNamed bounds the pairs a timeout names.
const maxPendingNamed = 20

// pendingError names the pairs still pending when a wait timed out.
func pendingError(resp *ipseccav1.MeshStatusResponse, pending []*ipseccav1.MeshPair, wait time.Duration,
	what string) error {
	if resp == nil {
		return fmt.Errorf("not %s after %s: the mesh status was never answered", what, wait)
	}
	if len(resp.GetPairs()) == 0 {
		return fmt.Errorf("not %s after %s: no pairs reported (%d nodes reporting tunnels)", what, wait,
			resp.GetNodesReporting())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "not %s after %s: %d of %d pairs pending:", what, wait, len(pending), len(resp.GetPairs()))
	for i, p := range pending {
		if i == maxPendingNamed {
			fmt.Fprintf(&b, "\n  ... and %d more (ipsecca mesh status)", len(pending)-i)
			break
		}
		fmt.Fprintf(&b, "\n  %s -> %s: %s (peer serial %s, root %s)", p.GetNode(), p.GetPeer(), p.GetState(),
			orDash(p.GetPeerSerial()), orDash(p.GetPeerRootSerial()))
	}
	return fmt.Errorf("%s", b.String())
}
