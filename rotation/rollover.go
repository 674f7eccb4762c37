package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/store"
)

// rolloverPoll is how often the leader evaluates a rollover's gate: the
// gates wait on the nodes' reports, which come every report interval.
const rolloverPoll = 5 * time.Second

// stepRollover runs the leader's part of a CA key rollover in progress
// (see ca/rollover.go) and returns when to look again (zero: none is in
// progress). Each step is idempotent, so a restart or a new leader resumes:
//
//  1. trust: when every node trusts the new CA, the new key issues;
//  2. issue: every node whose current certificate is from the other key is
//     made due, spread over the rollover's window from the phase's start
//     (a certificate already due or sooner keeps its time);
//  3. retire: the retired key's certificates are revoked, and the rollover
//     completes when no node's NSS holds the retired CA.
func (s *Scheduler) stepRollover(ctx context.Context, now time.Time) (time.Time, error) {
	rep, err := s.auth.RolloverStatus(ctx, now)
	if err != nil || rep.Phase == "" {
		return time.Time{}, err
	}
	if rep.Phase == store.RolloverTrust && rep.Ready {
		moved, err := s.auth.AdvanceRollover(ctx, rep.NewSerial, "scheduler")
		if err != nil {
			return time.Time{}, fmt.Errorf("rotation: rollover to the issue phase: %w", err)
		}
		if moved {
			s.log.Warn("CA key rollover: every node trusts the new CA; it issues now", "new", rep.NewSerial)
			s.bundleChanged()
			if rep, err = s.auth.RolloverStatus(ctx, now); err != nil {
				return time.Time{}, err
			}
		}
	}
	switch rep.Phase {
	case store.RolloverIssue:
		if err := s.rotateOntoNewKey(ctx, rep, now); err != nil {
			return time.Time{}, err
		}
	case store.RolloverRetire:
		if _, err := s.auth.RetireCertificates(ctx, "scheduler"); err != nil {
			return time.Time{}, err
		}
		if rep.Ready {
			done, err := s.auth.CompleteRollover(ctx, rep.OldSerial, "scheduler")
			if err != nil {
				return time.Time{}, err
			}
			if done {
				s.log.Warn("CA key rollover completed: no node holds the retired CA", "retired", rep.OldSerial)
				return time.Time{}, nil
			}
		}
	}
	return now.Add(rolloverPoll), nil
}

// rotateOntoNewKey is step 2 of stepRollover.
func (s *Scheduler) rotateOntoNewKey(ctx context.Context, rep *ca.RolloverReport, now time.Time) error {
	for _, n := range rep.Nodes {
		if n.OnNew {
			continue
		}
		c, err := s.st.CurrentCert(ctx, n.Node)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		at := rep.PhaseAt.Add(SpreadOffset(c.Serial, rep.Spread)).Truncate(time.Second)
		if !c.DueAt.IsZero() || !c.RotateAfter.After(at) {
			continue
		}
		ev := store.Event{Time: now.UTC(), Type: store.EventRotationForced, Actor: "scheduler", Node: n.Node,
			Serial: c.Serial, Detail: map[string]string{"due_at": at.UTC().Format(time.RFC3339),
				"reason": "ca-rollover"}}
		if err := s.st.Reschedule(ctx, c.Serial, at, ev); err != nil && !errors.Is(err, store.ErrExists) &&
			!errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}

func (s *Scheduler) bundleChanged() {
	if s.notify != nil {
		s.notify.CABundleChanged(s.auth.Root().BundlePEM)
	}
}
