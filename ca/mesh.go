package ca

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ipsecca/ipsecca/store"
)

// The states of a mesh pair (MeshPair.State).
const (
	// PairCurrent: the peer authenticated with its active certificate,
	// issued under the current root.
	PairCurrent = "current"
	// PairOldRoot: with its active certificate, issued under an earlier
	// root with another key, which the current root does not verify. (A
	// certificate from before a same-key renewal verifies under the
	// renewed root: it is current, with the earlier root as
	// MeshPair.PeerRootSerial.)
	PairOldRoot = "old-root"
	// PairSuperseded, PairRevoked, PairExpired: with a certificate in that
	// state (store.Cert.StateAt).
	PairSuperseded = string(store.StateSuperseded)
	PairRevoked    = string(store.StateRevoked)
	PairExpired    = string(store.StateExpired)
	// PairUnknown: no certificate of the peer matches the key it
	// authenticated with.
	PairUnknown = "unknown"
	// PairDown: no IKE SA with the peer.
	PairDown = "down"
)

// PairStates lists every pair state, current first.
var PairStates = []string{PairCurrent, PairOldRoot, PairSuperseded, PairRevoked, PairExpired, PairUnknown, PairDown}

// MeshPair is one node's view of one of its peers.
type MeshPair struct {
	Node  string // the node that reported the tunnel
	Peer  string // the peer's certificate name
	State string // one of PairStates
	// PeerSerial is the certificate the peer authenticated with ("" when
	// none matches or the pair is down); PeerRootSerial the root that was
	// current when it was issued.
	PeerSerial      string
	PeerRootSerial  string
	AuthenticatedAt time.Time
	ChildSAs        uint32
	ReportedAt      time.Time // when the node reported its tunnels
	IKEState        uint64
	// NodeTrustsCurrentRoot: the node's last NSS inventory holds the
	// current root.
	NodeTrustsCurrentRoot bool
}

// Mesh is the state of every node pair the sidecars report.
type Mesh struct {
	Pairs             []MeshPair // by node, then peer
	CurrentRootSerial string
	NodesReporting    int // nodes whose sidecar reports tunnels
	// Converged: at least one pair, and every pair current.
	Converged bool
}

// Counts returns the number of pairs in each state (every state present).
func (m *Mesh) Counts() map[string]int {
	out := make(map[string]int, len(PairStates))
	for _, s := range PairStates {
		out[s] = 0
	}
	for _, p := range m.Pairs {
		out[p.State]++
	}
	return out
}

// ReportInventory stores what node's sidecar reports: its NSS inventory
// (audited when it changed) and, when the report carries them, its tunnels
// (peer names in canonical form). It returns the IKE SAs among those
// tunnels whose peer authenticated with a certificate this CA revoked: the
// sidecar deletes them, so the peer must authenticate again, and is refused.
func (a *Authority) ReportInventory(ctx context.Context, node string, rep store.Report) (*ReportReply, error) {
	now := a.clock.Now().UTC()
	for i := range rep.Tunnels {
		t := &rep.Tunnels[i]
		t.Peer, t.LocalSerial = store.CanonicalName(t.Peer), canonicalSerial(t.LocalSerial)
	}
	ev := store.Event{Time: now, Type: store.EventInventoryChanged, Actor: "node:" + node, Node: node,
		Detail: map[string]string{"entries": strconv.Itoa(len(rep.Entries))}}
	if _, err := a.st.PutInventory(ctx, node, rep, now, ev); err != nil {
		return nil, err
	}
	reply := &ReportReply{}
	if rep.PlutoRestartDue {
		nodes, err := a.st.NodeInfos(ctx)
		if err != nil {
			return nil, err
		}
		reply.RestartPlutoAt = plutoRestartAt(a.Root().Rollover, nodes, node, now)
	}
	if !rep.TunnelsReported {
		return reply, nil
	}
	var err error
	if reply.RevokedIKEStates, err = a.revokedStates(ctx, node, rep.Tunnels); err != nil {
		return nil, err
	}
	if reply.ReauthenticateIKEStates, err = a.staleStates(ctx, node, rep.Tunnels); err != nil {
		return nil, err
	}
	return reply, nil
}

