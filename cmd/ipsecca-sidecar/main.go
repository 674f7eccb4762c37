// Command ipsecca-sidecar is the node agent alone: the same command line
// as `ipsecca sidecar` (sidecar/cli), in a binary that links no CA code,
// so that what runs on every node costs the node as little memory as it
// can (BENCHMARKS.md). `ipsecca-sidecar sidecar ...` is accepted too, so a
// manifest's arguments for `ipsecca sidecar` run on either binary.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/ipsecca/ipsecca/internal/buildinfo"
	"github.com/ipsecca/ipsecca/internal/flagnames"
	"github.com/ipsecca/ipsecca/sidecar/cli"
)

// Exit statuses, as ipsecca's: 1 the agent failed, 2 the command line is wrong.
const (
	exitFailure = 1
	exitUsage   = 2
)

// usageErr is an error of the command line.
type usageErr struct{ error }

func (e usageErr) Unwrap() error { return e.error }

func usage(err error) error {
	var u usageErr
	if err == nil || errors.As(err, &u) {
		return err
	}
	return usageErr{err}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == flagnames.CmdSidecar {
		args = args[1:]
	}
	cmd := cli.Command("ipsecca-sidecar", usage)
	cmd.Version = buildinfo.Get().String()
	cmd.SetVersionTemplate("ipsecca-sidecar {{.Version}}\n")
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SetArgs(args)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usage(err) })
	if valid := cmd.Args; valid != nil {
		cmd.Args = func(c *cobra.Command, a []string) error { return usage(valid(c, a)) }
	}
	// Before cobra checks them itself, so that a missing flag is a usage error.
	cmd.PreRunE = func(c *cobra.Command, _ []string) error { return usage(c.ValidateRequiredFlags()) }
	err := cmd.ExecuteContext(context.Background())
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "ipsecca-sidecar: %v\n", err)
	if errors.As(err, new(usageErr)) {
		return exitUsage
	}
	return exitFailure
}
