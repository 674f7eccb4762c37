package daemon

import (
	"context"
	"crypto/rand"
	"os"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/internal/etcdtest"
	"github.com/ipsecca/ipsecca/store/etcd"
)

// storeUp is the value of ipsecca_store_up in the instance's registry.
func storeUp(t *testing.T, in *Instance) float64 {
	t.Helper()
	mfs, err := in.Server.MetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "ipsecca_store_up" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no ipsecca_store_up")
	return 0
}

// TestStoreUp: ipsecca_store_up is 1 for a store of the process's own
// (bbolt), and follows a shared store (a real etcd): 0 while it cannot
// answer, 1 once it does again.
func TestStoreUp(t *testing.T) {
	if got := storeUp(t, openInstance(t, nil)); got != 1 {
		t.Fatalf("bbolt: ipsecca_store_up %v, want 1", got)
	}

	ec := etcdtest.Start(t, etcdtest.Options{Members: 1})
	ctx := context.Background()
	st, err := etcd.Open(ctx, etcd.Options{Endpoints: ec.Endpoints(), RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	kek := make(ca.KEK, 32)
	rand.Read(kek)
	in, err := Open(ctx, Options{DataDir: dir, Store: st, Cluster: st, HealthInterval: 100 * time.Millisecond,
		Root: ca.RootConfig{KEK: kek}, Rand: rand.Reader})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	wait := runUntil(t, runCtx, in, Doors{Listen: "127.0.0.1:0"})
	defer func() { cancel(); wait() }()
	eventually := func(what string, want float64) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for storeUp(t, in) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: ipsecca_store_up not %v within 15 s", what, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	eventually("etcd up", 1)
	ec.Kill(0)
	eventually("etcd killed", 0)
	if err := ec.Restart(0); err != nil {
		t.Fatal(err)
	}
	eventually("etcd back", 1)
}
