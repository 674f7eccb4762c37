package store

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// View is how the queries below read an engine: one consistent snapshot
// (bbolt) or linearizable reads (etcd). Keys are the record keys of Tx.
type View interface {
	// Get returns the value under key and whether it exists.
	Get(key string) ([]byte, bool, error)
	// GetMany returns the values under keys, in order; nil for a missing one.
	GetMany(keys []string) ([][]byte, error)
	// Scan calls fn for each key under prefix (and its value unless
	// keysOnly), in order, from `from` (a whole key, inclusive; "" for
	// the first), until fn returns false or an error.
	Scan(prefix, from string, keysOnly bool, fn func(key string, val []byte) (bool, error)) error
	// Count returns how many keys are under prefix.
	Count(prefix string) (int, error)
}

// after is the first key that sorts after key.
func after(key string) string { return key + "\x00" }

func viewJSON(v View, key string, out any) error {
	raw, ok, err := v.Get(key)
	if err != nil {
		return err
	}
	if !ok {
		return ErrNotFound
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("store: decode %s: %w", key, err)
	}
	return nil
}

// CAOf returns the CA material, or ErrNotFound before init.
func CAOf(v View) (*CA, error) {
	ca := new(CA)
	return ca, viewJSON(v, KCA(), ca)
}

// TokenOf returns a stored token by id.
func TokenOf(v View, id string) (*Token, error) {
	t := new(Token)
	return t, viewJSON(v, KToken(id), t)
}

// CertOf returns a certificate by serial.
func CertOf(v View, serial string) (*Cert, error) {
	c := new(Cert)
	return c, viewJSON(v, KCert(serial), c)
}

// NameOwnerOf returns the node holding a certificate name, or "" when free.
func NameOwnerOf(v View, cn string) (string, error) {
	owner, _, err := v.Get(KName(cn))
	return string(owner), err
}

// NodeOf returns what is known about a node.
func NodeOf(v View, name string) (*NodeInfo, error) {
	n := new(NodeInfo)
	return n, viewJSON(v, KNode(name), n)
}

// certsOf reads certificates by serial, keeping the order; an index that
// names a missing certificate is an error.
func certsOf(v View, serials []string) ([]*Cert, error) {
	keys := make([]string, len(serials))
	for i, s := range serials {
		keys[i] = KCert(s)
	}
	raws, err := v.GetMany(keys)
	if err != nil {
		return nil, err
	}
	out := make([]*Cert, 0, len(raws))
	for i, raw := range raws {
		if raw == nil {
			return nil, fmt.Errorf("store: an index names certificate %s, which is missing", serials[i])
		}
		c := new(Cert)
		if err := json.Unmarshal(raw, c); err != nil {
			return nil, fmt.Errorf("store: decode certificate %s: %w", serials[i], err)
		}
		out = append(out, c)
	}
	return out, nil
}

// suffixes scans prefix's keys and returns what follows prefix in each,
// at most limit (0: all), keeping those keep accepts.
func suffixes(v View, prefix string, limit int, keep func(rest string) (string, bool, error)) ([]string, error) {
	var out []string
	err := v.Scan(prefix, "", true, func(k string, _ []byte) (bool, error) {
		if limit > 0 && len(out) >= limit {
			return false, nil
		}
		rest := strings.TrimPrefix(k, prefix)
		if keep != nil {
			r, ok, err := keep(rest)
			if err != nil || !ok {
				return false, err
			}
			rest = r
		}
		out = append(out, rest)
		return true, nil
	})
	return out, err
}

// ParseTimeKey splits a TimeKey ("<16 hex ns>/<serial>").
func ParseTimeKey(k string) (time.Time, string, error) {
	ts, serial, ok := strings.Cut(k, "/")
	ns, err := strconv.ParseUint(ts, 16, 64)
	if !ok || err != nil || len(ts) != 16 {
		return time.Time{}, "", fmt.Errorf("store: bad index key %q", k)
	}
	return time.Unix(0, int64(ns)).UTC(), serial, nil
}

// timeIndexSerials returns the serials of a time index ("by_rotate",
// "by_overdue") at or before `before` (zero: any), soonest first, at most limit.
func timeIndexSerials(v View, index string, before time.Time, limit int) ([]string, error) {
	return suffixes(v, index+"/", limit, func(rest string) (string, bool, error) {
		t, serial, err := ParseTimeKey(rest)
		if err != nil {
			return "", false, err
		}
		return serial, before.IsZero() || !t.After(before), nil
	})
}

