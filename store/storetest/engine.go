package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/store"
)

// RunEngine is the conformance suite of a storage engine alone: the Tx and
// View contract the records in package store rely on (store.Engine), with
// no record logic. open returns a fresh, empty engine.
func RunEngine(t *testing.T, open func(t *testing.T) store.Engine) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, store.Engine)
	}{
		{"KeysOfEverySpaceRoundTrip", testEngineRoundTrip},
		{"ReadsSeeOwnWrites", testEngineOwnWrites},
		{"FailedOperationWritesNothing", testEngineFailedOperation},
		{"ScanFromAndCount", testEngineScan},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

// engineKeys are keys of every space of the schema, in the order a scan
// of each space returns them.
func engineKeys() []string {
	t1 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	return []string{
		store.KActive(store.KindAdmin, "admin"), store.KActive(store.KindNode, "n1"),
		store.KByNode("n1", "a1"), store.KByNode("n1", "a2"), store.KByNode("n10", "b1"),
		store.KOverdue(t1, "s1"), store.KRotate(t1, "s2"), store.KRotate(t1.Add(time.Nanosecond), "s1"),
		store.KRequest("uid-1"), store.KCA(), store.KCert("18ab"), store.KCert("18ac"),
		store.KEvent(1), store.KEvent(2), store.KEvent(256), // not the audit head: etcd stamps it on every commit
		store.KName("n1"), store.KNode("n1"), store.KOverdueN("s3"), store.KRevoked("s4"), store.KToken("t1"),
	}
}

func testEngineRoundTrip(t *testing.T, e store.Engine) {
	ctx := context.Background()
	keys := engineKeys()
	err := e.Update(ctx, func(tx store.Tx) error {
		for i, k := range keys {
			if err := tx.Put(k, []byte(fmt.Sprint("v", i))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = e.Read(ctx, func(v store.View) error {
		for i, k := range keys {
			val, ok, err := v.Get(k)
			if err != nil || !ok || string(val) != fmt.Sprint("v", i) {
				return fmt.Errorf("get %q: %q %v %v", k, val, ok, err)
			}
		}
		spaces := map[string][]string{}
		for _, k := range keys {
			space, _, _ := strings.Cut(k, "/")
			spaces[space] = append(spaces[space], k)
		}
		for space, want := range spaces {
			var got []string
			if err := v.Scan(space+"/", "", true, func(k string, val []byte) (bool, error) {
				if val != nil {
					return false, fmt.Errorf("keys-only scan of %s gave a value for %q", space, k)
				}
				got = append(got, k)
				return true, nil
			}); err != nil {
				return err
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("scan %s: %q, want %q", space, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Keys in a transaction agree with the view; a prefix inside a name
	// does not reach a longer name (n1 is not n10).
	err = e.Update(ctx, func(tx store.Tx) error {
		got, err := tx.Keys(store.KByNode("n1", ""))
		if err != nil {
			return err
		}
		if want := []string{store.KByNode("n1", "a1"), store.KByNode("n1", "a2")}; fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("keys of n1: %q, want %q", got, want)
		}
		for _, k := range keys {
			if err := tx.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e.Read(ctx, func(v store.View) error {
		for _, k := range keys {
			if _, ok, _ := v.Get(k); ok {
				t.Errorf("%q still there after delete", k)
			}
		}
		return nil
	})
}

func testEngineOwnWrites(t *testing.T, e store.Engine) {
	err := e.Update(context.Background(), func(tx store.Tx) error {
		if _, ok := tx.Get(store.KName("x")); ok {
			return errors.New("a key is there before it was written")
		}
		tx.Put(store.KName("x"), []byte("n1"))
		tx.Put(store.KByNode("n1", "s1"), nil)
		if v, ok := tx.Get(store.KName("x")); !ok || string(v) != "n1" {
			return fmt.Errorf("own write reads %q %v", v, ok)
		}
		if keys, err := tx.Keys(store.KByNode("n1", "")); err != nil || len(keys) != 1 {
			return fmt.Errorf("own write in keys: %q %v", keys, err)
		}
		tx.Delete(store.KName("x"))
		if _, ok := tx.Get(store.KName("x")); ok {
			return errors.New("own delete not seen")
		}
		if keys, _ := tx.Keys(store.KName("")); len(keys) != 0 {
			return fmt.Errorf("own delete in keys: %q", keys)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// testEngineFailedOperation: operations batched together; those that fail
// write nothing and the others commit.
func testEngineFailedOperation(t *testing.T, e store.Engine) {
	ctx := context.Background()
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 64)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.Update(ctx, func(tx store.Tx) error {
				tx.Put(store.KToken(fmt.Sprintf("t%02d", i)), []byte("x"))
				if i%2 == 1 {
					return boom
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (i%2 == 1) != errors.Is(err, boom) {
			t.Errorf("operation %d: %v", i, err)
		}
	}
	e.Read(ctx, func(v store.View) error {
		n, err := v.Count(store.KToken(""))
		if err != nil || n != 32 {
			t.Errorf("%d tokens stored (%v), want the 32 that succeeded", n, err)
		}
		return v.Scan(store.KToken(""), "", true, func(k string, _ []byte) (bool, error) {
			var i int
			fmt.Sscanf(strings.TrimPrefix(k, "tokens/t"), "%d", &i)
			if i%2 == 1 {
				t.Errorf("a failed operation's write %q was stored", k)
			}
			return true, nil
		})
	})
}

func testEngineScan(t *testing.T, e store.Engine) {
	ctx := context.Background()
	err := e.Update(ctx, func(tx store.Tx) error {
		for i := 1; i <= 20; i++ {
			tx.Put(store.KEvent(uint64(i)), []byte(fmt.Sprint(i)))
			tx.Put(store.KByNode("n1", fmt.Sprintf("s%02d", i)), nil)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = e.Read(ctx, func(v store.View) error {
		var got []string
		if err := v.Scan("events/", store.KEvent(18), false, func(_ string, val []byte) (bool, error) {
			got = append(got, string(val))
			return true, nil
		}); err != nil {
			return err
		}
		if fmt.Sprint(got) != "[18 19 20]" {
			return fmt.Errorf("events from 18: %v", got)
		}
		got = nil
		if err := v.Scan(store.KByNode("n1", ""), store.KByNode("n1", "s17")+"\x00", true, func(k string,
			_ []byte) (bool, error) {
			got = append(got, k)
			return len(got) < 2, nil
		}); err != nil {
			return err
		}
		if fmt.Sprint(got) != fmt.Sprint([]string{store.KByNode("n1", "s18"), store.KByNode("n1", "s19")}) {
			return fmt.Errorf("by_node after s17, two: %q", got)
		}
		vals, err := v.GetMany([]string{store.KEvent(3), store.KEvent(99), store.KEvent(1)})
		if err != nil || string(vals[0]) != "3" || vals[1] != nil || string(vals[2]) != "1" {
			return fmt.Errorf("get many: %q %v", vals, err)
		}
		for prefix, want := range map[string]int{"events/": 20, store.KByNode("n1", ""): 20, store.KByNode("n2",
			""): 0} {
			if n, err := v.Count(prefix); err != nil || n != want {
				return fmt.Errorf("count %s: %d %v, want %d", prefix, n, err, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
