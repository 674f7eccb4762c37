package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// alias registers old as a hidden, deprecated spelling of the flag name:
// both set the same value, and old prints pflag's deprecation notice.
// Scripts (and the deployment manifests) written for old keep working.
func alias(fs *pflag.FlagSet, old, name string) {
	f := fs.Lookup(name)
	fs.AddFlag(&pflag.Flag{
		Name: old, Usage: f.Usage, Value: f.Value, DefValue: f.DefValue, NoOptDefVal: f.NoOptDefVal,
	})
	deprecate(fs, old, "use --"+name)
}

// deprecatedAnnotation holds what to use instead of a deprecated flag.
const deprecatedAnnotation = "ipsecca/deprecated"

// deprecate hides the flag name and has warnDeprecated name its
// replacement. Not pflag's MarkDeprecated: cobra prints that notice on
// stdout, into the JSON a script reads.
func deprecate(fs *pflag.FlagSet, name, instead string) {
	_ = fs.SetAnnotation(name, deprecatedAnnotation, []string{instead})
	_ = fs.MarkHidden(name)
}

// warnDeprecated says on stderr which deprecated flags the command line
// used, as pflag would.
func warnDeprecated(cmd *cobra.Command) {
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if instead := f.Annotations[deprecatedAnnotation]; len(instead) > 0 {
			fmt.Fprintf(cmd.ErrOrStderr(), "Flag --%s has been deprecated, %s\n", f.Name, instead[0])
		}
	})
}

// given reports whether the flag name, or one of its aliases, was set.
func given(fs *pflag.FlagSet, names ...string) bool {
	for _, n := range names {
		if f := fs.Lookup(n); f != nil && f.Changed {
			return true
		}
	}
	return false
}
