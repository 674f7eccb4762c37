package integration

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeChecksFlagsBeforeWriting: serve checks every flag and binds
// every listener before it writes anything. A malformed value is a usage
// error (exit 2), a busy address a failure (exit 1) naming the address and
// the flag; either way the data directory holds nothing new: no CA, no
// admin credentials, no ipsecca.db.
func TestServeChecksFlagsBeforeWriting(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	held := busy.Addr().String()
	free := func() string { return freeAddr(t) }
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		says []string
	}{
		{"listen without a port", []string{"--listen", "127.0.0.1"}, 2, []string{"--listen", "want host:port"}},
		{"listen port out of range", []string{"--listen", "127.0.0.1:99999"}, 2, []string{"--listen", "99999"}},
		{"metrics listen malformed", []string{"--listen", free(), "--metrics-listen", "0.0.0.0:no-such-port"}, 2,
			[]string{"--metrics-listen", "0.0.0.0:no-such-port"}},
		{"empty listen", []string{"--listen", ""}, 2, []string{"--listen"}},
		{"unknown store", []string{"--listen", free(), "--store", "sqlite"}, 2, []string{"--store", "sqlite"}},
		{"bad lease namespace", []string{"--listen", free(), "--kube", "--kubeconfig", kubeconfig,
			"--lease-namespace", "Not_A_Namespace"}, 2, []string{"Not_A_Namespace"}},
		{"listen busy", []string{"--listen", held}, 1, []string{"--listen", held, "address already in use"}},
		{"metrics listen busy", []string{"--listen", free(), "--metrics-listen", held}, 1,
			[]string{"--metrics-listen", held, "address already in use"}},
		{"pprof listen busy", []string{"--listen", free(), "--pprof-listen", held}, 1,
			[]string{"--pprof-listen", held, "address already in use"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// An existing empty data directory, and one serve would create.
			for _, dir := range []string{t.TempDir(), filepath.Join(t.TempDir(), "new")} {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, binary, append([]string{"serve", "--data-dir", dir}, tc.args...)...)
				out, err := cmd.CombinedOutput()
				code := 0
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatal(err)
				}
				if ctx.Err() != nil {
					t.Fatalf("serve %v kept running:\n%s", tc.args, out)
				}
				if code != tc.code {
					t.Fatalf("serve %v: exit %d, want %d:\n%s", tc.args, code, tc.code, out)
				}
				for _, s := range tc.says {
					if !strings.Contains(string(out), s) {
						t.Fatalf("serve %v: output does not say %q:\n%s", tc.args, s, out)
					}
				}
				entries, err := os.ReadDir(dir)
				if err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
				if len(entries) > 0 {
					var names []string
					for _, e := range entries {
						names = append(names, e.Name())
					}
					t.Fatalf("serve %v wrote %v into the data directory", tc.args, names)
				}
			}
		})
	}
}

// freeAddr is a loopback address free at the time of the call.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
