package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startOVSDB runs a real ovsdb-server with the Open_vSwitch schema in dir
// and returns its remote (unix:dir/db.sock). No ovs-vswitchd: the sidecar
// writes other_config without waiting for one.
func startOVSDB(t *testing.T, dir string) string {
	t.Helper()
	for _, tool := range []string{"ovsdb-tool", "ovsdb-server", "ovs-vsctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run `make deps` (openvswitch-switch)", tool)
		}
	}
	db := filepath.Join(dir, "conf.db")
	sh(t, "ovsdb-tool", "create", db, "/usr/share/openvswitch/vswitch.ovsschema")
	sock := filepath.Join(dir, "db.sock")
	cmd := exec.Command("ovsdb-server", db, "--remote=punix:"+sock, "--unixctl="+filepath.Join(dir, "ovsdb.ctl"),
		"--no-chdir", "--log-file="+filepath.Join(dir, "ovsdb.log"))
	cmd.Env = append(os.Environ(), "OVS_RUNDIR="+dir, "OVS_LOGDIR="+dir, "OVS_DBDIR="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	remote := "unix:" + sock
	for deadline := time.Now().Add(10 * time.Second); ; {
		if exec.Command("ovs-vsctl", "--db="+remote, "--no-wait", "init").Run() == nil {
			return remote
		}
		if time.Now().After(deadline) {
			t.Fatal("ovsdb-server did not answer")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sidecar --ovs against a real OVSDB: it points other_config at its PEM
// files once and keeps those paths through a rotation, the files holding
// the current certificate (ovs-monitor-ipsec 3.1 re-creates every conn
// when the paths change; the data path proof is TestOVSMesh).
func TestSidecarOVSOtherConfig(t *testing.T) {
	s := startServer(t, "")
	dir := t.TempDir()
	remote := startOVSDB(t, dir)
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte(mustRun(t, s.Env(), "token", "create", "--node", "node-a")), 0o600)
	state := filepath.Join(dir, "state")
	sidecar := func() {
		t.Helper()
		mustRun(t, nil, "sidecar", "--once", "--ovs", "--ovs-db", remote, "--ovs-rundir", dir,
			"--server", s.Addr, "--ca-file", s.CAFile(), "--node", "node-a", "--token-file", token,
			"--nss-dir", filepath.Join(dir, "nss"), "--state-dir", state)
	}
	otherConfig := func() string {
		t.Helper()
		return strings.TrimSpace(sh(t, "ovs-vsctl", "--db="+remote, "get", "Open_vSwitch", ".", "other_config"))
	}
	serialIn := func(path string) string {
		t.Helper()
		out := sh(t, "openssl", "x509", "-in", path, "-noout", "-serial")
		return strings.ToLower(strings.TrimLeft(strings.TrimPrefix(strings.TrimSpace(out), "serial="), "0"))
	}
	current := func() string {
		b, _ := os.ReadFile(filepath.Join(state, "current"))
		return strings.TrimSpace(string(b))
	}

	sidecar()
	pki := filepath.Join(state, "ovs")
	want := `{ca_cert="` + filepath.Join(pki, "ca.pem") + `", certificate="` + filepath.Join(pki, "node.pem") +
		`", private_key="` + filepath.Join(pki, "node-key.pem") + `"}`
	if got := otherConfig(); got != want {
		t.Fatalf("other_config = %s\nwant %s", got, want)
	}
	first := current()
	if got := serialIn(filepath.Join(pki, "node.pem")); got != first {
		t.Fatalf("node.pem holds serial %s, want the current %s", got, first)
	}
	if fi, err := os.Stat(filepath.Join(pki, "node-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("node-key.pem: %v, mode %v; want 0600", err, fi.Mode())
	}

	mustRun(t, s.Env(), "rotate", "--node", "node-a")
	sidecar()
	if current() == first {
		t.Fatalf("the sidecar kept serial %s through a forced rotation", first)
	}
	if got := otherConfig(); got != want {
		t.Errorf("after the rotation other_config = %s; want the same paths %s", got, want)
	}
	if got := serialIn(filepath.Join(pki, "node.pem")); got != current() {
		t.Errorf("after the rotation node.pem holds serial %s, want %s", got, current())
	}
	// Someone points other_config elsewhere: the next pass puts it back.
	sh(t, "ovs-vsctl", "--db="+remote, "--no-wait", "set", "Open_vSwitch", ".", `other_config:certificate="/x.pem"`)
	sidecar()
	if got := otherConfig(); got != want {
		t.Errorf("other_config not restored: %s", got)
	}
}