// DueBeforeOf returns active node certificates not yet marked due whose
// rotate_after is at or before t, soonest first.
func DueBeforeOf(v View, t time.Time, limit int) ([]*Cert, error) {
	serials, err := timeIndexSerials(v, "by_rotate", t, limit)
	if err != nil {
		return nil, err
	}
	return certsOf(v, serials)
}

// GraceEndedBeforeOf returns due certificates whose grace ended at or before t.
func GraceEndedBeforeOf(v View, t time.Time, limit int) ([]*Cert, error) {
	serials, err := timeIndexSerials(v, "by_overdue", t, limit)
	if err != nil {
		return nil, err
	}
	return certsOf(v, serials)
}

// NextTimesOf returns the earliest rotate_after of a certificate not yet
// due and the earliest grace end of a due one (zero when there is none).
func NextTimesOf(v View) (rotate, grace time.Time, err error) {
	first := func(index string) (time.Time, error) {
		var t time.Time
		err := v.Scan(index+"/", "", true, func(k string, _ []byte) (bool, error) {
			var err error
			t, _, err = ParseTimeKey(strings.TrimPrefix(k, index+"/"))
			return false, err
		})
		return t, err
	}
	if rotate, err = first("by_rotate"); err != nil {
		return
	}
	grace, err = first("by_overdue")
	return
}

// CurrentCertOf returns the node's active node certificate.
func CurrentCertOf(v View, node string) (*Cert, error) {
	serial, ok, err := v.Get(KActive(KindNode, node))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNotFound
	}
	c, err := CertOf(v, string(serial))
	if err != nil {
		return nil, err
	}
	if c.State != StateActive {
		return nil, ErrNotFound
	}
	return c, nil
}

// NodesOf returns the names of the nodes the store knows, in order.
func NodesOf(v View) ([]string, error) { return suffixes(v, "nodes/", 0, nil) }

// NodeInfosOf returns every node's record, in name order.
func NodeInfosOf(v View) ([]*NodeInfo, error) {
	var out []*NodeInfo
	err := v.Scan("nodes/", "", false, func(k string, raw []byte) (bool, error) {
		n := new(NodeInfo)
		if err := json.Unmarshal(raw, n); err != nil {
			return false, fmt.Errorf("store: decode %s: %w", k, err)
		}
		out = append(out, n)
		return true, nil
	})
	return out, err
}

