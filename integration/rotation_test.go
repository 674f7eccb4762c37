package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRotationAndCARenewalThroughTheCLI: forced rotation shows in the
// schedule and completes on renewal; a CA renewal keeps every issued
// certificate verifying and ca.pem carries both roots.
func TestRotationAndCARenewalThroughTheCLI(t *testing.T) {
	srv := startServer(t, "", "--metrics-listen", "127.0.0.1:0")
	dir := t.TempDir()
	token := strings.TrimSpace(mustRun(t, srv.Env(), "token", "create", "--node", "node-a"))
	key, csr := opensslCSR(t, dir, "a", "/CN=node-a")
	cert := filepath.Join(dir, "a.pem")
	mustRun(t, nil, srv.enrollArgs("--token", token, csr, cert)...)

	if out := mustRun(t, srv.Env(), "rotate", "--node", "node-a"); !strings.Contains(out, "1 certificate(s)") {
		t.Fatalf("rotate: %s", out)
	}
	var sched struct {
		Entries []struct{ Node, Status string } `json:"entries"`
	}
	for i := 0; i < 50; i++ {
		json.Unmarshal([]byte(mustRun(t, srv.Env(), "schedule", "--json")), &sched)
		if len(sched.Entries) == 1 && sched.Entries[0].Status == "due" {
			break
		}
	}
	if len(sched.Entries) != 1 || sched.Entries[0].Status != "due" {
		t.Fatalf("schedule after rotate: %+v", sched)
	}
	_, csr2 := opensslCSR(t, dir, "a2", "/CN=node-a")
	mustRun(
		t,
		nil,
		"renew",
		"--server",
		srv.Addr,
		"--ca-file",
		srv.CAFile(),
		"--cert",
		cert,
		"--key",
		key,
		"--csr",
		csr2,
		"--out",
		filepath.Join(dir, "a2.pem"),
	)
	rot := mustRun(t, srv.Env(), "rotations", "list", "--node", "node-a")
	for _, want := range []string{"rotation.forced", "rotation.due", "rotation.completed"} {
		if !strings.Contains(rot, want) {
			t.Errorf("rotations list lacks %s:\n%s", want, rot)
		}
	}
	if r := run(t, srv.Env(), "rotate", "--node", "nobody"); r.Code != 2 ||
		!strings.Contains(r.Stderr, `ipsecca rotate: node "nobody" not found`) {
		t.Errorf("rotate unknown node: %+v", r)
	}

	before, _ := os.ReadFile(srv.CAFile())
	mustRun(t, srv.Env(), "ca", "renew")
	after, _ := os.ReadFile(srv.CAFile())
	if bytes.Count(after, []byte("BEGIN CERTIFICATE")) != 2 || !bytes.Contains(after, before) {
		t.Fatalf("ca.pem after renewal does not hold the new and the old root")
	}
	show := mustRun(t, srv.Env(), "ca", "show")
	if !strings.Contains(show, "issuing") || !strings.Contains(show, "previous") {
		t.Fatalf("ca show:\n%s", show)
	}
	// Same subject and key: the old-root certificate verifies against the
	// new root alone.
	newRoot := filepath.Join(dir, "new-root.pem")
	os.WriteFile(
		newRoot,
		after[:bytes.Index(after, []byte("-----END CERTIFICATE-----"))+len("-----END CERTIFICATE-----\n")],
		0o644,
	)
	for _, c := range []string{cert, filepath.Join(dir, "a2.pem")} {
		if v := sh(t, "openssl", "verify", "-CAfile", newRoot, c); !strings.Contains(v, "OK") {
			t.Fatalf("%s against the renewed root: %s", c, v)
		}
	}
	oldRoot := filepath.Join(dir, "old-root.pem")
	os.WriteFile(oldRoot, before, 0o644)
	id := func(f string) string { return sh(t, "openssl", "x509", "-in", f, "-noout", "-subject", "-pubkey") }
	if id(newRoot) != id(oldRoot) {
		t.Fatal("the renewed root changed subject or key")
	}
}

// TestAuditVerifyDetectsTampering: one changed byte in a stored record is
// found and named.
func TestAuditVerifyDetectsTampering(t *testing.T) {
	srv := startServer(t, "")
	for _, n := range []string{"node-a", "node-b", "node-c"} {
		mustRun(t, srv.Env(), "token", "create", "--node", n)
	}
	if out := mustRun(t, srv.Env(), "audit", "verify"); !strings.Contains(out, "intact") {
		t.Fatalf("audit verify: %s", out)
	}
	srv.Stop()
	db := filepath.Join(srv.DataDir, "ipsecca.db")
	raw, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	// The token.created event for node-b (the token record also names
	// node-b, but without the actor field). bbolt copies pages on write,
	// so stale copies may exist: change every one.
	marker := []byte(`"actor":"admin:ipsecca-admin","node":"node-b"`)
	if !bytes.Contains(raw, marker) {
		t.Fatal("event for node-b not found in the file")
	}
	raw = bytes.ReplaceAll(raw, marker, []byte(`"actor":"admin:ipsecca-admin","node":"node-x"`))
	if err := os.WriteFile(db, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	srv.Start()
	r := run(t, srv.Env(), "audit", "verify")
	if r.Code != 1 || !strings.Contains(r.Stderr, "audit log broken at record") ||
		!strings.Contains(r.Stderr, "tampered") {
		t.Fatalf("audit verify after tampering: %+v", r)
	}
}
