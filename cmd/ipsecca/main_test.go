package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Usage errors exit 2 by type, whichever check finds them: cobra's (an
// unknown command or flag, the Args validators, required flags and flag
// groups) or a command's own; a file named on the command line that does
// not exist is one too, for every command; other errors exit 1; help
// exits 0. Every error names the command that failed.
func TestExitStatus(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	notCSR := filepath.Join(dir, "not.csr")
	os.WriteFile(notCSR, []byte("hello\n"), 0o600)
	for _, tc := range []struct {
		code   int
		args   string
		stderr string // in stderr
	}{
		{0, "", ""},
		{0, "version", ""},
		{0, "--version", ""},
		{0, "version -o json", ""},
		{0, "certs --help", ""},
		{2, "certs", "ipsecca certs: give a subcommand: list, revoke, show"},
		{2, "token", "ipsecca token: give a subcommand: create, list, revoke"},
		{2, "certs lst", "Did you mean this?\n\tlist"},
		{2, "ca rollover strat", "Did you mean this?\n\tstart"},
		{2, "certs list -o xml", "ipsecca certs list: -o xml: want one of table, wide, json, yaml"},
		{2, "token create --node a --ttl 0s", "--ttl 0s: want a positive duration"},
		{2, "token create --node a --ttl -1h", "--ttl -1h0m0s: want a positive duration"},
		{2, "rotate --node x --spread 1h", "--spread 1h0m0s applies to --all only"},
		{2, "enroll --token x --ca-file " + missing + " --csr " + notCSR, "ipsecca enroll: --csr " + notCSR +
			": not a PEM certificate request"},
		{2, "enroll --token x --ca-file " + missing + " --csr " + missing, "ipsecca enroll: --csr: open " + missing},
		{2, "renew --cert c --key k --ca-file c --csr " + missing, "ipsecca renew: --csr: open " + missing},
		{2, "enroll --token-file " + missing + " --ca-file c --csr c", "ipsecca enroll: --token-file: open"},
		{2, "bundle validate --p12 " + missing + " --ca-file x --left a --right b", "--p12: open " + missing},
		{2, "bundle validate --p12 x --left a --right b", `required flag(s) "ca-file" not set`},
		{2, "init --kek-file " + missing + " --data-dir " + dir, "open " + missing},
		{2, "status --data-dir " + dir, "ipsecca status: read CA bundle: open " + filepath.Join(dir, "ca.pem")},
		{2, "nodes show x --data-dir " + dir, "ipsecca nodes show: read CA bundle"},
		{2, "mesh status --data-dir " + dir, "ipsecca mesh status: read CA bundle"},
		{0, "help certs", ""},
		{0, "certs list --help", ""},
		{0, "__complete cer", ""},
		{2, "no-such-command", `unknown command "no-such-command"`},
		{2, "serve --no-such-flag", "unknown flag: --no-such-flag"},
		{2, "certs show", "accepts 1 arg(s), received 0"},
		{2, "certs show a b", "accepts 1 arg(s), received 2"},
		{2, "status extra", `unknown command "extra"`},
		{2, "completion bash extra", `unknown command "extra"`},
		{2, "token create", `required flag(s) "node" not set`},
		{2, "rotate", "[node all]"},
		{2, "rotate --node a --all", "[node all]"},
		{2, "rotate --all=false", "give --node NODE or --all"},
		{2, "mesh status extra", `unknown command "extra"`},
		{2, "mesh status --wait -1s", "--wait -1s"},
		{2, "enroll --token x", `required flag(s) "ca-file", "csr" not set`},
		{2, "enroll --csr c --ca-file c", "[token token-file]"},
		{2, "enroll --csr c --ca-file c --token x --token-file f", "[token token-file]"},
		{2, "renew --csr c --ca-file c", `required flag(s) "cert", "key" not set`},
		{2, "bundle validate --ca x --left a --right b", `required flag(s) "p12" not set`},
		{2, "bundle validate --ca-file x --left a --right b", `required flag(s) "p12" not set`},
		{2, "bundle validate --p12 x --ca-file x --password a --password-file b", "[password password-file]"},
		{2, "bundle render --p12 x --ca x --left a --right b", `required flag(s) "out" not set`},
		{2, "sidecar --once", `required flag(s) "node" not set`},
		{2, "sidecar --once -n a --server 127.0.0.1:1 --ca-file c --log-level loud", `--log-level "loud"`},
		{2, "store migrate --from bolt:" + dir, `required flag(s) "to" not set`},
		{2, "store migrate --from bolt --to etcd:x", `--from "bolt": want bolt:DIR`},
		{2, "init --ca-key-type dsa-1024 --data-dir " + dir, "--ca-key-type"},
		{2, "config mtu --mtu 10", "ipsecca config mtu: MTU 10 is outside"},
		{2, "health --server 127.0.0.1:1 --ca-file " + missing, "ipsecca health: read CA bundle"},
		{2, "certs list --data-dir " + dir, "ipsecca certs list: read CA bundle"},
	} {
		var out, errb bytes.Buffer
		code := run(strings.Fields(tc.args), &out, &errb)
		if code != tc.code || !strings.Contains(errb.String(), tc.stderr) ||
			(code != 0 && !strings.HasPrefix(errb.String(), "ipsecca")) ||
			strings.Contains(errb.String(), "sidecar:") && !strings.HasPrefix(tc.args, "sidecar") {
			t.Errorf("ipsecca %s: exit %d, stderr %q; want %d and %q", tc.args, code, errb.String(), tc.code, tc.stderr)
		}
		if code == 0 && out.Len() == 0 {
			t.Errorf("ipsecca %s: exit 0 and no output", tc.args)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); err == nil {
		t.Errorf("a usage error created the CA")
	}
}

// The admin command groups declare the connection flags once, as
// persistent flags: every subcommand has them, with the same defaults and
// help, and they may come before the subcommand's name.
func TestConnFlagsPersistent(t *testing.T) {
	root := newRootCmd()
	ownConn := map[string]bool{"ipsecca token list": true, "ipsecca token revoke": true, "ipsecca certs revoke": true}
	groups := 0
	for _, g := range root.Commands() {
		if g.PersistentFlags().Lookup("server") == nil {
			continue
		}
		groups++
		for _, leaf := range g.Commands() {
			if leaf.Name() == "help" {
				continue
			}
			for _, name := range []string{"server", "ca-file", "timeout", "data-dir", "cert", "key"} {
				f := leaf.InheritedFlags().Lookup(name)
				if ownConn[leaf.CommandPath()] { // lifecycle_cmds.go: its own copy, same defaults and help
					f = leaf.LocalFlags().Lookup(name)
				}
				if f == nil || !ownConn[leaf.CommandPath()] && leaf.LocalFlags().Lookup(name) != nil {
					t.Errorf("%s: --%s is not the group's", leaf.CommandPath(), name)
					continue
				}
				if f.Usage == "" || (name == "timeout") != (f.DefValue == "30s") {
					t.Errorf("%s: --%s default %q, help %q", leaf.CommandPath(), name, f.DefValue, f.Usage)
				}
			}
			var out bytes.Buffer
			if code := run(append(strings.Fields(leaf.CommandPath())[1:], "--help"), &out, &out); code != 0 ||
				!strings.Contains(
					out.String(),
					"--server string",
				) || !strings.Contains(out.String(), "$IPSECCA_DATA_DIR") {
				t.Errorf("%s --help: exit %d\n%s", leaf.CommandPath(), code, out.String())
			}
		}
	}
	if groups != 8 {
		t.Errorf(
			"%d command groups with connection flags; want 8 (token, certs, nodes, audit, rotations, ca, admin, mesh)",
			groups,
		)
	}
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := run([]string{"certs", "--data-dir", dir, "list"}, &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), dir) {
		t.Errorf("certs --data-dir DIR list: exit %d, %s", code, errb.String())
	}
}

// Old spellings keep working, hidden, with pflag's notice on stderr (not
// stdout, which a script reads).
func TestDeprecatedAliases(t *testing.T) {
	for _, tc := range []struct{ old, want, notice string }{
		{"config libreswan --node a --node-address 10.0.0.1 --peer b=10.0.0.2 --nss-nickname mine",
			"leftcert=mine", "Flag --nss-nickname has been deprecated, use --nickname"},
	} {
		var out, errb bytes.Buffer
		if code := run(strings.Fields(tc.old), &out, &errb); code != 0 || !strings.Contains(out.String(), tc.want) ||
			!strings.Contains(errb.String(), tc.notice) || strings.Contains(out.String(), "deprecated") {
			t.Errorf("ipsecca %s: exit %d\n%s%s", tc.old, code, out.String(), errb.String())
		}
	}
}
