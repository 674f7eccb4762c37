package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/ipsecca/ipsecca/internal/buildinfo"
	"github.com/ipsecca/ipsecca/store"
)

// Participate registers self as a live replica and campaigns for
// leadership until ctx ends. While this replica leads, lead runs with a
// context that ends when leadership is lost (the session's lease expired:
// etcd unreachable for SessionTTL) or ctx ends. A replica that dies
// without resigning is replaced after at most SessionTTL; one that stops
// cleanly revokes its lease and is replaced at once.
//
// The replica's record carries the running build's version and revision
// (when self leaves them empty), so status shows mixed-version replicas.
func (s *Store) Participate(ctx context.Context, self store.Replica, lead func(context.Context)) error {
	if self.Version == "" && self.Revision == "" {
		b := buildinfo.Get()
		self.Version, self.Revision = b.Version, b.Revision
	}
	for ctx.Err() == nil {
		if err := s.participate(ctx, self, lead); err != nil && ctx.Err() == nil {
			s.log.Warn("leader election: retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

func (s *Store) participate(ctx context.Context, self store.Replica, lead func(context.Context)) error {
	ttl := max(1, int(s.ttl/time.Second))
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
	if err != nil {
		return unavailable("session", err)
	}
	defer func() {
		// Revoke the lease: the next replica takes over at once.
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.cli.Revoke(rctx, sess.Lease())
		sess.Close()
	}()
	raw, err := json.Marshal(self)
	if err != nil {
		return err
	}
	pctx, cancel := s.ctx(ctx)
	_, err = s.cli.Put(pctx, s.p+"replicas/"+self.ID, string(raw), clientv3.WithLease(sess.Lease()))
	cancel()
	if err != nil {
		return unavailable("register replica", err)
	}
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-sess.Done():
			stop()
		case <-lctx.Done():
		}
	}()
	e := concurrency.NewElection(sess, s.p+"leader")
	if err := e.Campaign(lctx, self.ID); err != nil {
		if lctx.Err() != nil && ctx.Err() == nil {
			return fmt.Errorf("store/etcd: session lost while campaigning")
		}
		return err
	}
	s.log.Info("leading: this replica runs the rotation scheduler and CA renewal", "replica", self.ID)
	lead(lctx)
	if ctx.Err() == nil {
		s.log.Warn("lost leadership (etcd session expired)", "replica", self.ID)
		return fmt.Errorf("store/etcd: leadership lost")
	}
	return nil
}

// WatchEvents calls fn with every audit event appended after it starts,
// by any replica, that store.Notice selects, in order, until ctx ends.
// After a gap it cannot fill (etcd compacted the revisions it needed) it
// goes on from the present.
func (s *Store) WatchEvents(ctx context.Context, fn func(*store.Event)) {
	prefix := s.p + "notices/"
	var rev int64
	for ctx.Err() == nil {
		if rev == 0 {
			gctx, cancel := s.ctx(ctx)
			resp, err := s.cli.Get(gctx, s.kHead())
			cancel()
			if err != nil {
				select {
				case <-ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
				continue
			}
			rev = resp.Header.Revision + 1
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range s.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev)) {
			if wr.CompactRevision != 0 {
				s.log.Warn(
					"event watch: revisions compacted; some notifications were missed",
					"from",
					rev,
					"compacted",
					wr.CompactRevision,
				)
				rev = 0
				break
			}
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				rev = ev.Kv.ModRevision + 1
				if ev.Type != mvccpb.PUT {
					continue
				}
				var e store.Event
				if err := json.Unmarshal(ev.Kv.Value, &e); err != nil {
					s.log.Error("event watch: undecodable event", "key", string(ev.Kv.Key), "err", err)
					continue
				}
				fn(&e)
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Healthy reports whether etcd answers a linearizable read now: the
// cluster has quorum and this replica reaches it. It reads the schema
// version key (count only) within the request timeout, or ctx's deadline
// when sooner; the error wraps store.ErrUnavailable.
func (s *Store) Healthy(ctx context.Context) error {
	// Require a leader: a member cut off from the others says so at once
	// instead of letting the read wait for a quorum.
	hctx, cancel := s.ctx(clientv3.WithRequireLeader(ctx))
	defer cancel()
	if _, err := s.cli.Get(hctx, s.p+"meta/schema_version", clientv3.WithCountOnly()); err != nil {
		return unavailable("health check", err)
	}
	return nil
}

// ClusterStatus reports the leading replica, the live replicas and each
// etcd member's health.
func (s *Store) ClusterStatus(ctx context.Context) (*store.ClusterStatus, error) {
	st := &store.ClusterStatus{Backend: "etcd"}
	cctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(cctx, s.p+"leader/", clientv3.WithFirstCreate()...)
	if err != nil {
		return nil, unavailable("leader", err)
	}
	if len(resp.Kvs) > 0 {
		st.Leader = string(resp.Kvs[0].Value)
	}
	reps, err := s.cli.Get(cctx, s.p+"replicas/", clientv3.WithPrefix())
	if err != nil {
		return nil, unavailable("replicas", err)
	}
	for _, kv := range reps.Kvs {
		var r store.Replica
		if json.Unmarshal(kv.Value, &r) == nil {
			st.Replicas = append(st.Replicas, r)
		}
	}
	ml, err := s.cli.MemberList(cctx)
	if err != nil {
		return nil, unavailable("member list", err)
	}
	for _, m := range ml.Members {
		cm := store.ClusterMember{Name: m.Name, ID: fmt.Sprintf("%x", m.ID)}
		if len(m.ClientURLs) > 0 {
			cm.Endpoint = m.ClientURLs[0]
			mctx, cancel := context.WithTimeout(ctx, time.Second)
			sr, err := s.cli.Status(mctx, cm.Endpoint)
			cancel()
			if err != nil {
				cm.Error = err.Error()
			} else {
				cm.Healthy = len(sr.Errors) == 0
				cm.Leader = sr.Leader == m.ID
				cm.DBSize, cm.RaftIndex = sr.DbSize, sr.RaftIndex
				if len(sr.Errors) > 0 {
					cm.Error = sr.Errors[0]
				}
			}
		}
		st.Members = append(st.Members, cm)
	}
	return st, nil
}
