package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/spf13/cobra"
)

// usageError marks err as a usage error (exit status 2).
func usageError(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

// asUsage makes err a usage error (exit status 2) unless it already
// carries an exit status; nil stays nil.
func asUsage(err error) error {
	var ee *exitError
	if err == nil || errors.As(err, &ee) {
		return err
	}
	return &exitError{code: exitUsage, err: err}
}

// typeUsageErrors makes every check cobra runs on a command line return a
// usage error, by type: cobra itself returns them as plain errors. Flag
// syntax goes through the flag error function; positional arguments
// through each command's Args validator (cobra.NoArgs, cobra.ExactArgs...),
// wrapped here; required flags (MarkFlagRequired) and flag groups
// (MarkFlagsMutuallyExclusive, MarkFlagsOneRequired) are validated in the
// root's persistent pre-run, before cobra would validate them itself. A
// command line that names no command is execute's. Call it once the tree
// is complete: it adds cobra's help and completion commands first, so
// their arguments are checked the same way.
func typeUsageErrors(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return asUsage(err) })
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := cmd.ValidateRequiredFlags(); err != nil {
			return asUsage(err)
		}
		warnDeprecated(cmd)
		if err := cmd.ValidateFlagGroups(); err != nil {
			return asUsage(err)
		}
		return checkOutput(cmd)
	}
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	requireSubcommand(root)
	completeValues(root)
	setExamples(root)
	var wrap func(*cobra.Command)
	wrap = func(c *cobra.Command) {
		if valid := c.Args; valid != nil {
			c.Args = func(cmd *cobra.Command, args []string) error { return asUsage(valid(cmd, args)) }
		}
		for _, sub := range c.Commands() {
			wrap(sub)
		}
	}
	wrap(root)
}

// execute runs the command line args on root. The first word must name a
// command: cobra finds it (Find), and fails only when it names none
// ("unknown command"), a usage error. Shell completion requests are
// cobra's own hidden commands, added as it executes.
func execute(ctx context.Context, root *cobra.Command, args []string) (*cobra.Command, error) {
	root.SetArgs(args)
	if len(args) == 0 ||
		!slices.Contains([]string{cobra.ShellCompRequestCmd, cobra.ShellCompNoDescRequestCmd}, args[0]) {
		if _, _, err := root.Find(args); err != nil {
			return root, asUsage(err)
		}
	}
	return root.ExecuteContextC(ctx)
}
