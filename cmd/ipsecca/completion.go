package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ipsecca/ipsecca/internal/flagnames"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// Shell completion (ipsecca completion bash|zsh|fish|powershell, cobra's)
// completes, besides commands and flags, the values of the flags that take
// one of a few words and the node names of the CA the command would talk
// to, asked with ListNodes.

// enumFlags are the flags that take one of a few words.
var enumFlags = map[string][]string{
	"state":             {"active", "superseded", "revoked", "expired"},
	"kind":              {"node", "admin", "server"},
	"ca-key-type":       {"ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096"},
	flagnames.Mode:      {"Full", "External", "Disabled"},
	flagnames.LogFormat: {"text", "json"},
	"log-level":         {"debug", "info", "warn", "error"},
	flagnames.Store:     {storeBolt, storeEtcd},
	"auto":              {"start", "add", "ondemand"},
	"encapsulation":     {"auto", "always"},
	"cn-from":           {"chassis-id", "node-name"},
}

// completeValues registers, on every command of the tree, completion of
// the enum flags' values and of node names (positional NODE, --node) on
// the commands that reach the CA.
func completeValues(c *cobra.Command) {
	for _, sub := range c.Commands() {
		completeValues(sub)
	}
	for name, words := range enumFlags {
		if c.Flags().Lookup(name) != nil {
			_ = c.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(words, cobra.ShellCompDirectiveNoFileComp))
		}
	}
	if c.Name() == "bundle" || c.HasParent() && c.Parent().Name() == "bundle" {
		return
	}
	has := func(name string) bool { return c.Flags().Lookup(name) != nil || c.InheritedFlags().Lookup(name) != nil }
	admin := has(flagnames.DataDir) && has(flagnames.Server)
	if !admin {
		return
	}
	if c.Flags().Lookup(flagnames.Node) != nil {
		_ = c.RegisterFlagCompletionFunc(flagnames.Node, completeNodes)
	}
	if strings.Contains(c.Use, "NODE") && c.ValidArgsFunction == nil {
		c.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion,
			cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return completeNodes(cmd, args, toComplete)
		}
	}
}

// completeNodes lists the CA's nodes, with the connection flags given so
// far on the command line; best effort: nothing when the CA does not
// answer within two seconds, and no error printed.
func completeNodes(
	cmd *cobra.Command, _ []string, toComplete string,
) ([]cobra.Completion, cobra.ShellCompDirective) {
	fs := cmd.Flags()
	conn := &connFlags{timeout: 2 * time.Second}
	conn.server, _ = fs.GetString(flagnames.Server)
	conn.dataDir, _ = fs.GetString(flagnames.DataDir)
	conn.caFile, _ = fs.GetString(flagnames.CAFile)
	conn.certFile, _ = fs.GetString("cert")
	conn.keyFile, _ = fs.GetString("key")
	var names []cobra.Completion
	_ = adminCall(conn, func(c ipseccav1.AdminServiceClient, ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		resp, err := c.ListNodes(ctx, &ipseccav1.ListNodesRequest{})
		for _, n := range resp.GetNodes() {
			if strings.HasPrefix(n.GetName(), toComplete) {
				names = append(names, n.GetName())
			}
		}
		return err
	})
	return names, cobra.ShellCompDirectiveNoFileComp
}