// NameCertsOf returns, for each certificate name in names, the node
// certificates issued under it, in serial order: those of the node
// holding the name, of a node so named, and every revoked one (the node
// that held it may have been forgotten since, its name released).
func NameCertsOf(v View, names []string) (map[string][]*Cert, error) {
	out := map[string][]*Cert{}
	if len(names) == 0 {
		return out, nil
	}
	want, nodes := map[string]bool{}, map[string]bool{}
	keys := make([]string, 0, len(names))
	for _, n := range names {
		want[n], nodes[n] = true, true
		keys = append(keys, KName(n))
	}
	owners, err := v.GetMany(keys)
	if err != nil {
		return nil, err
	}
	for _, o := range owners {
		if o != nil {
			nodes[string(o)] = true
		}
	}
	seen := map[string]bool{}
	var serials []string
	add := func(serial string) {
		if !seen[serial] {
			seen[serial] = true
			serials = append(serials, serial)
		}
	}
	err = v.Scan("by_node/", "", true, func(k string, _ []byte) (bool, error) {
		if node, serial, ok := strings.Cut(strings.TrimPrefix(k, "by_node/"), "/"); ok && nodes[node] {
			add(serial)
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	revoked, err := suffixes(v, "revoked/", 0, nil)
	if err != nil {
		return nil, err
	}
	for _, serial := range revoked {
		add(serial)
	}
	slices.Sort(serials)
	certs, err := certsOf(v, serials)
	if err != nil {
		return nil, err
	}
	for _, c := range certs {
		if c.Kind == KindNode && want[c.CommonName] {
			out[c.CommonName] = append(out[c.CommonName], c)
		}
	}
	return out, nil
}

// ScheduleOf returns up to limit certificates waiting on rotation: overdue
// ones first, then due ones by grace end, then scheduled ones by
// rotate_after.
func ScheduleOf(v View, limit int) ([]*Cert, error) {
	serials, err := suffixes(v, "overdue/", limit, nil)
	if err != nil {
		return nil, err
	}
	for _, index := range []string{"by_overdue", "by_rotate"} {
		if len(serials) >= limit {
			break
		}
		more, err := timeIndexSerials(v, index, time.Time{}, limit-len(serials))
		if err != nil {
			return nil, err
		}
		serials = append(serials, more...)
	}
	return certsOf(v, serials)
}

// OverdueCountOf is the number of overdue certificates.
func OverdueCountOf(v View) (int, error) { return v.Count("overdue/") }

// RevokedOf returns every revoked certificate (for the CRL).
func RevokedOf(v View) ([]*Cert, error) {
	serials, err := suffixes(v, "revoked/", 0, nil)
	if err != nil {
		return nil, err
	}
	return certsOf(v, serials)
}

// CertByRequestOf returns the certificate issued for a Kubernetes CSR UID.
func CertByRequestOf(v View, uid string) (*Cert, error) {
	serial, ok, err := v.Get(KRequest(uid))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNotFound
	}
	return CertOf(v, string(serial))
}

// ListCertsOf returns certificates matching f in serial order, and the
// cursor for the next page ("" when there is none).
func ListCertsOf(v View, f CertFilter) ([]*Cert, string, error) {
	limit := f.PageSize()
	var out []*Cert
	next := ""
	take := func(c *Cert) bool {
		if !f.Match(c) {
			return true
		}
		if len(out) == limit {
			next = out[len(out)-1].Serial
			return false
		}
		out = append(out, c)
		return true
	}
	if f.Node != "" {
		prefix, from := KByNode(f.Node, ""), ""
		if f.After != "" {
			from = after(KByNode(f.Node, f.After))
		}
		var serials []string
		err := v.Scan(prefix, from, true, func(k string, _ []byte) (bool, error) {
			serials = append(serials, strings.TrimPrefix(k, prefix))
			return true, nil
		})
		if err != nil {
			return nil, "", err
		}
		certs, err := certsOf(v, serials)
		if err != nil {
			return nil, "", err
		}
		for _, c := range certs {
			if !take(c) {
				break
			}
		}
		return out, next, nil
	}
	from := ""
	if f.After != "" {
		from = after(KCert(f.After))
	}
	err := v.Scan(KCert(""), from, false, func(k string, raw []byte) (bool, error) {
		c := new(Cert)
		if err := json.Unmarshal(raw, c); err != nil {
			return false, fmt.Errorf("store: decode %s: %w", k, err)
		}
		return take(c), nil
	})
	return out, next, err
}

// ListEventsOf returns audit events after f.AfterSeq in order, and whether
// more follow.
func ListEventsOf(v View, f EventFilter) ([]*Event, bool, error) {
	limit := f.PageSize()
	var out []*Event
	more := false
	err := v.Scan("events/", KEvent(f.AfterSeq+1), false, func(_ string, raw []byte) (bool, error) {
		e := new(Event)
		if err := json.Unmarshal(raw, e); err != nil {
			return false, fmt.Errorf("store: decode event: %w", err)
		}
		if !f.Match(e) {
			return true, nil
		}
		if len(out) == limit {
			more = true
			return false, nil
		}
		out = append(out, e)
		return true, nil
	})
	return out, more, err
}

// VerifyAuditOf recomputes the hash chain over every event and returns
// the number checked, or an *AuditError naming the first broken record.
func VerifyAuditOf(v View) (uint64, error) {
	var c ChainVerifier
	err := v.Scan("events/", "", false, func(_ string, raw []byte) (bool, error) { return true, c.Next(raw) })
	return c.Count(), err
}

// CertCountsOf counts certificates by kind and state at now (a full scan;
// callers cache the result).
func CertCountsOf(v View, now time.Time) (map[[2]string]int, error) {
	out := map[[2]string]int{}
	err := v.Scan(KCert(""), "", false, func(_ string, raw []byte) (bool, error) {
		k, err := CountKey(raw, now)
		out[k]++
		return err == nil, err
	})
	return out, err
}

// ListTokensOf returns the tokens f selects in id order, and the cursor of
// the next page ("" when there is none). Tokens expire within
// MaxTokenTTL, so a scan of them stays short.
func ListTokensOf(v View, f TokenFilter) ([]*Token, string, error) {
	limit := f.PageSize()
	var out []*Token
	next, from := "", ""
	if f.After != "" {
		from = after(KToken(f.After))
	}
	err := v.Scan(KToken(""), from, false, func(k string, raw []byte) (bool, error) {
		t := new(Token)
		if err := json.Unmarshal(raw, t); err != nil {
			return false, fmt.Errorf("store: decode %s: %w", k, err)
		}
		if !f.Match(t) {
			return true, nil
		}
		if len(out) == limit {
			next = out[len(out)-1].ID
			return false, nil
		}
		out = append(out, t)
		return true, nil
	})
	return out, next, err
}
