package ca

import (
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
)

// lostAnswerStore injects the etcd engine's unknown outcome into Issue: the
// commit applies (apply) or not, and the caller is told neither.
type lostAnswerStore struct {
	*bolt.Store
	apply bool
	armed bool
}

func (s *lostAnswerStore) Issue(ctx context.Context, is store.Issuance) error {
	if !s.armed {
		return s.Store.Issue(ctx, is)
	}
	s.armed = false
	if s.apply {
		if err := s.Store.Issue(ctx, is); err != nil {
			return err
		}
	}
	return fmt.Errorf("%w: %w: etcd: commit: context deadline exceeded", store.ErrOutcomeUnknown, store.ErrUnavailable)
}

// TestIssueOutcomeUnknown (lifecycle point 8): when the store cannot say
// whether an issue committed, the CA reads it back: a stored certificate is
// returned; one not stored is an error that a retry with the same token and
// key resolves, and the token is not burnt.
func TestIssueOutcomeUnknown(t *testing.T) {
	for _, apply := range []bool{true, false} {
		t.Run(fmt.Sprintf("applied=%v", apply), func(t *testing.T) {
			_, st, clock := newTestAuthority(t, KeyECDSAP256)
			root, _, err := Bootstrap(context.Background(), st, RootConfig{}, clock)
			if err != nil {
				t.Fatal(err)
			}
			faulty := &lostAnswerStore{Store: st, apply: apply}
			a := New(faulty, root, Config{Clock: clock, Rand: rand.Reader})
			ctx := context.Background()
			tok, _, err := a.CreateToken(ctx, "node-a", "", time.Hour, "test")
			if err != nil {
				t.Fatal(err)
			}
			key := mustECDSA(t, elliptic.P256())
			csr := makeCSR(t, csrOpts{cn: "node-a", key: key})
			faulty.armed = true
			rec, err := a.EnrollWithToken(ctx, tok, csr)
			if apply {
				if err != nil {
					t.Fatalf("committed issue reported as %v", err)
				}
				if got, err := st.Cert(ctx, rec.Serial); err != nil || got.State != store.StateActive {
					t.Fatalf("stored: %v %v", got, err)
				}
				return
			}
			if !errors.Is(err, store.ErrOutcomeUnknown) {
				t.Fatalf("issue not committed: %v, want the unknown outcome", err)
			}
			rec, err = a.EnrollWithToken(ctx, tok, csr)
			if err != nil {
				t.Fatalf("retry with the same token and key: %v", err)
			}
			again, err := a.EnrollWithToken(ctx, tok, csr)
			if err != nil || again.Serial != rec.Serial {
				t.Fatalf("second retry: %v %v, want %s", again, err, rec.Serial)
			}
		})
	}
}