// ReportReply is what a node's report asks of it.
type ReportReply struct {
	// RevokedIKEStates: delete these IKE SAs; the peer authenticated with
	// a revoked certificate.
	RevokedIKEStates []uint64
	// ReauthenticateIKEStates: authenticate these IKE SAs again; one side
	// presents a certificate that is no longer its current one.
	ReauthenticateIKEStates []uint64
	// RestartPlutoAt: when the node, whose report says its pluto must
	// start again, does so (plutoRestartAt); zero when it did not say so.
	RestartPlutoAt time.Time
}

// staleStates returns the IKE states of node's established tunnels on
// which either side presents a certificate other than its current one,
// for the tunnels node is to re-authenticate: of a pair, the side whose
// name sorts first, so that the two sides never start new IKE SAs at
// once. The peer's side is read from its last report.
func (a *Authority) staleStates(ctx context.Context, node string, tunnels []store.TunnelRecord) ([]uint64, error) {
	self, err := a.st.Node(ctx, node)
	if err != nil {
		return nil, err
	}
	cn := nodeCN(self)
	var states []uint64
	current := map[string]string{} // node -> its current certificate's serial
	currentOf := func(name string) (string, error) {
		if s, ok := current[name]; ok {
			return s, nil
		}
		c, err := a.st.CurrentCert(ctx, name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			current[name] = ""
		case err != nil:
			return "", err
		default:
			current[name] = c.Serial
		}
		return current[name], nil
	}
	for _, t := range tunnels {
		if !t.Established || t.IKEState == 0 || cn == "" || t.Peer <= cn {
			continue
		}
		// A revoked peer is not authenticated again: it is refused.
		owner, err := a.st.NameOwner(ctx, t.Peer)
		if errors.Is(err, store.ErrNotFound) {
			continue
		} else if err != nil {
			return nil, err
		}
		peer, err := a.st.Node(ctx, owner)
		if errors.Is(err, store.ErrNotFound) || (err == nil && peer.Revoked) {
			continue
		} else if err != nil {
			return nil, err
		}
		mine, err := currentOf(node)
		if err != nil {
			return nil, err
		}
		theirs, err := currentOf(owner)
		if err != nil {
			return nil, err
		}
		presented := presentedTo(peer, cn)
		if (t.LocalSerial != "" && mine != "" && t.LocalSerial != mine) ||
			(presented != "" && theirs != "" && presented != theirs) {
			states = append(states, t.IKEState)
		}
	}
	return states, nil
}

// canonicalSerial is a hex serial as the store keeps them: lower case,
// without leading zeros.
func canonicalSerial(s string) string {
	if t := strings.TrimLeft(strings.ToLower(s), "0"); t != "" || s == "" {
		return t
	}
	return "0"
}

// revokedStates returns the IKE states of node's established tunnels
// whose peer authenticated with a revoked certificate. The revoked
// certificates (the CRL's list) rule out most tunnels at once; for the
// others, the peer's own report of the certificate it presents settles it
// (when pluto lists no key), or the peer's certificates are read to tell
// which one has the key pluto lists.
func (a *Authority) revokedStates(ctx context.Context, node string, tunnels []store.TunnelRecord) ([]uint64, error) {
	revoked, err := a.st.Revoked(ctx)
	if err != nil || len(revoked) == 0 {
		return nil, err
	}
	byName := map[string][]*store.Cert{}
	for _, c := range revoked {
		if c.Kind == store.KindNode {
			byName[c.CommonName] = append(byName[c.CommonName], c)
		}
	}
	var m keyMatcher
	var states []uint64
	var keyed []store.TunnelRecord // tunnels whose key a revoked certificate has
	var self *store.NodeInfo
	presented := map[string]string{} // peer -> the certificate it presents to node
	for _, t := range tunnels {
		if !t.Established || t.IKEState == 0 || len(byName[t.Peer]) == 0 {
			continue
		}
		if t.PeerKeyID != "" || !t.PeerNotAfter.IsZero() {
			if m.match(t, byName[t.Peer], "") != nil {
				keyed = append(keyed, t)
			}
			continue
		}
		if self == nil {
			if self, err = a.st.Node(ctx, node); err != nil {
				return nil, err
			}
		}
		serial, ok := presented[t.Peer]
		if !ok {
			if serial, err = a.presentedBy(ctx, t.Peer, byName[t.Peer], nodeCN(self)); err != nil {
				return nil, err
			}
			presented[t.Peer] = serial
		}
		if m.match(t, byName[t.Peer], serial) != nil {
			states = append(states, t.IKEState)
		}
	}
	if len(keyed) > 0 {
		var peers []string
		for _, t := range keyed {
			if !slices.Contains(peers, t.Peer) {
				peers = append(peers, t.Peer)
			}
		}
		certs, err := a.st.NameCerts(ctx, peers)
		if err != nil {
			return nil, err
		}
		for _, t := range keyed {
			if c := m.match(t, certs[t.Peer], ""); c != nil && c.State == store.StateRevoked {
				states = append(states, t.IKEState)
			}
		}
	}
	if len(states) > 0 {
		slices.Sort(states)
		a.log.Warn("IKE SAs authenticated with revoked certificates", "node", node, "states", states)
	}
	return states, nil
}

