// Package migrate moves a CA from a bbolt data directory into an empty
// etcd prefix and verifies the copy (ipsecca store migrate): the root and
// its key (sealed on the way), certificates, tokens, nodes, request UIDs
// and the audit chain, from which etcd derives its indexes.
//
// It belongs to the store layer and imports no CA logic: sealing the CA
// key under the replicas' key-encryption key is the caller's Seal.
package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
	"github.com/ipsecca/ipsecca/store/etcd"
)

// ScheduleChecked is how many entries of the rotation schedule the
// verification compares.
const ScheduleChecked = 1000

// Actor is the actor of the ca.key_sealed event a migration records.
const Actor = "migrate"

// Options say what to move where.
type Options struct {
	// From is the source: a bbolt data directory whose server is stopped.
	From string
	// To is the destination: the etcd cluster and a prefix holding no CA
	// and no records.
	To etcd.Options
	// Seal returns the CA record the destination keeps (its key sealed
	// under the key-encryption key the replicas will use) and whether it
	// sealed a key that was in the clear; an error when the key does not
	// open. Required: ca.SealForMove with the replicas' KEK.
	Seal func(*store.CA) (out *store.CA, sealed bool, err error)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Report is what a migration did, as far as it got.
type Report struct {
	// Imported: the records were copied; Counts says how many of each.
	Imported bool
	Counts   etcd.ImportCounts
	// Endpoints and Prefix are where the copy went.
	Endpoints []string
	Prefix    string
	// Took is the time the copy took (not the checks).
	Took time.Duration
	// Checks compare the copy with the source, in order: the audit chain
	// (records that verify), certificate counts by kind and state, the
	// first ScheduleChecked entries of the rotation schedule.
	Checks []Check
	// KeySealed: the CA key, in the clear in bbolt, was sealed on the way
	// and the copy's audit log records it (ca.key_sealed).
	KeySealed bool
}

// Check is one comparison of the copy with its source.
type Check struct {
	Name         string
	Source, Copy string // the values compared, printed
}

// OK reports whether the copy matches the source.
func (c Check) OK() bool { return c.Source == c.Copy }

// Failed is the number of checks that did not match.
func (r *Report) Failed() int {
	n := 0
	for _, c := range r.Checks {
		if !c.OK() {
			n++
		}
	}
	return n
}

// MismatchError: the copy differs from the source in Failed checks; the
// prefix holds a partial copy that must be deleted before another try.
type MismatchError struct {
	Failed int
	Prefix string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf(
		"store migrate: %d check(s) failed; the etcd prefix %s holds a partial copy: delete it before trying again",
		e.Failed,
		e.Prefix,
	)
}

// source is what a migration reads of the store it moves (*bolt.Store).
type source interface {
	CA(ctx context.Context) (*store.CA, error)
	Export(sink store.Sink) error
	VerifyAudit(ctx context.Context) (uint64, error)
	CertCounts(ctx context.Context, now time.Time) (map[[2]string]int, error)
	Schedule(ctx context.Context, limit int) ([]*store.Cert, error)
}

var _ source = (*bolt.Store)(nil)

// FromBolt copies the bbolt store in o.From into the etcd prefix o.To,
// then verifies the copy: the audit chain verifies with the same number
// of records, certificate counts by kind and state match, the schedule
// matches. Only then, when Seal sealed a key that was in the clear, does
// it record ca.key_sealed in the copy's audit log. The report says what
// was done even with an error; a copy that differs from its source is a
// *MismatchError. A prefix that already holds a CA or records is refused
// (etcd.ErrNotEmpty) and left alone.
func FromBolt(ctx context.Context, o Options) (*Report, error) {
	src, err := bolt.Open(o.From)
	if err != nil {
		return &Report{}, err
	}
	defer src.Close()
	return run(ctx, src, o)
}

func run(ctx context.Context, src source, o Options) (*Report, error) {
	rep := &Report{Endpoints: o.To.Endpoints}
	if o.Seal == nil {
		return rep, errors.New("store migrate: no Seal: the CA key must be sealed for etcd")
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	material, err := src.CA(ctx)
	if err != nil {
		return rep, fmt.Errorf("store migrate: %s holds no CA: %w", o.From, err)
	}
	sealedCA, sealed, err := o.Seal(material)
	if err != nil {
		return rep, err
	}
	dst, err := etcd.Open(ctx, o.To)
	if err != nil {
		return rep, err
	}
	defer dst.Close()
	rep.Prefix = dst.Prefix()

	start := now()
	im, err := dst.NewImporter(ctx)
	if err != nil {
		return rep, err
	}
	if err := src.Export(caSink{Importer: im, ca: sealedCA}); err != nil {
		return rep, err
	}
	if err := im.Finish(); err != nil {
		return rep, err
	}
	rep.Imported, rep.Counts, rep.Took = true, im.Counts, now().Sub(start)

	if err := verify(ctx, rep, src, dst, now()); err != nil {
		return rep, err
	}
	if n := rep.Failed(); n > 0 {
		return rep, &MismatchError{Failed: n, Prefix: rep.Prefix}
	}
	if sealed {
		ev := store.Event{
			Time:   now().UTC(),
			Type:   store.EventCAKeySealed,
			Actor:  Actor,
			Detail: map[string]string{"from": "bolt:" + o.From},
		}
		if err := dst.AppendEvent(ctx, ev); err != nil {
			return rep, err
		}
		rep.KeySealed = true
	}
	return rep, nil
}

// caSink hands the exported records on, with the CA key sealed.
type caSink struct {
	*etcd.Importer
	ca *store.CA
}

func (s caSink) PutCA(*store.CA) error { return s.Importer.PutCA(s.ca) }

// verify compares the copy with the source, appending to rep.Checks.
func verify(ctx context.Context, rep *Report, src source, dst *etcd.Store, now time.Time) error {
	check := func(name string, a, b any) {
		rep.Checks = append(rep.Checks, Check{Name: name, Source: fmt.Sprint(a), Copy: fmt.Sprint(b)})
	}
	nSrc, err := src.VerifyAudit(ctx)
	if err != nil {
		return fmt.Errorf("store migrate: the source's audit chain: %w", err)
	}
	nDst, err := dst.VerifyAudit(ctx)
	if err != nil {
		return fmt.Errorf("store migrate: the copy's audit chain: %w", err)
	}
	check("audit chain", nSrc, nDst)
	cSrc, err := src.CertCounts(ctx, now)
	if err != nil {
		return err
	}
	cDst, err := dst.CertCounts(ctx, now)
	if err != nil {
		return err
	}
	check("certificate counts", cSrc, cDst)
	sSrc, err := src.Schedule(ctx, ScheduleChecked)
	if err != nil {
		return err
	}
	sDst, err := dst.Schedule(ctx, ScheduleChecked)
	if err != nil {
		return err
	}
	check(fmt.Sprintf("schedule (first %d)", ScheduleChecked), serialsOf(sSrc), serialsOf(sDst))
	return nil
}

// serialsOf summarises a schedule: its length and a hash of its serials
// in order.
func serialsOf(cs []*store.Cert) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString(c.Serial)
		b.WriteByte(' ')
	}
	sum := sha256.Sum256([]byte(b.String()))
	return fmt.Sprintf("%d certificates, sha256 %s", len(cs), hex.EncodeToString(sum[:8]))
}
