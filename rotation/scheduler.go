package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/store"
)

// Store is what the scheduler needs from a store backend.
type Store interface {
	DueBefore(ctx context.Context, t time.Time, limit int) ([]*store.Cert, error)
	GraceEndedBefore(ctx context.Context, t time.Time, limit int) ([]*store.Cert, error)
	NextTimes(ctx context.Context) (rotate, grace time.Time, err error)
	MarkDue(ctx context.Context, serial string, at time.Time, reason string, graceUntil time.Time, ev store.Event) error
	MarkOverdue(ctx context.Context, serial string, at time.Time, ev store.Event) error
	Reschedule(ctx context.Context, serial string, at time.Time, ev store.Event) error
	CurrentCert(ctx context.Context, node string) (*store.Cert, error)
	ActiveNodes(ctx context.Context) ([]string, error)
	AppendEvent(ctx context.Context, ev store.Event) error
	ListEvents(ctx context.Context, f store.EventFilter) ([]*store.Event, bool, error)
}

// Authority is the CA core as the scheduler uses it.
type Authority interface {
	Root() *ca.Root
	RenewRoot(ctx context.Context, actor string) (*ca.Root, error)
	RolloverStatus(ctx context.Context, now time.Time) (*ca.RolloverReport, error)
	AdvanceRollover(ctx context.Context, incomingSerial, actor string) (bool, error)
	RetireCertificates(ctx context.Context, actor string) (int, error)
	CompleteRollover(ctx context.Context, retiredSerial, actor string) (bool, error)
}

// Notifier tells nodes what to act on (the server's Watch streams).
type Notifier interface {
	RotationDue(node, serial, reason string)
	CABundleChanged(bundlePEM []byte)
}

var _ Authority = (*ca.Authority)(nil)

// batch bounds how many certificates one step handles per index read.
const batch = 500

// Scheduler marks certificates due and overdue at their time, renews the
// root in time, and wakes only when something is next due.
type Scheduler struct {
	st     Store
	auth   Authority
	notify Notifier
	policy Policy
	clock  ca.Clock
	log    *slog.Logger
	wake   chan struct{}
}

// NewScheduler returns a scheduler. notify may be nil.
func NewScheduler(
	st Store,
	auth Authority,
	notify Notifier,
	policy Policy,
	clock ca.Clock,
	log *slog.Logger,
) *Scheduler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Scheduler{
		st:     st,
		auth:   auth,
		notify: notify,
		policy: policy,
		clock:  clock,
		log:    log,
		wake:   make(chan struct{}, 1),
	}
}

// Policy returns the scheduler's policy.
func (s *Scheduler) Policy() Policy { return s.policy }

// Wake makes a running scheduler step now (after a forced rotation).
func (s *Scheduler) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Step does everything due at the clock's now and returns when the next
// thing is due (zero when nothing is scheduled).
func (s *Scheduler) Step(ctx context.Context) (time.Time, error) {
	now := s.clock.Now()
	root := s.auth.Root()
	rolloverNext, err := s.stepRollover(ctx, now)
	if err != nil {
		return time.Time{}, err
	}
	root = s.auth.Root()
	// A rollover replaces the root; a same-key renewal waits for its end.
	// A subordinate CA is renewed by its issuer (ca import): its renew_by
	// is reported (ca show, metrics), not acted on here.
	renewsItself := root.Rollover == nil && !root.Subordinate()
	if renewAt := s.policy.RootRenewAt(root.Cert); renewsItself && !now.Before(renewAt) {
		r, err := s.auth.RenewRoot(ctx, "scheduler")
		if err != nil {
			return time.Time{}, fmt.Errorf("rotation: renew root: %w", err)
		}
		if s.notify != nil {
			s.notify.CABundleChanged(r.BundlePEM)
		}
		root = r
	}
	for {
		certs, err := s.st.DueBefore(ctx, now, batch)
		if err != nil {
			return time.Time{}, err
		}
		for _, c := range certs {
			reason := "scheduled"
			if c.DueReason != "" {
				reason = c.DueReason
			}
			grace := s.policy.GraceUntil(now, c.NotAfter)
			ev := store.Event{
				Time:   now.UTC(),
				Type:   store.EventRotationDue,
				Actor:  "scheduler",
				Node:   c.Node,
				Serial: c.Serial,
				Detail: map[string]string{
					"reason":       reason,
					"rotate_after": c.RotateAfter.Format(time.RFC3339),
					"not_after":    c.NotAfter.Format(time.RFC3339),
				},
			}
			if err := s.st.MarkDue(ctx, c.Serial, now, reason, grace, ev); err != nil {
				if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExists) {
					continue // rotated or marked meanwhile
				}
				return time.Time{}, err
			}
			s.log.Info("rotation due", "node", c.Node, "serial", c.Serial, "reason", reason, "not_after", c.NotAfter)
			if s.notify != nil {
				s.notify.RotationDue(c.Node, c.Serial, reason)
			}
		}
		if len(certs) < batch {
			break
		}
	}
	for {
		certs, err := s.st.GraceEndedBefore(ctx, now, batch)
		if err != nil {
			return time.Time{}, err
		}
		for _, c := range certs {
			ev := store.Event{
				Time:   now.UTC(),
				Type:   store.EventRotationOverdue,
				Actor:  "scheduler",
				Node:   c.Node,
				Serial: c.Serial,
				Detail: map[string]string{
					"due_at":    c.DueAt.Format(time.RFC3339),
					"not_after": c.NotAfter.Format(time.RFC3339),
				},
			}
			if err := s.st.MarkOverdue(ctx, c.Serial, now, ev); err != nil {
				if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExists) {
					continue
				}
				return time.Time{}, err
			}
			s.log.Warn(
				"rotation overdue: node has not renewed",
				"node",
				c.Node,
				"serial",
				c.Serial,
				"due_at",
				c.DueAt,
				"not_after",
				c.NotAfter,
			)
			if s.notify != nil {
				s.notify.RotationDue(c.Node, c.Serial, "overdue")
			}
		}
		if len(certs) < batch {
			break
		}
	}
	rot, grace, err := s.st.NextTimes(ctx)
	if err != nil {
		return time.Time{}, err
	}
	var next time.Time
	if renewsItself {
		next = s.policy.RootRenewAt(root.Cert)
	} else if next, err = s.subordinateRenewalDue(ctx, root, now); err != nil {
		return time.Time{}, err
	}
	for _, t := range []time.Time{rot, grace, rolloverNext} {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next, nil
}

