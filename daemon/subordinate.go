package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/internal/atomicfile"
	"github.com/ipsecca/ipsecca/store"
)

// CSRFile is a subordinate CA's certificate request in the data directory
// (0644: it holds nothing secret), written by InitSubordinate for the
// organisation's root to sign.
const CSRFile = "ca.csr"

// InitSubordinate makes a subordinate CA in the store opts name (see
// ca.InitSubordinate: the key, sealed under opts.Root.KEK when set, and a
// request; run again, the same request) and writes the request to
// DATA-DIR/ca.csr. It issues nothing: the CA serves once its certificate
// is imported (ImportSubordinate, or ca import).
func InitSubordinate(ctx context.Context, opts Options) (*ca.SubordinateRequest, error) {
	st, done, err := offlineStore(ctx, opts, true)
	if err != nil {
		return nil, err
	}
	defer done()
	clock, rnd := opts.Clock, opts.Rand
	if clock == nil {
		clock = ca.ClockFunc(time.Now)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	req, err := ca.InitSubordinate(ctx, st, opts.Root, clock, rnd)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(opts.DataDir, CSRFile), req.CSRPEM, 0o644); err != nil {
		return nil, err
	}
	return req, nil
}

// ImportSubordinate imports a subordinate CA's certificate and chain into
// the store opts name, with no server running on it (ca.ImportSubordinate):
// the first import, before the first serve, or a renewal while the CA is
// stopped. The data directory must exist (init --subordinate made it).
func ImportSubordinate(ctx context.Context, opts Options, certPEM, chainPEM []byte) (*ca.SubordinateImport, error) {
	st, done, err := offlineStore(ctx, opts, false)
	if err != nil {
		return nil, err
	}
	defer done()
	now := time.Now()
	if opts.Clock != nil {
		now = opts.Clock.Now()
	}
	res, err := ca.ImportSubordinate(ctx, st, opts.Root.KEK, certPEM, chainPEM, now, "ca import (offline)")
	if errors.Is(err, store.ErrNotFound) {
		return nil, errors.New("daemon: this store holds no CA: make the subordinate CA first " +
			"(ipsecca init --subordinate) and have its ca.csr signed")
	}
	return res, err
}

// offlineStore opens the store as Open does (data directory made when
// create, 0700, checked), for a command that runs without a server.
func offlineStore(ctx context.Context, opts Options, create bool) (Store, func(), error) {
	if opts.Store != nil {
		return opts.Store, func() {}, nil
	}
	if opts.OpenStore == nil {
		return nil, nil, errors.New("daemon: Options need a Store or OpenStore")
	}
	if create {
		if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("data directory: %w", err)
		}
	} else if _, err := os.Stat(opts.DataDir); err != nil {
		return nil, nil, fmt.Errorf("data directory: %w", err)
	}
	if err := CheckPermissions(opts.DataDir); err != nil {
		return nil, nil, err
	}
	st, _, err := opts.OpenStore(ctx)
	if err != nil {
		return nil, nil, err
	}
	return st, func() { st.Close() }, nil
}
