package bolt

import (
	"encoding/json"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/ipsecca/ipsecca/store"
)

// Export hands every record to sink in one read transaction (a consistent
// snapshot): the CA, certificates, tokens, nodes, request UIDs, then the
// audit events in order.
func (s *Store) Export(sink store.Sink) error {
	return s.view(func(tx *bbolt.Tx) error {
		var ca store.CA
		if err := getJSON(tx.Bucket(bucketCA), keyCurrentCA, &ca); err != nil {
			return fmt.Errorf("store: export: no CA in %s: %w", s.Path(), err)
		}
		if err := sink.PutCA(&ca); err != nil {
			return err
		}
		each := func(bucket []byte, fn func(k, v []byte) error) error {
			return tx.Bucket(bucket).ForEach(fn)
		}
		if err := each(bucketCerts, func(k, v []byte) error {
			c := new(store.Cert)
			if err := json.Unmarshal(v, c); err != nil {
				return fmt.Errorf("store: export: decode certificate %s: %w", k, err)
			}
			return sink.PutCert(c)
		}); err != nil {
			return err
		}
		if err := each(bucketTokens, func(k, v []byte) error {
			t := new(store.Token)
			if err := json.Unmarshal(v, t); err != nil {
				return fmt.Errorf("store: export: decode token %s: %w", k, err)
			}
			return sink.PutToken(t)
		}); err != nil {
			return err
		}
		if err := each(bucketNodes, func(k, v []byte) error {
			n := new(store.NodeInfo)
			if err := json.Unmarshal(v, n); err != nil {
				return fmt.Errorf("store: export: decode node %s: %w", k, err)
			}
			return sink.PutNode(n)
		}); err != nil {
			return err
		}
		if err := each(bucketRequests, func(k, v []byte) error { return sink.PutRequest(string(k), string(v)) }); err != nil {
			return err
		}
		return each(bucketEvents, func(k, v []byte) error {
			e := new(store.Event)
			if err := json.Unmarshal(v, e); err != nil {
				return fmt.Errorf("store: export: decode event %x: %w", k, err)
			}
			return sink.PutEvent(e)
		})
	})
}
