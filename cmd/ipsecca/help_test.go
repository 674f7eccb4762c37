package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// walk calls fn on every command of the tree.
func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		walk(sub, fn)
	}
}

// Help reads right: no flag's value is named by a backticked word of its
// usage (pflag takes it as the value's name), init shows only its own
// flags, every command has an example whose flags the command has.
func TestHelp(t *testing.T) {
	root := newRootCmd()
	flagRE := regexp.MustCompile(`(?:^|\s)--([a-z0-9-]+)`)
	walk(root, func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if strings.Contains(f.Usage, "`") {
				t.Errorf("%s --%s: a backtick in its usage: %q", c.CommandPath(), f.Name, f.Usage)
			}
		})
		if !c.Runnable() || c.Hidden || c.Name() == "help" || c.HasParent() && c.Parent().Name() == "completion" {
			return
		}
		if c.HasParent() && c.Example == "" {
			t.Errorf("%s: no Example", c.CommandPath())
		}
		for _, line := range regexp.MustCompile(`\n|&&|\||;|#`).Split(c.Example, -1) {
			words := strings.Fields(line)
			if len(words) < 2 || words[0] != "ipsecca" {
				continue // another program's (openssl), or a comment
			}
			ran, _, err := root.Find(words[1:])
			if err != nil {
				t.Errorf("%s: example runs no command: %s", c.CommandPath(), line)
				continue
			}
			for _, m := range flagRE.FindAllStringSubmatch(line, -1) {
				if ran.Flags().Lookup(m[1]) == nil && ran.InheritedFlags().Lookup(m[1]) == nil && m[1] != "version" {
					t.Errorf("%s: example has --%s, which %s does not take: %s", c.CommandPath(), m[1],
						ran.CommandPath(), line)
				}
			}
		}
	})

	help := func(args ...string) string {
		var out bytes.Buffer
		if code := run(append(args, "--help"), &out, &out); code != 0 {
			t.Fatalf("%v --help: exit %d\n%s", args, code, out.String())
		}
		return out.String()
	}
	if h := help("serve"); !strings.Contains(h, "--advertise string") || strings.Contains(h, "--advertise ipsecca") {
		t.Errorf("serve --help:\n%s", h)
	}
	h := help("init")
	for _, serveOnly := range []string{"--limit-global", "--limit-per-node", "--rotation-grace", "--rotation-spread",
		"--mode", "--replica-id", "--etcd-session-ttl", "--etcd-health-interval"} {
		if strings.Contains(h, serveOnly+" ") {
			t.Errorf("init --help shows serve's %s", serveOnly)
		}
	}
	// init logs what it creates: --log-level is its own too (make bench runs init --log-level error).
	for _, own := range []string{"--data-dir", "--ca-name", "--ca-key-type", "--kek-file", "--store", "--subordinate",
		"--log-level", "--log-format"} {
		if !strings.Contains(h, own+" ") {
			t.Errorf("init --help lacks %s", own)
		}
	}
	if h := help("completion", "bash"); !strings.Contains(h, "source <(ipsecca completion bash)") {
		t.Errorf("completion bash --help:\n%s", h)
	}
	if h := help("sidecar"); !strings.Contains(h, "-n, --node string") || !strings.Contains(h, "--log-level string") {
		t.Errorf("sidecar --help:\n%s", h)
	}
	if h := help("bundle", "validate"); !strings.Contains(h, "--ca-file string") || strings.Contains(h, "--ca string") {
		t.Errorf("bundle validate --help:\n%s", h)
	}
}
