package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
)

// clearKey is a CA key in the clear, in every form a copy of it could
// take in the data directory.
type clearKey struct {
	forms map[string][]byte
}

// readClearKey reads the CA key from the stopped server's store, where
// `init` without a KEK left it in the clear.
func readClearKey(t *testing.T, dir string) clearKey {
	t.Helper()
	m := storedCA(t, dir)
	if m.KeyEncryption != ca.KeyPlain {
		t.Fatalf("the CA key is already sealed (%q)", m.KeyEncryption)
	}
	b, _ := pem.Decode(m.KeyPEM)
	if b == nil {
		t.Fatalf("stored CA key is not PEM: %q", m.KeyPEM)
	}
	priv, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	scalar := priv.D.FillBytes(make([]byte, 32))
	inJSON := base64.StdEncoding.EncodeToString(m.KeyPEM) // how the JSON record holds []byte
	body := strings.Split(string(m.KeyPEM), "\n")[1]      // the PEM's first base64 line
	return clearKey{forms: map[string][]byte{
		"PEM text":                 m.KeyPEM,
		"PEM body line":            []byte(body),
		"DER":                      b.Bytes,
		"private scalar":           scalar,
		"private scalar (hex)":     []byte(hex.EncodeToString(scalar)),
		"private scalar (decimal)": []byte(new(big.Int).SetBytes(scalar).String()),
		"JSON record (base64 PEM)": []byte(inJSON),
		"part of the JSON record":  []byte(inJSON[64:128]),
	}}
}

