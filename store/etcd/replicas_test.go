package etcd_test

import (
	"context"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/internal/buildinfo"
	"github.com/ipsecca/ipsecca/internal/etcdtest"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/etcd"
)

// Replicas record their build where they record themselves, so status
// shows replicas of mixed versions: one that names its build keeps it, one
// that does not gets the running binary's.
func TestReplicasRecordVersion(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	prefix := freshPrefix()
	a, b := open(t, c, prefix), open(t, c, prefix)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for s, self := range map[*etcd.Store]store.Replica{a: {ID: "old", Version: "v0.9.0", Revision: "abc123"},
		b: {ID: "new"}} {
		go func() {
			if err := s.Participate(ctx, self, func(ctx context.Context) { <-ctx.Done() }); err != nil {
				t.Error(err)
			}
		}()
	}
	b0 := buildinfo.Get()
	want := map[string][2]string{"old": {"v0.9.0", "abc123"}, "new": {b0.Version, b0.Revision}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := a.ClusterStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][2]string{}
		for _, r := range st.Replicas {
			got[r.ID] = [2]string{r.Version, r.Revision}
		}
		if len(got) == 2 && got["old"] == want["old"] && got["new"] == want["new"] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas %v; want %v", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
