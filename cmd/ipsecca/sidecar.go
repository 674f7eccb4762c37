package main

import (
	"github.com/spf13/cobra"

	"github.com/ipsecca/ipsecca/internal/flagnames"
	"github.com/ipsecca/ipsecca/sidecar/cli"
)

// newSidecarCmd is the node agent, the same command line as the small
// ipsecca-sidecar binary's (sidecar/cli has both).
func newSidecarCmd() *cobra.Command { return cli.Command(flagnames.CmdSidecar, asUsage) }
