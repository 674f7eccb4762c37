package bolt

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/ipsecca/ipsecca/store"
)

// rewriteSuffix names the copy Compact builds next to the database file; a
// leftover one (a crash before the rename) is removed on the next Open.
const rewriteSuffix = ".rewrite"

// compactTxMax bounds the data copied per transaction while compacting, so
// a large file is not copied in one transaction's memory.
const compactTxMax = 16 << 20

// keyRewrittenCA (meta bucket) holds the SHA-256 of the CA record the file
// held when Compact last rewrote it. A sealed CA record that differs means
// the file changed its CA since and a clear key may sit in freed pages: a
// seal whose rewrite a crash cut short, or a file sealed by an ipsecca that
// did not rewrite.
var keyRewrittenCA = []byte("rewritten_ca")

// Compact rewrites the database file with only its live data and replaces
// it, so nothing freed survives in it. Call it after the CA key was sealed:
// bbolt does not scrub freed pages, so the page that held the key in the
// clear stays readable in the file until it is reused.
//
// It is crash-safe: the copy is written and fsynced under a temporary name,
// then renamed over the file (and the directory fsynced), so the name holds
// either the old file or the complete new one. The old file's blocks are
// then overwritten with zeros before its last reference goes. (Zeros reach
// the same blocks on ext4/xfs; a copy-on-write filesystem or an SSD's
// remapping may keep the old data on the medium.) Reads and writes wait
// while it runs; the store stays usable after it.
func (s *Store) Compact() error {
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if s.queue.Closed() {
		return store.ErrUnavailable
	}
	tmp := s.path + rewriteSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("store: rewrite: %w", err)
	}
	// NoSync while copying: an unfinished copy is thrown away, and one
	// Sync at the end makes the finished one durable before the rename.
	dst, err := bbolt.Open(tmp, 0o600,
		&bbolt.Options{Timeout: 2 * time.Second, FreelistType: bbolt.FreelistMapType, NoSync: true})
	if err != nil {
		return fmt.Errorf("store: rewrite: %w", err)
	}
	fail := func(err error) error {
		dst.Close()
		os.Remove(tmp)
		return fmt.Errorf("store: rewrite %s: %w", s.path, err)
	}
	if err := bbolt.Compact(dst, s.db, compactTxMax); err != nil {
		return fail(err)
	}
	if err := dst.Update(markRewritten); err != nil {
		return fail(err)
	}
	dst.NoSync = false
	if err := dst.Sync(); err != nil {
		return fail(err)
	}
	// Opened before the rename so its blocks can be zeroed after it.
	old, err := os.OpenFile(s.path, os.O_WRONLY, 0)
	if err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		old.Close()
		return fail(err)
	}
	// The name holds the new file now: switch to it whatever fails next.
	// dst stays open (and locked) rather than reopened, so no other process
	// can take the new file between a close and an open.
	prev := s.db
	s.db = dst
	errs := []error{syncDir(filepath.Dir(s.path))}
	// Zero the old blocks while its lock is still held, so a process that
	// opened the old name before the rename finds no database, not a file
	// it could write into unseen.
	errs = append(errs, zero(old), old.Close(), prev.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store: rewrote %s, then: %w", s.path, err)
	}
	return nil
}

// CompactPending reports that the CA key is sealed but the file was not
// rewritten since its CA record last changed, so the key may still be in
// the clear in freed pages: Compact should run.
func (s *Store) CompactPending() (bool, error) {
	var pending bool
	err := s.view(func(tx *bbolt.Tx) error {
		raw := tx.Bucket(bucketCA).Get(keyCurrentCA)
		if raw == nil {
			return nil
		}
		var ca store.CA
		if err := json.Unmarshal(raw, &ca); err != nil {
			return fmt.Errorf("store: decode ca/current: %w", err)
		}
		sum := sha256.Sum256(raw)
		pending = ca.KeyEncryption != "" && !bytes.Equal(tx.Bucket(bucketMeta).Get(keyRewrittenCA), sum[:])
		return nil
	})
	return pending, err
}

// markRewritten records, in the new copy, which CA record it was made with.
func markRewritten(tx *bbolt.Tx) error {
	raw := tx.Bucket(bucketCA).Get(keyCurrentCA)
	if raw == nil {
		return nil
	}
	sum := sha256.Sum256(raw)
	return tx.Bucket(bucketMeta).Put(keyRewrittenCA, sum[:])
}

// removeStaleRewrite drops a copy a crash left before its rename. Called
// with the database locked, so no other process is building one.
func removeStaleRewrite(path string) error {
	if err := os.Remove(path + rewriteSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("store: remove an unfinished rewrite: %w", err)
	}
	return nil
}

// zero overwrites f's contents with zeros and fsyncs them.
func zero(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	w := io.NewOffsetWriter(f, 0)
	for left := fi.Size(); left > 0; {
		n := min(left, int64(len(buf)))
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		left -= n
	}
	return f.Sync()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
