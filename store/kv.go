package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Tx is one read-write transaction of a storage engine, as the record
// logic in this package sees it: the engine's whole contract for writes.
//
//  1. Keys are "<space>/<rest>" (see the K* builders); an engine maps them to
//     its own layout (bbolt buckets and binary keys, etcd prefixes).
//  2. Reads see the transaction's own writes.
//  3. A record operation that returns an error has written nothing: the
//     engine discards its writes, and the rest of its batch goes on.
//  4. An engine may run an operation more than once (etcd re-runs a batch
//     after fetching keys it had not read); operations are pure functions
//     of what they read.
type Tx interface {
	// Get returns the value under key and whether it exists.
	Get(key string) ([]byte, bool)
	Put(key string, val []byte) error
	Delete(key string) error
	// Keys returns the keys under prefix, in order.
	Keys(prefix string) ([]string, error)
}

// Key builders of the record schema. Names never contain "/" (ValidName),
// serials are hex, and times and sequence numbers are 16 hex digits, so
// keys sort as their values do.
func KCA() string                        { return "ca/current" }
func KAuditHead() string                 { return "meta/audit_head" }
func KCert(serial string) string         { return "certs/" + serial }
func KToken(id string) string            { return "tokens/" + id }
func KName(cn string) string             { return "names/" + cn }
func KNode(node string) string           { return "nodes/" + node }
func KRequest(uid string) string         { return "by_request/" + uid }
func KRevoked(serial string) string      { return "revoked/" + serial }
func KOverdueN(serial string) string     { return "overdue/" + serial }
func KByNode(node, serial string) string { return "by_node/" + node + "/" + serial }
func KActive(kind Kind, node string) string {
	return "active/" + string(kind) + "/" + node
}
func KEvent(seq uint64) string { return fmt.Sprintf("events/%016x", seq) }
func KRotate(t time.Time, serial string) string {
	return "by_rotate/" + TimeKey(t, serial)
}
func KOverdue(t time.Time, serial string) string {
	return "by_overdue/" + TimeKey(t, serial)
}

// TimeKey orders by time: 16 hex digits of the unix nanoseconds (as
// unsigned), then the serial.
func TimeKey(t time.Time, serial string) string {
	return fmt.Sprintf("%016x/%s", uint64(t.UnixNano()), serial)
}

func getJSON(tx Tx, key string, v any) error {
	raw, ok := tx.Get(key)
	if !ok {
		return ErrNotFound
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("store: decode %s: %w", key, err)
	}
	return nil
}

func putJSON(tx Tx, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Put(key, raw)
}

// Engine is a storage engine as the records run on it: every write
// operation in one of its transactions (batched with others as it sees
// fit; see Tx for the contract), every query over one of its views.
type Engine interface {
	Update(ctx context.Context, fn func(Tx) error) error
	Read(ctx context.Context, fn func(View) error) error
}
