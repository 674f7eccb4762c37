package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/internal/clijson"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// What a user of the admin commands sees, against a real CA: the exit
// status (a server's InvalidArgument or NotFound exits 2, like the same
// mistake caught here), errors naming the command and what was not found,
// -o on listings, and completion of node names.
func TestAdminCLI(t *testing.T) {
	c := startMeshCA(t)
	a := c.issue(t, "node-a")
	c.issue(t, "node-b")

	for _, tc := range []struct {
		args   []string
		code   int
		stdout []string // each in stdout
		stderr string   // in stderr
	}{
		{[]string{"nodes", "show", "nosuch"}, 2, nil, `ipsecca nodes show: node "nosuch" not found`},
		{[]string{"nodes", "show", "nosuch", "-o", "json"}, 2, nil,
			`{"error":"ipsecca nodes show: node \"nosuch\" not found","code":"NotFound","exitCode":2}`},
		{[]string{"certs", "show", "ffff"}, 2, nil, "ipsecca certs show: certificate ffff not found"},
		{[]string{"token", "create", "--node", "ovs_x"}, 2, nil, "ipsecca token create: InvalidArgument: "},
		{[]string{"token", "create", "-n", "node-c", "-o", "json"}, 0, []string{`"token": "`}, ""},
		{[]string{"token", "list", "-o", "wide"}, 0, []string{"CREATED BY", "node-c"}, ""},
		{[]string{"token", "revoke", "0123456789abcdef"}, 2, nil,
			"ipsecca token revoke: token 0123456789abcdef not found"},
		{[]string{"token", "revoke", "nosuch"}, 2, nil, "ipsecca token revoke: InvalidArgument: denied (token-id-invalid)"},
		{[]string{"certs", "list"}, 0, []string{"SERIAL", "NOT AFTER", a.Serial, "node-a", "node-b"}, ""},
		{[]string{"certs", "list", "-o", "wide"}, 0, []string{"SUBJECT", "VIA", "CN=node-a"}, ""},
		{[]string{"certs", "list", "-n", "node-a", "--no-headers"}, 0, []string{a.Serial}, ""},
		{[]string{"certs", "list", "-o", "yaml"}, 0, []string{"certificatePem: |", "-----BEGIN CERTIFICATE-----"}, ""},
		{[]string{"nodes", "list", "--limit", "1", "--no-headers"}, 0, []string{"node-a"}, ""},
		{[]string{"nodes", "revoke", "node-b", "-o", "json"}, 0, []string{`"revoked": 1`}, ""},
		{[]string{"nodes", "revoke", "node-b"}, 0, []string{"node-b is already revoked"}, ""},
		{[]string{"nodes", "revoke", "nosuch"}, 2, nil, `ipsecca nodes revoke: node "nosuch" not found`},
		// Exit 1: this in-process CA advertises no address, so its health cannot be asked.
		{[]string{"status"}, 1, []string{"backend: bolt", "version: (devel)", "VERSION"}, ""},
		{[]string{"ca", "crl", "-o", "json"}, 0, []string{`"pem": "-----BEGIN X509 CRL-----`, `"revoked": [`}, ""},
		{[]string{"audit", "list", "--limit", "2", "--no-headers"}, 0, nil, ""},
		{[]string{"schedule", "-o", "json"}, 0, []string{`"entries": [`}, ""},
		{[]string{"audit", "verify", "-o", "json"}, 0, []string{`"ok": true`, `"records": `}, ""},
	} {
		code, out, errOut := c.cli(tc.args...)
		ok := code == tc.code && strings.Contains(errOut, tc.stderr)
		for _, s := range tc.stdout {
			ok = ok && strings.Contains(out, s)
		}
		if !ok {
			t.Errorf("ipsecca %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(tc.args, " "), code, out, errOut)
		}
	}

	// --no-headers prints rows alone; --limit keeps that many.
	if _, out, _ := c.cli("audit", "list", "--limit", "2", "--no-headers"); strings.Count(out, "\n") != 2 ||
		strings.Contains(out, "SEQ") {
		t.Errorf("audit list --limit 2 --no-headers:\n%s", out)
	}
	// -o json reads back as the API's message, with PEM as text and
	// sequence numbers as numbers; --json still works, deprecated.
	_, out, errOut := c.cli("certs", "list", "-n", "node-a", "--json")
	list := new(ipseccav1.ListCertificatesResponse)
	if err := clijson.Unmarshal([]byte(out), list); err != nil || len(list.GetCertificates()) != 1 ||
		!bytes.HasPrefix(list.GetCertificates()[0].GetCertificatePem(), []byte("-----BEGIN CERTIFICATE-----")) ||
		!strings.Contains(errOut, "--json has been deprecated, use -o json") {
		t.Errorf("certs list --json: %v\n%s%s", err, out, errOut)
	}
	_, out, _ = c.cli("audit", "list", "-o", "json")
	var events struct{ Events []struct{ Seq any } }
	if json.Unmarshal([]byte(out), &events) != nil || len(events.Events) == 0 {
		t.Fatalf("audit list -o json:\n%s", out)
	}
	if _, isNumber := events.Events[0].Seq.(float64); !isNumber {
		t.Errorf("audit list -o json: seq %#v is not a number", events.Events[0].Seq)
	}

	// Completion asks the CA for its nodes, with the connection flags given.
	var stdout, stderr bytes.Buffer
	run([]string{"__complete", "nodes", "show", "--data-dir", c.dir, "--server", c.addr, "node-"}, &stdout, &stderr)
	if !strings.Contains(stdout.String(), "node-a\n") || !strings.Contains(stdout.String(), "node-b\n") {
		t.Errorf("completion of nodes show: %q %q", stdout.String(), stderr.String())
	}
	stdout.Reset()
	run([]string{"__complete", "certs", "list", "--state", ""}, &stdout, &stderr)
	if !strings.HasPrefix(stdout.String(), "active\nsuperseded\nrevoked\nexpired\n") {
		t.Errorf("completion of --state: %q", stdout.String())
	}
	stdout.Reset()
	run([]string{"__complete", "nodes", "show", "--data-dir", c.dir, "--server", "127.0.0.1:1", ""}, &stdout,
		&stderr)
	if !strings.HasPrefix(stdout.String(), ":4\n") { // no names, no files, no error
		t.Errorf("completion without a CA: %q", stdout.String())
	}
}

// An unreachable server: the error says which address was tried, how it
// was chosen, and what to check.
func TestUnreachableServer(t *testing.T) {
	c := startMeshCA(t)
	for _, tc := range []struct {
		env, flag, want string
	}{
		{"", "127.0.0.1:1", "tried 127.0.0.1:1 (from --server)"},
		{"127.0.0.1:1", "", "tried 127.0.0.1:1 (from $IPSECCA_SERVER)"},
	} {
		t.Setenv(envServer, tc.env)
		args := []string{"certs", "list", "--data-dir", c.dir, "--timeout", "5s"}
		if tc.flag != "" {
			args = append(args, "--server", tc.flag)
		}
		var out, errb bytes.Buffer
		start := time.Now()
		code := run(args, &out, &errb)
		if code != 1 || !strings.HasPrefix(errb.String(), "ipsecca certs list: Unavailable: ") ||
			!strings.Contains(errb.String(), tc.want) || !strings.Contains(errb.String(), "'ipsecca serve' runs") {
			t.Errorf("%v (env %q): exit %d, %s", args, tc.env, code, errb.String())
		}
		t.Logf("unreachable after %v (read calls retried)", time.Since(start).Round(time.Millisecond))
	}
	os.Unsetenv(envServer)
}
