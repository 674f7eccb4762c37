package main

import (
	"github.com/spf13/pflag"
)

// alias registers old as a hidden, deprecated spelling of the flag name:
// both set the same value, and old prints pflag's deprecation notice.
// Scripts (and the deployment manifests) written for old keep working.
func alias(fs *pflag.FlagSet, old, name string) {
	f := fs.Lookup(name)
	fs.AddFlag(&pflag.Flag{Name: old, Usage: f.Usage, Value: f.Value, DefValue: f.DefValue, NoOptDefVal: f.NoOptDefVal})
	_ = fs.MarkDeprecated(old, "use --"+name)
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