// presentedBy is the serial of the certificate the peer named peer
// presents to the node named cn, by the peer's last report: the peer is
// the node of one of its revoked certificates that still holds the name.
func (a *Authority) presentedBy(ctx context.Context, peer string, revoked []*store.Cert, cn string) (string, error) {
	var tried []string
	for _, c := range revoked {
		if slices.Contains(tried, c.Node) {
			continue
		}
		tried = append(tried, c.Node)
		n, err := a.st.Node(ctx, c.Node)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return "", err
		}
		if nodeCN(n) == peer {
			return presentedTo(n, cn), nil
		}
	}
	return "", nil
}

// nodeCN is the certificate name a node's peers know it by.
func nodeCN(n *store.NodeInfo) string { return n.CommonName }

// presentedTo is the serial of the certificate n's tunnel to the peer
// named cn presents, by n's last report ("" when it reported none).
func presentedTo(n *store.NodeInfo, cn string) string {
	if n == nil || cn == "" {
		return ""
	}
	for _, t := range n.Tunnels {
		if t.Peer == cn && t.LocalSerial != "" {
			return t.LocalSerial
		}
	}
	return ""
}

// MeshStatus classifies every tunnel the sidecars report (see PairStates)
// at now.
func (a *Authority) MeshStatus(ctx context.Context, now time.Time) (*Mesh, error) {
	material, err := a.st.CA(ctx)
	if err != nil {
		return nil, err
	}
	roots, err := storedRoots(material)
	if err != nil {
		return nil, err
	}
	nodes, err := a.st.NodeInfos(ctx)
	if err != nil {
		return nil, err
	}
	var peers []string
	seen := map[string]bool{}
	for _, n := range nodes {
		for _, t := range n.Tunnels {
			if t.Established && !seen[t.Peer] {
				seen[t.Peer] = true
				peers = append(peers, t.Peer)
			}
		}
	}
	certs, err := a.st.NameCerts(ctx, peers)
	if err != nil {
		return nil, err
	}
	byCN := map[string]*store.NodeInfo{}
	for _, n := range nodes {
		if cn := nodeCN(n); cn != "" {
			byCN[cn] = n
		}
	}
	mesh := &Mesh{CurrentRootSerial: SerialString(roots[0].SerialNumber)}
	var m keyMatcher
	for _, n := range nodes {
		// A revoked or forgotten node reports no more: what it last said is
		// stale (its peers' reports say what they hold with it).
		if n.TunnelsAt.IsZero() || n.Revoked || !n.ForgottenAt.IsZero() {
			continue
		}
		mesh.NodesReporting++
		trusts := slices.ContainsFunc(n.Inventory, func(e store.InventoryEntry) bool {
			return e.Serial == mesh.CurrentRootSerial
		})
		for _, t := range n.Tunnels {
			p := MeshPair{Node: n.Name, Peer: t.Peer, State: PairDown, AuthenticatedAt: t.AuthenticatedAt,
				ChildSAs: t.ChildSAs, ReportedAt: n.TunnelsAt, IKEState: t.IKEState, NodeTrustsCurrentRoot: trusts}
			if t.Established {
				p.State = PairUnknown
				if c := m.match(t, certs[t.Peer], presentedTo(byCN[t.Peer], nodeCN(n))); c != nil {
					issuer := issuingRoot(roots, c)
					p.PeerSerial, p.State = c.Serial, pairState(c, issuer, roots[0], now)
					if issuer != nil {
						p.PeerRootSerial = SerialString(issuer.SerialNumber)
					}
				}
			}
			mesh.Pairs = append(mesh.Pairs, p)
		}
	}
	slices.SortStableFunc(mesh.Pairs, func(x, y MeshPair) int {
		if c := strings.Compare(x.Node, y.Node); c != 0 {
			return c
		}
		return strings.Compare(x.Peer, y.Peer)
	})
	mesh.Converged = len(mesh.Pairs) > 0
	for _, p := range mesh.Pairs {
		mesh.Converged = mesh.Converged && p.State == PairCurrent
	}
	return mesh, nil
}

