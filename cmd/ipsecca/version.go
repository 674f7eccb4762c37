package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/ipsecca/ipsecca/internal/buildinfo"
)

func newVersionCmd() *cobra.Command {
	var out *outputFlags
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, VCS revision and Go version of this binary",
		Example: `  ipsecca version
  ipsecca version -o json
  ipsecca --version`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := buildinfo.Get()
			return out.print(cmd, info, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, "ipsecca "+info.String())
				return err
			})
		},
	}
	out = addOutput(cmd, false)
	return cmd
}