// subordinateRenewalDue records, once per certificate, that a subordinate
// CA reached its renew_by (ca.Root.SubordinateInfo), and returns when to
// look again (its renew_by while ahead, else zero).
func (s *Scheduler) subordinateRenewalDue(ctx context.Context, root *ca.Root, now time.Time) (time.Time, error) {
	capAt, renewBy, _ := root.SubordinateInfo(now)
	if renewBy.IsZero() || now.Before(renewBy) {
		return renewBy, nil
	}
	serial := ca.SerialString(root.Cert.SerialNumber)
	noted, _, err := s.st.ListEvents(ctx, store.EventFilter{Type: store.EventCARenewalDue, Limit: 1000})
	if err != nil {
		return time.Time{}, err
	}
	for _, e := range noted {
		if e.Serial == serial {
			return time.Time{}, nil
		}
	}
	s.log.Warn("the subordinate CA's certificate is due for renewal by its issuer: node certificates issued "+
		"from now on end with it", "serial", serial, "renew_by", renewBy, "node_not_after_cap", capAt)
	return time.Time{}, s.st.AppendEvent(ctx, store.Event{Time: now.UTC(), Type: store.EventCARenewalDue,
		Actor: "scheduler", Serial: serial, Detail: map[string]string{
			"renew_by": renewBy.UTC().Format(time.RFC3339), "node_not_after_cap": capAt.UTC().Format(time.RFC3339)}})
}

// maxSleep bounds one sleep, so a wall-clock jump is noticed within it.
const maxSleep = time.Hour

// Run steps at every due time until ctx ends. Failures are logged and
// retried after a short pause.
func (s *Scheduler) Run(ctx context.Context) {
	for {
		wait := maxSleep
		next, err := s.Step(ctx)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			s.log.Error("rotation step failed; retrying", "err", err)
			wait = 5 * time.Second
		case !next.IsZero():
			wait = min(max(next.Sub(s.clock.Now()), 0), maxSleep)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// Force makes the current certificate of node (or, with all, of every
// node) due: now, or spread evenly over the window. It returns how many
// certificates it scheduled and wakes the scheduler.
func (s *Scheduler) Force(ctx context.Context, node string, all bool, spread time.Duration, actor string) (int, error) {
	var nodes []string
	switch {
	case all && node != "":
		return 0, errors.New("rotation: give a node or all, not both")
	case all:
		var err error
		if nodes, err = s.st.ActiveNodes(ctx); err != nil {
			return 0, err
		}
	case node != "":
		nodes = []string{node}
	default:
		return 0, errors.New("rotation: give a node or all")
	}
	now := s.clock.Now()
	n := 0
	for i, name := range nodes {
		c, err := s.st.CurrentCert(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			if !all {
				return 0, fmt.Errorf("rotation: node %q has no active certificate: %w", name, store.ErrNotFound)
			}
			continue
		}
		if err != nil {
			return n, err
		}
		at := now
		if spread > 0 && len(nodes) > 1 {
			at = now.Add(spread * time.Duration(i) / time.Duration(len(nodes)))
		}
		ev := store.Event{Time: now.UTC(), Type: store.EventRotationForced, Actor: actor, Node: name, Serial: c.Serial,
			Detail: map[string]string{"due_at": at.UTC().Format(time.RFC3339)}}
		err = s.st.Reschedule(ctx, c.Serial, at, ev)
		if errors.Is(err, store.ErrExists) {
			// Already due: tell the node again, and record it (replicas
			// sharing the store tell their Watch streams from the record).
			ev.Detail = map[string]string{"already_due": "true"}
			if err := s.st.AppendEvent(ctx, ev); err != nil {
				return n, err
			}
			if s.notify != nil {
				s.notify.RotationDue(name, c.Serial, "forced")
			}
			n++
			continue
		}
		if err != nil {
			return n, err
		}
		n++
	}
	s.Wake()
	return n, nil
}
