package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ipsecca/ipsecca/store"
)

// ErrNotEmpty: an import was asked into a prefix that already holds a CA
// or records; nothing was written.
var ErrNotEmpty = errors.New("store/etcd: the prefix already holds a CA or records; refusing to overwrite")

// Importer writes another store's records (store.Sink) under an empty
// prefix, deriving this backend's indexes, in transactions of at most
// MaxTxnOps keys. The audit head is written last, by Finish: until then
// the prefix is marked as being migrated.
type Importer struct {
	s      *Store
	ctx    context.Context
	ops    map[string]string // pending puts; a key written twice keeps the last value
	last   *store.Event
	Counts ImportCounts
}

// ImportCounts are what an import wrote.
type ImportCounts struct {
	Certs, Tokens, Nodes, Requests, Events int
}

var _ store.Sink = (*Importer)(nil)

// NewImporter checks that the prefix is empty and marks it as being
// migrated (so a second import fails).
func (s *Store) NewImporter(ctx context.Context) (*Importer, error) {
	for _, p := range []string{"ca/", "certs/", "tokens/", "events/", "meta/migrating"} {
		cctx, cancel := s.ctx(ctx)
		resp, err := s.cli.Get(cctx, s.p+p, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if err != nil {
			return nil, unavailable("check the prefix is empty", err)
		}
		if resp.Count > 0 {
			return nil, fmt.Errorf("%w: %s has keys under %s", ErrNotEmpty, s.p, p)
		}
	}
	cctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(cctx).If(
		clientv3.Compare(clientv3.CreateRevision(s.p+"meta/migrating"), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(s.kCA()), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(s.kHead()), "=", 0),
	).Then(clientv3.OpPut(s.p+"meta/migrating", "in progress")).Commit()
	if err != nil {
		return nil, unavailable("mark the prefix", err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("%w: %s (written to meanwhile)", ErrNotEmpty, s.p)
	}
	return &Importer{s: s, ctx: ctx, ops: map[string]string{}}, nil
}

func (im *Importer) put(key string, v []byte) error {
	im.ops[key] = string(v)
	if len(im.ops) >= im.s.maxOps {
		return im.flush()
	}
	return nil
}

func (im *Importer) putJSON(key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return im.put(key, raw)
}

func (im *Importer) flush() error {
	if len(im.ops) == 0 {
		return nil
	}
	ops := make([]clientv3.Op, 0, len(im.ops))
	for k, v := range im.ops {
		ops = append(ops, clientv3.OpPut(k, v))
	}
	ctx, cancel := im.s.ctx(im.ctx)
	defer cancel()
	if _, err := im.s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return unavailable("import", err)
	}
	clear(im.ops)
	return nil
}

// PutCA writes the CA record (the caller seals the key first).
func (im *Importer) PutCA(ca *store.CA) error { return im.putJSON(im.s.kCA(), ca) }

// PutCert writes a certificate and its index entries.
func (im *Importer) PutCert(c *store.Cert) error {
	s := im.s
	im.Counts.Certs++
	if err := im.putJSON(s.kCert(c.Serial), c); err != nil {
		return err
	}
	keys := map[string][]byte{s.kByNode(c.Node, c.Serial): nil}
	if c.State == store.StateActive {
		keys[s.kActive(c.Kind, c.Node)] = []byte(c.Serial)
	}
	if c.State == store.StateRevoked {
		keys[s.kRevoked(c.Serial)] = nil
	}
	if c.Kind == store.KindNode {
		keys[s.kName(c.CommonName)] = []byte(c.Node)
		if c.State == store.StateActive {
			switch {
			case c.DueAt.IsZero():
				keys[s.kRotate(c.RotateAfter, c.Serial)] = nil
			case c.OverdueAt.IsZero():
				keys[s.kOverdue(c.GraceUntil, c.Serial)] = nil
			default:
				keys[s.kOverdueN(c.Serial)] = nil
			}
		}
	}
	for k, v := range keys {
		if err := im.put(k, v); err != nil {
			return err
		}
	}
	return nil
}

// PutToken writes a token (its secret hash only, as stored).
func (im *Importer) PutToken(t *store.Token) error {
	im.Counts.Tokens++
	return im.putJSON(im.s.kToken(t.ID), t)
}

// PutNode writes a node's record.
func (im *Importer) PutNode(n *store.NodeInfo) error {
	im.Counts.Nodes++
	return im.putJSON(im.s.kNode(n.Name), n)
}

// PutRequest writes a Kubernetes CSR UID's certificate.
func (im *Importer) PutRequest(uid, serial string) error {
	im.Counts.Requests++
	return im.put(im.s.kRequest(uid), []byte(serial))
}

// PutEvent writes an audit event as it is (sequence and hashes kept).
func (im *Importer) PutEvent(e *store.Event) error {
	if im.last != nil && e.Seq != im.last.Seq+1 {
		return fmt.Errorf("store/etcd: import: event %d follows %d", e.Seq, im.last.Seq)
	}
	im.Counts.Events++
	im.last = e
	return im.putJSON(im.s.kEvent(e.Seq), e)
}

// Finish writes what is pending, then the audit head, and clears the
// migration mark.
func (im *Importer) Finish() error {
	if err := im.flush(); err != nil {
		return err
	}
	head := auditHead{}
	if im.last != nil {
		head = auditHead{Seq: im.last.Seq, Hash: im.last.Hash}
	}
	raw, err := json.Marshal(head)
	if err != nil {
		return err
	}
	ctx, cancel := im.s.ctx(im.ctx)
	defer cancel()
	if _, err := im.s.cli.Txn(ctx).Then(clientv3.OpPut(im.s.kHead(), string(raw)), clientv3.OpDelete(im.s.p+"meta/migrating")).Commit(); err != nil {
		return unavailable("finish the import", err)
	}
	return nil
}
