package bolt

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ipsecca/ipsecca/store"
)

// TestCompactAfterSeal: after the CA record goes from a clear key to a
// sealed one, the clear key is still in the file (bbolt keeps freed pages);
// Compact replaces the file with one that holds only live data, keeps every
// record and the audit chain, zeroes the old file, and leaves the store
// usable, also while requests run during it.
func TestCompactAfterSeal(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	ctx := context.Background()
	clearKey := []byte("-----BEGIN EC PRIVATE KEY-----\nclear-scalar-7f3a9c" + strings.Repeat("K", 200) +
		"\n-----END EC PRIVATE KEY-----\n")
	// JSON stores []byte as base64: that is the form the file holds.
	clearInFile := []byte(base64.StdEncoding.EncodeToString(clearKey))
	created := store.Event{Time: t0, Type: store.EventCACreated}
	if err := s.CreateCA(ctx, &store.CA{CertPEM: []byte("root"), KeyPEM: clearKey}, created); err != nil {
		t.Fatal(err)
	}
	if p, err := s.CompactPending(); err != nil || p {
		t.Fatalf("pending with a clear key: %v %v (nothing to scrub before a seal)", p, err)
	}
	for i := range 50 {
		if err := issue(s, cert(fmt.Sprintf("c%03d", i), fmt.Sprintf("node-%d", i), t0.Add(24*3600e9)), ""); err != nil {
			t.Fatal(err)
		}
	}
	sealed := &store.CA{
		CertPEM:       []byte("root"),
		KeyPEM:        []byte("sealed-nonce-and-ciphertext"),
		KeyEncryption: "aes256gcm",
	}
	if err := s.RenewCA(ctx, sealed, store.Event{Time: t0, Type: store.EventCAKeySealed}); err != nil {
		t.Fatal(err)
	}
	if raw, _ := os.ReadFile(path); !bytes.Contains(raw, clearInFile) {
		t.Fatal("the clear key is not in the file after the seal: this test no longer shows what Compact removes")
	}
	// A crash here (sealed, not rewritten) is seen on the next open.
	s.Close()
	if s, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	if p, err := s.CompactPending(); err != nil || !p {
		t.Fatalf("pending after a seal without a rewrite: %v %v", p, err)
	}
	before, _ := os.Stat(path)
	certsBefore, _, _ := s.ListCerts(ctx, store.CertFilter{Limit: 1000})
	eventsBefore, _, _ := s.ListEvents(ctx, store.EventFilter{Limit: 1000})
	oldFile, err := os.Open(path) // the old inode, to see it zeroed
	if err != nil {
		t.Fatal(err)
	}
	defer oldFile.Close()

	// Requests running while Compact swaps the file all succeed.
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 100 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs <- issue(s, cert(fmt.Sprintf("d%03d", i), fmt.Sprintf("dnode-%d", i), t0), "")
		}()
		go func() {
			defer wg.Done()
			_, err := s.CA(ctx)
			errs <- err
		}()
	}
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(before, after) {
		t.Fatal("the database file was not replaced")
	}
	if after.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %v, want 0600", after.Mode().Perm())
	}
	if _, err := os.Stat(path + rewriteSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary copy left behind: %v", err)
	}
	old, err := io.ReadAll(oldFile)
	if err != nil || len(old) == 0 || len(bytes.Trim(old, "\x00")) != 0 {
		t.Errorf("the old file was not zeroed (%d bytes, %v)", len(old), err)
	}
	assertScrubbed := func() {
		t.Helper()
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, clearInFile) || bytes.Contains(raw, []byte("clear-scalar-7f3a9c")) {
			t.Fatal("the clear key is still in the rewritten file")
		}
		if !bytes.Contains(raw, []byte(base64.StdEncoding.EncodeToString(sealed.KeyPEM))) {
			t.Fatal("the sealed key is not in the rewritten file")
		}
	}
	assertScrubbed()

	// Every record is there and the store goes on working.
	check := func(wantCerts, wantEvents int) {
		t.Helper()
		got, err := s.CA(ctx)
		if err != nil || got.KeyEncryption != "aes256gcm" || !bytes.Equal(got.KeyPEM, sealed.KeyPEM) {
			t.Fatalf("CA after rewrite: %+v %v", got, err)
		}
		certs, _, err := s.ListCerts(ctx, store.CertFilter{Limit: 1000})
		if err != nil || len(certs) != wantCerts {
			t.Fatalf("%d certificates (%v), want %d", len(certs), err, wantCerts)
		}
		if n, err := s.VerifyAudit(ctx); err != nil || n != uint64(wantEvents) {
			t.Fatalf("audit chain: %d records, %v; want %d", n, err, wantEvents)
		}
		if err := s.Check(); err != nil {
			t.Fatal(err)
		}
		if p, err := s.CompactPending(); err != nil || p {
			t.Fatalf("still pending after the rewrite: %v %v", p, err)
		}
	}
	check(len(certsBefore)+100, len(eventsBefore)+100)
	events, _, _ := s.ListEvents(ctx, store.EventFilter{Limit: 1000})
	for i, e := range eventsBefore {
		if events[i].Hash != e.Hash {
			t.Fatalf("event %d changed: %s, was %s", e.Seq, events[i].Hash, e.Hash)
		}
	}
	if err := issue(s, cert("e001", "late-node", t0), ""); err != nil {
		t.Fatal(err)
	}
	if s.Path() != path {
		t.Errorf("Path %q after rewrite, want %q", s.Path(), path)
	}
	// A second process is still kept out of the new file.
	if _, err := Open(dir); err == nil {
		t.Fatal("a second open of the rewritten file succeeded")
	}
	s.Close()
	if err := s.Compact(); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Compact after Close: %v", err)
	}

	// Reopened: the same records, nothing pending, and an unfinished copy
	// left by a crash is removed.
	if err := os.WriteFile(path+rewriteSuffix, []byte("half a copy"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + rewriteSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unfinished copy not removed on open: %v", err)
	}
	check(len(certsBefore)+101, len(eventsBefore)+101)
	assertScrubbed()
}
