package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit statuses, one rule for every command:
//
//	0  it worked
//	1  it failed: denied, invalid bundle, unhealthy, server error, unreachable server
//	2  the command line is wrong: unknown command or flag, bad value, a file named on it
//	   that does not exist, or the server refusing the input (InvalidArgument) or not
//	   finding what it names (NotFound)
//
// A usage error checked here and the same one found by the server exit alike.

// rpcErr is a failed call, keeping its gRPC code for the exit status and
// for -o json.
type rpcErr struct {
	code codes.Code
	msg  string
	what string // what the call was about, named when it is not found
	hint string // how the server was chosen, when unreachable
}

func (e *rpcErr) Error() string {
	var s string
	switch {
	case e.code == codes.NotFound && e.what != "":
		s = e.what + " not found"
		if e.msg != "" && !strings.Contains(e.msg, e.what) {
			s += " (" + e.msg + ")"
		}
	case e.code == codes.DeadlineExceeded:
		s = "timed out (raise --timeout?)"
		if e.msg != "" {
			s = "timed out: " + e.msg + " (raise --timeout?)"
		}
	case e.msg == "":
		s = e.code.String()
	default:
		s = e.code.String() + ": " + e.msg
	}
	if e.hint != "" {
		s += "; " + e.hint
	}
	return s
}

// rpcError makes a gRPC error readable: the code and the server's message,
// what was not found for NotFound. what names the object the call was
// about ("node \"n1\""), or is empty.
func rpcError(what string, err error) error {
	if err == nil {
		return nil
	}
	var re *rpcErr
	if errors.As(err, &re) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &rpcErr{code: codes.DeadlineExceeded, what: what}
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return &rpcErr{code: st.Code(), msg: st.Message(), what: what}
}

// unreachable adds to an Unavailable error the address tried and where it
// came from, and what to check.
func (f *connFlags) unreachable(err error) error {
	var re *rpcErr
	if err == nil || !errors.As(err, &re) || re.code != codes.Unavailable || re.hint != "" {
		return err
	}
	re.hint = fmt.Sprintf("tried %s (from %s): check that 'ipsecca serve' runs there and --server/--ca-file",
		f.addr, f.addrFrom)
	return err
}

// exitCode and errCode classify err: its exit status and a code name for
// -o json (gRPC's names).
func classify(err error) (exit int, code string) {
	var re *rpcErr
	var ee *exitError
	switch {
	case errors.As(err, &re):
		switch re.code {
		case codes.InvalidArgument, codes.NotFound, codes.OutOfRange:
			return exitUsage, re.code.String()
		}
		return exitFailure, re.code.String()
	case errors.Is(err, fs.ErrNotExist):
		return exitUsage, codes.NotFound.String()
	case errors.As(err, &ee):
		if ee.code == exitUsage {
			return exitUsage, codes.InvalidArgument.String()
		}
		return ee.code, codes.Unknown.String()
	}
	return exitFailure, codes.Unknown.String()
}

// domainPrefixes are package prefixes of domain errors ("sidecar: MTU ..."),
// which would name a command other than the one that ran.
var domainPrefixes = []string{"sidecar: ", "kube: ", "bundle: ", "deploy: ", "daemon: ", "nssdb: "}

// report prints err for the command cmd ran as "ipsecca <command path>:
// <message>", or as JSON when the command was asked for JSON output, and
// returns the exit status.
func report(cmd *cobra.Command, err error, stderr io.Writer) int {
	code, name := classify(err)
	var ee *exitError
	if errors.As(err, &ee) && ee.err == nil {
		return code // the command printed what it had to say
	}
	msg := err.Error()
	for _, p := range domainPrefixes {
		msg = strings.TrimPrefix(msg, p)
	}
	path := "ipsecca"
	if cmd != nil {
		path = cmd.CommandPath()
	}
	if wantsJSON(cmd) {
		enc := json.NewEncoder(stderr)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(struct {
			Error    string `json:"error"`
			Code     string `json:"code"`
			ExitCode int    `json:"exitCode"`
		}{path + ": " + msg, name, code})
		return code
	}
	fmt.Fprintf(stderr, "%s: %s\n", path, msg)
	return code
}

// wantsJSON reports whether cmd's command line asked for JSON output.
func wantsJSON(cmd *cobra.Command) bool {
	if cmd == nil {
		return false
	}
	if f := cmd.Flags().Lookup("output"); f != nil && f.Value.String() == "json" {
		return true
	}
	f := cmd.Flags().Lookup("json")
	return f != nil && f.Changed && f.Value.String() == "true"
}

// requireSubcommand makes every command group (a command that only holds
// others) refuse to run alone or with a mistyped subcommand: exit 2 with
// cobra's suggestions, instead of printing its help and exiting 0.
func requireSubcommand(c *cobra.Command) {
	for _, sub := range c.Commands() {
		requireSubcommand(sub)
	}
	if !c.HasParent() || !c.HasSubCommands() || c.Runnable() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		var names []string
		for _, s := range cmd.Commands() {
			if s.IsAvailableCommand() {
				names = append(names, s.Name())
			}
		}
		if len(args) == 0 {
			return usageError("give a subcommand: %s (see '%s --help')", strings.Join(names, ", "),
				cmd.CommandPath())
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2 // cobra's default, set only by its own lookup
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
		}
		return usageError("%s\n\nAvailable: %s", msg, strings.Join(names, ", "))
	}
}

// readInput reads a file named on the command line (flag names it in the
// error); a missing file is a usage error, like a mistyped flag.
func readInput(flag, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return b, nil
}

// nodeWhat names a node for rpcError ("" for none).
func nodeWhat(node string) string {
	if node == "" {
		return ""
	}
	return fmt.Sprintf("node %q", node)
}
