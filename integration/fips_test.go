package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestFIPS140Mode: a CA started with GODEBUG=fips140=only (the Go
// Cryptographic Module in FIPS 140-3 mode, every algorithm that is not
// approved refused) creates its root, serves, and a node whose sidecar runs
// in the same mode enrols and fills its NSS database; `ipsecca status` and
// the metric ipsecca_fips140_enabled say which mode the CA runs in, and say
// off for a CA started without it.
func TestFIPS140Mode(t *testing.T) {
	const only = "GODEBUG=fips140=only"
	for _, tc := range []struct {
		name, env, status, metric string
		value                     float64
	}{
		{"only", only, "fips140: only (module latest)", `ipsecca_fips140_enabled{mode="only",module="latest"}`, 1},
		{"off", "", "fips140: off", `ipsecca_fips140_enabled{mode="off",module=""}`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			srv := newServer(t, filepath.Join(t.TempDir(), "ca"), "--metrics-listen", metrics)
			if tc.env != "" {
				srv.ExtraEnv = []string{tc.env}
			}
			srv.Start()
			env := srv.Env()
			if tc.env != "" {
				env = append(env, tc.env)
			}
			if out := mustRun(t, env, "status"); !strings.Contains(out, tc.status+"\n") {
				t.Errorf("status does not say %q:\n%s", tc.status, out)
			}
			if v, ok := scrape(t, "http://"+metrics+"/metrics")[tc.metric]; !ok || v != tc.value {
				t.Errorf("%s = %v (exported: %v), want %v", tc.metric, v, ok, tc.value)
			}
			n := newNode(t, srv, "node-a")
			if r := n.once(t, env); r.Code != 0 {
				t.Fatalf("sidecar --once (%s): exit %d\n%s", tc.env, r.Code, r.Stderr)
			}
			assertNSS(t, n, 1)
			if tc.env != "" && !strings.Contains(srv.Log.String(), "created root CA") {
				t.Errorf("the CA did not create its root in this mode:\n%s", srv.Log.String())
			}
		})
	}
}

// TestFIPS140BundleValidate: in FIPS 140-3 mode with enforcement, a bundle
// made by Debian 12's OpenSSL 3.0 (PBKDF2 with 8-byte salts, which the Go
// module refuses) gets the finding p12-not-fips-approved, not a crash, and
// the same bundle passes outside that mode.
func TestFIPS140BundleValidate(t *testing.T) {
	dir := t.TempDir()
	p12, ca := bundleFixture(t, dir, "node1", "left_server", "")
	args := []string{"bundle", "validate", "--p12", p12, "--ca", ca, "--left", "node1.example.com", "--right",
		"ext.example.com", "--json"}
	if r := run(t, nil, args...); r.Code != 0 {
		t.Fatalf("outside FIPS mode: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	r := run(t, []string{"GODEBUG=fips140=only"}, args...)
	if strings.Contains(r.Stderr, "panic") || r.Code != 1 {
		t.Fatalf("fips140=only: exit %d, want 1 (findings)\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if !strings.Contains(r.Stdout, `"p12-not-fips-approved"`) ||
		!strings.Contains(r.Stdout, "salts shorter than 128 bits") {
		t.Fatalf("fips140=only: no p12-not-fips-approved finding naming the salt:\n%s", r.Stdout)
	}
}