func storedCA(t *testing.T, dir string) *store.CA {
	t.Helper()
	st, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := st.CA(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// found names every form of k found in any file under dir.
func (k clearKey) found(t *testing.T, dir string) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for name, form := range k.forms {
			if i := bytes.Index(raw, form); i >= 0 {
				rel, _ := filepath.Rel(dir, path)
				hits = append(hits, fmt.Sprintf("%s in %s at offset %d", name, rel, i))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

func writeKEK(t *testing.T) string {
	t.Helper()
	var raw [32]byte
	rand.Read(raw[:])
	path := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(raw[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// assertSealedAndServing: the data directory holds no form of the clear
// key, the store holds it sealed, and a server with the KEK starts on the
// file, signs under the sealed key and verifies its audit chain (which
// records the seal).
func assertSealedAndServing(t *testing.T, dir, kek string, key clearKey) {
	t.Helper()
	if hits := key.found(t, dir); len(hits) > 0 {
		t.Fatalf("the clear CA key survived the seal: %s", strings.Join(hits, "; "))
	}
	if _, err := os.Stat(filepath.Join(dir, bolt.FileName+".rewrite")); !os.IsNotExist(err) {
		t.Errorf("a temporary copy of the store is left in the data directory: %v", err)
	}
	if m := storedCA(t, dir); m.KeyEncryption != ca.KeyAES256GCM {
		t.Fatalf("stored CA key encryption %q, want %q", m.KeyEncryption, ca.KeyAES256GCM)
	}
	if out := mustRun(t, nil, "store", "check", "--data-dir", dir); !strings.Contains(out, "bbolt consistency: ok") {
		t.Fatalf("store check: %s", out)
	}
	srv := startServer(t, dir, "--kek-file", kek)
	if out := mustRun(t, srv.Env(), "audit", "verify"); !strings.Contains(out, "intact") {
		t.Fatalf("audit verify: %s", out)
	}
	out := mustRun(t, srv.Env(), "audit", "list", "--type", store.EventCAKeySealed)
	if strings.Count(out, store.EventCAKeySealed) != 1 {
		t.Fatalf("want one %s event:\n%s", store.EventCAKeySealed, out)
	}
	node := "node-sealed"
	token := strings.TrimSpace(mustRun(t, srv.Env(), "token", "create", "--node", node))
	tmp := t.TempDir()
	_, csr := opensslCSR(t, tmp, node, "/CN="+node, "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")
	pemFile := filepath.Join(tmp, node+".pem")
	mustRun(t, nil, srv.enrollArgs("--token", token, csr, pemFile)...)
	if v := sh(t, "openssl", "verify", "-CAfile", srv.CAFile(), pemFile); !strings.Contains(v, ": OK") {
		t.Fatalf("openssl verify: %s", v)
	}
	srv.Stop()
	if hits := key.found(t, dir); len(hits) > 0 {
		t.Fatalf("the clear CA key is back after serving: %s", strings.Join(hits, "; "))
	}
}

func statDB(t *testing.T, dir string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, bolt.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// assertRewritten: the start replaced the database file, and said so.
func assertRewritten(t *testing.T, dir string, before os.FileInfo, srv *serverProc) {
	t.Helper()
	if os.SameFile(before, statDB(t, dir)) {
		t.Error("the database file was not replaced by a rewritten one")
	}
	if !strings.Contains(srv.Log.String(), "rewrote the store file") {
		t.Errorf("serve did not log the rewrite:\n%s", srv.Log.String())
	}
}

// TestSealLeavesNoClearKey: a CA made by `init` without a KEK keeps its key
// in the clear in ipsecca.db; `serve --kek-file` seals it and rewrites the
// file, after which no byte of any file in the data directory holds the key
// (PEM, DER, scalar, or the stored record), and the server still works on
// the rewritten file.
func TestSealLeavesNoClearKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	mustRun(t, nil, "init", "--data-dir", dir)
	key := readClearKey(t, dir)
	if hits := key.found(t, dir); len(hits) == 0 {
		t.Fatal("the scan does not find the clear key before sealing: it would prove nothing after")
	}
	kek := writeKEK(t)
	before := statDB(t, dir)
	srv := startServer(t, dir, "--kek-file", kek)
	srv.Stop()
	assertRewritten(t, dir, before, srv)
	assertSealedAndServing(t, dir, kek, key)
}

// TestSealedEarlierIsScrubbedOnStart: a file whose key was sealed without a
// rewrite (by an ipsecca before this one, or a crash between the seal and
// the rewrite) still holds the clear key in freed pages; the next start
// rewrites it.
func TestSealedEarlierIsScrubbedOnStart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	mustRun(t, nil, "init", "--data-dir", dir)
	key := readClearKey(t, dir)
	kekFile := writeKEK(t)
	text, _ := os.ReadFile(kekFile)
	kek, err := ca.ParseKEK(string(text))
	if err != nil {
		t.Fatal(err)
	}
	// Seal the way the old code did: only RenewCA, no rewrite.
	st, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m, err := st.CA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sealed, _, err := ca.SealForMove(m, kek)
	if err != nil {
		t.Fatal(err)
	}
	ev := store.Event{Time: time.Now().UTC(), Type: store.EventCAKeySealed, Actor: "init"}
	if err := st.RenewCA(ctx, sealed, ev); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if hits := key.found(t, dir); len(hits) == 0 {
		t.Fatal("sealing without a rewrite left no clear copy: this test shows nothing")
	}
	before := statDB(t, dir)
	srv := startServer(t, dir, "--kek-file", kekFile)
	srv.Stop()
	// Pages freed in an earlier process are reused first, so the start's
	// own writes may overwrite the clear copy: the rewrite must be seen.
	assertRewritten(t, dir, before, srv)
	assertSealedAndServing(t, dir, kekFile, key)
}

// TestSealKilledMidway: serve --kek-file is killed with SIGKILL at points
// spread over its start (before, during and after the seal), and as soon
// as the rewritten copy appears (during the rewrite or just after the
// rename); each time the name holds a whole database whose audit chain
// verifies, and the next start finishes the job.
func TestSealKilledMidway(t *testing.T) {
	kek := writeKEK(t)
	kills := []time.Duration{0, 40, 70, 90, 200}
	for range 3 {
		kills = append(kills, -1) // at the copy
	}
	for i, delay := range kills {
		dir := filepath.Join(t.TempDir(), "ca")
		mustRun(t, nil, "init", "--data-dir", dir)
		key := readClearKey(t, dir)
		srv := newServer(t, dir, "--kek-file", kek)
		srv.Launch()
		what := fmt.Sprintf("kill %d after %s", i, delay*time.Millisecond)
		if delay >= 0 {
			time.Sleep(delay * time.Millisecond)
		} else {
			what = fmt.Sprintf("kill %d at the copy", i)
			if !waitCopy(dir) {
				what += " (missed it)"
			}
		}
		srv.Kill()
		out := mustRun(t, nil, "store", "check", "--data-dir", dir)
		if !strings.Contains(out, "bbolt consistency: ok") || !strings.Contains(out, "audit chain: ok") {
			t.Fatalf("%s: store check:\n%s", what, out)
		}
		t.Logf("%s: %s", what, sealState(t, dir))
		srv.Start()
		srv.Stop()
		if hits := key.found(t, dir); len(hits) > 0 {
			t.Fatalf("%s, then a clean start: the clear key remains: %s", what, strings.Join(hits, "; "))
		}
	}
}

// waitCopy spins until the rewritten copy exists in dir; false once the
// database file was replaced already (or after 10 s).
func waitCopy(dir string) bool {
	db := filepath.Join(dir, bolt.FileName)
	orig, err := os.Stat(db)
	if err != nil {
		return false
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if _, err := os.Stat(db + ".rewrite"); err == nil {
			return true
		}
		if fi, err := os.Stat(db); err == nil && !os.SameFile(orig, fi) {
			return false
		}
	}
	return false
}

// sealState says how far a killed start got: key clear, sealed with the
// rewrite pending, or sealed and rewritten.
func sealState(t *testing.T, dir string) string {
	t.Helper()
	st, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := st.CA(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pending, err := st.CompactPending()
	switch {
	case err != nil:
		t.Fatal(err)
	case m.KeyEncryption == ca.KeyPlain:
		return "key still clear"
	case pending:
		return "sealed, rewrite pending"
	}
	return "sealed and rewritten"
}
