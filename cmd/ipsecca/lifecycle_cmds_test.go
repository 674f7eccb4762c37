package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/ipsecca/ipsecca/store"
)

// runCmd runs a command made by one of the lifecycle constructors on its
// own (before it is wired into its group) against c; it returns the exit
// status the CLI would give and the output.
func (c *meshCA) runCmd(t *testing.T, cmd *cobra.Command, args ...string) (int, string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append(args, "--data-dir", c.dir, "--server", c.addr))
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	if err == nil {
		return 0, out.String(), nil
	}
	code, _ := classify(err)
	return code, out.String(), err
}

// token list, token revoke and certs revoke, run as a user would: the
// output says what happened, a second revocation exits 0 saying "already
// revoked", and bad input is a usage error (exit 2).
func TestLifecycleCommands(t *testing.T) {
	c := startMeshCA(t)
	ctx := context.Background()
	auth := c.in.Authority
	full, tok, err := auth.CreateToken(ctx, "node-a", "", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := auth.CreateToken(ctx, "node-b", "", 0, "test"); err != nil {
		t.Fatal(err)
	}
	_, secret, _ := strings.Cut(full, ".")
	old, cur := c.issue(t, "node-c"), c.issue(t, "node-c")

	for _, tc := range []struct {
		name string
		cmd  func() *cobra.Command
		args []string
		code int
		want []string // substrings of the output
		not  []string
	}{
		{"list", newTokenListCmd, nil, 0, []string{"ID", tok.ID, "node-a", "unused", "node-b"}, []string{secret}},
		{"revoke by whole token", newTokenRevokeCmd, []string{full}, 0,
			[]string{"token " + tok.ID + " (node node-a) revoked"}, []string{secret}},
		{"revoke again", newTokenRevokeCmd, []string{tok.ID}, 0, []string{"already revoked"}, nil},
		{"list hides it", newTokenListCmd, nil, 0, []string{"node-b"}, []string{tok.ID}},
		{"list --all", newTokenListCmd, []string{"--all", "--node", "node-a"}, 0, []string{tok.ID, "revoked"},
			[]string{"node-b"}},
		{"unknown token", newTokenRevokeCmd, []string{"0123456789abcdef"}, 2, nil, nil},
		{"superseded certificate", newCertsRevokeCmd, []string{old.Serial, "--reason", "superseded"}, 0,
			[]string{"revoked certificate " + old.Serial + " (node node-c, superseded)"}, nil},
		{"current certificate", newCertsRevokeCmd, []string{cur.Serial, "--reason", "keyCompromise"}, 0,
			[]string{"node node-c's current certificate", "node is revoked", "ipsecca nodes readmit node-c"}, nil},
		{"again", newCertsRevokeCmd, []string{cur.Serial}, 0, []string{"already revoked (keyCompromise)"}, nil},
		{"certificateHold", newCertsRevokeCmd, []string{cur.Serial, "--reason", "certificateHold"}, 2, nil, nil},
		{"malformed serial", newCertsRevokeCmd, []string{"xyz"}, 2, nil, nil},
		{"unknown serial", newCertsRevokeCmd, []string{"abcdef99"}, 2, nil, nil},
	} {
		code, out, err := c.runCmd(t, tc.cmd(), tc.args...)
		if code != tc.code {
			t.Errorf("%s: exit %d (%v), want %d\n%s", tc.name, code, err, tc.code, out)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q:\n%s", tc.name, w, out)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(out, n) {
				t.Errorf("%s: output shows %q:\n%s", tc.name, n, out)
			}
		}
	}
	if n, err := c.st.Node(ctx, "node-c"); err != nil || !n.Revoked {
		t.Fatalf("node-c after its current certificate was revoked: %+v %v", n, err)
	}
	code, out, err := c.runCmd(t, newCertsRevokeCmd(), old.Serial, "-o", "json")
	if code != 0 {
		t.Fatalf("-o json: %v", err)
	}
	var resp map[string]any
	if err := json.Unmarshal([]byte(out), &resp); err != nil || resp["already"] != true {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	if got, _ := c.st.Cert(ctx, old.Serial); got.State != store.StateRevoked || got.RevocationReason != 4 {
		t.Fatalf("stored %s: %s reason %d", old.Serial, got.State, got.RevocationReason)
	}
}
