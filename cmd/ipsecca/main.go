// Command ipsecca is the certificate authority for IPsec in Kubernetes and
// OpenShift clusters: the CA service, its node sidecar and the admin CLI.
// This package only wires flags to the packages that do the work.
package main

import (
	"context"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/ipsecca/ipsecca/internal/buildinfo"
)

// Exit statuses of the ipsecca command.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed (denied, invalid bundle, server error)
	exitUsage   = 2 // bad flags or arguments
)

// exitError carries an exit status out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return "failed"
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// failure returns an error that exits with status 1 without printing
// anything more than what the command already printed (when err is nil) or err.
func failure(err error) error { return &exitError{code: exitFailure, err: err} }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "ipsecca",
		Short:         "Certificate authority for IPsec (libreswan/OVN-Kubernetes) node certificates",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Get().String(),
	}
	root.SetVersionTemplate("ipsecca {{.Version}}\n")
	root.AddCommand(
		// The CA process and its data (serve.go, status.go, kube.go, store.go).
		newServeCmd(), newInitCmd(), newStatusCmd(), newHealthCmd(), newStoreCmd(),
		// A node (node.go, sidecar.go).
		newEnrollCmd(), newRenewCmd(), newSidecarCmd(),
		// An admin, over gRPC (admin.go, rotation.go, adminkeys.go, mesh.go).
		newTokenCmd(), newCertsCmd(), newNodesCmd(), newAuditCmd(),
		newRotateCmd(), newScheduleCmd(), newRotationsCmd(), newCACmd(), newAdminCmd(), newMeshCmd(),
		// Offline tools (bundle.go, config.go, kube.go).
		newBundleCmd(), newConfigCmd(), newManifestsCmd(), newVersionCmd(),
	)
	typeUsageErrors(root)
	return root
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line and returns the exit status (errors.go
// has the rule), printing an error as "ipsecca <command path>: <message>".
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := execute(context.Background(), root, args)
	if err == nil {
		return exitOK
	}
	return report(cmd, err, stderr)
}