// pairState is the state of a pair whose peer authenticated with c,
// issued under issuer (nil when that root is no longer kept).
func pairState(c *store.Cert, issuer, current *x509.Certificate, now time.Time) string {
	switch st := c.StateAt(now); {
	case st != store.StateActive:
		return string(st)
	case issuer == nil || !sameKey(issuer, current):
		return PairOldRoot
	}
	return PairCurrent
}

// sameKey reports whether two certificates hold the same public key.
func sameKey(a, b *x509.Certificate) bool {
	k, ok := a.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b.PublicKey)
}

// issuingRoot is the known CA (roots, newest first) whose key signed c:
// of several with that key (same-key renewals), the newest made at or
// before c was issued; nil when none is kept.
func issuingRoot(roots []*x509.Certificate, c *store.Cert) *x509.Certificate {
	var found *x509.Certificate
	for _, r := range roots {
		if !issuedBy(c.DER, r) {
			continue
		}
		if !r.NotBefore.After(c.IssuedAt) {
			return r
		}
		if found == nil {
			found = r
		}
	}
	return found
}

// storedRoots parses every CA certificate the record knows: the issuing
// one first, then (newest first) the other CA of a rollover, the earlier
// roots of each key, and a subordinate's chain.
func storedRoots(m *store.CA) ([]*x509.Certificate, error) {
	block, _ := pem.Decode(m.CertPEM)
	if block == nil {
		return nil, fmt.Errorf("ca: the stored root is not PEM")
	}
	cur, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: stored root certificate: %w", err)
	}
	roots := []*x509.Certificate{cur}
	ders := slices.Concat(m.Previous, m.Chain)
	if ro := m.Rollover; ro != nil && ro.Other != nil {
		if b, _ := pem.Decode(ro.Other.CertPEM); b != nil {
			ders = append(ders, b.Bytes)
		}
		ders = append(ders, ro.Other.Previous...)
	}
	for _, der := range ders {
		if c, err := x509.ParseCertificate(der); err == nil {
			roots = append(roots, c)
		}
	}
	slices.SortStableFunc(roots[1:], func(a, b *x509.Certificate) int { return b.NotBefore.Compare(a.NotBefore) })
	return roots, nil
}

// keyMatcher finds the certificate a peer authenticated with, caching the
// key ids of the certificates it has parsed.
type keyMatcher struct {
	ids map[string]string // serial -> libreswan key id; "" for a key that is not RSA
}

// match returns the certificate among certs that t's peer authenticated
// with, or nil: one whose RSA key has t's key id, else (a key that is not
// RSA, or no key id reported) one whose NotAfter is t's to the second;
// among several, one that matches both, then the newest issued. When
// the node's IKE daemon lists neither (pluto 4.10 lists no peer keys), it
// is the one the peer reports it presents (serial presented).
func (m *keyMatcher) match(t store.TunnelRecord, certs []*store.Cert, presented string) *store.Cert {
	if t.PeerKeyID == "" && t.PeerNotAfter.IsZero() {
		for _, c := range certs {
			if presented != "" && c.Serial == presented {
				return c
			}
		}
		return nil
	}
	var best *store.Cert
	bestRank := 0
	for _, c := range certs {
		sameEnd := !t.PeerNotAfter.IsZero() && c.NotAfter.Unix() == t.PeerNotAfter.Unix()
		ok := sameEnd
		if id := m.keyID(c); id != "" && t.PeerKeyID != "" {
			ok = id == t.PeerKeyID
		}
		if !ok {
			continue
		}
		rank := 1
		if sameEnd {
			rank = 2
		}
		if rank > bestRank || (rank == bestRank && c.IssuedAt.After(best.IssuedAt)) {
			best, bestRank = c, rank
		}
	}
	return best
}

func (m *keyMatcher) keyID(c *store.Cert) string {
	if id, ok := m.ids[c.Serial]; ok {
		return id
	}
	id := ""
	if cert, err := x509.ParseCertificate(c.DER); err == nil {
		if pub, ok := cert.PublicKey.(*rsa.PublicKey); ok {
			id = LibreswanKeyID(pub)
		}
	}
	if m.ids == nil {
		m.ids = map[string]string{}
	}
	m.ids[c.Serial] = id
	return id
}
