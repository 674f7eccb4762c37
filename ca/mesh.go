package ca

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
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
	// PairOldRoot: with its active certificate, issued before the current
	// root (a renewed root) was made.
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
func (a *Authority) ReportInventory(ctx context.Context, node string, rep store.Report) ([]uint64, error) {
	now := a.clock.Now().UTC()
	for i := range rep.Tunnels {
		rep.Tunnels[i].Peer = store.CanonicalName(rep.Tunnels[i].Peer)
	}
	ev := store.Event{Time: now, Type: store.EventInventoryChanged, Actor: "node:" + node, Node: node,
		Detail: map[string]string{"entries": strconv.Itoa(len(rep.Entries))}}
	if _, err := a.st.PutInventory(ctx, node, rep, now, ev); err != nil {
		return nil, err
	}
	if !rep.TunnelsReported {
		return nil, nil
	}
	return a.revokedStates(ctx, rep.Tunnels)
}

// revokedStates returns the IKE states of the established tunnels whose
// peer authenticated with a revoked certificate. The revoked certificates
// (the CRL's list) rule out most reports at once; only a peer with a
// revoked certificate matching its key has all its certificates read, to
// tell which one it used.
func (a *Authority) revokedStates(ctx context.Context, tunnels []store.TunnelRecord) ([]uint64, error) {
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
	var suspects []string
	for _, t := range tunnels {
		if t.Established && t.IKEState != 0 && m.match(t, byName[t.Peer]) != nil && !slices.Contains(suspects, t.Peer) {
			suspects = append(suspects, t.Peer)
		}
	}
	if len(suspects) == 0 {
		return nil, nil
	}
	certs, err := a.st.NameCerts(ctx, suspects)
	if err != nil {
		return nil, err
	}
	var states []uint64
	for _, t := range tunnels {
		if !t.Established || t.IKEState == 0 || !slices.Contains(suspects, t.Peer) {
			continue
		}
		if c := m.match(t, certs[t.Peer]); c != nil && c.State == store.StateRevoked {
			states = append(states, t.IKEState)
		}
	}
	if len(states) > 0 {
		a.log.Warn("IKE SAs authenticated with revoked certificates", "states", states)
	}
	return states, nil
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
	mesh := &Mesh{CurrentRootSerial: SerialString(roots[0].SerialNumber)}
	var m keyMatcher
	for _, n := range nodes {
		if n.TunnelsAt.IsZero() {
			continue
		}
		mesh.NodesReporting++
		for _, t := range n.Tunnels {
			p := MeshPair{Node: n.Name, Peer: t.Peer, State: PairDown, AuthenticatedAt: t.AuthenticatedAt,
				ChildSAs: t.ChildSAs, ReportedAt: n.TunnelsAt, IKEState: t.IKEState}
			if t.Established {
				p.State = PairUnknown
				if c := m.match(t, certs[t.Peer]); c != nil {
					p.PeerSerial, p.PeerRootSerial = c.Serial, issuingRoot(roots, c)
					p.State = pairState(c, roots[0], now)
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

// pairState is the state of a pair whose peer authenticated with c.
func pairState(c *store.Cert, current *x509.Certificate, now time.Time) string {
	switch st := c.StateAt(now); {
	case st != store.StateActive:
		return string(st)
	case c.IssuedAt.Before(current.NotBefore):
		return PairOldRoot
	}
	return PairCurrent
}

// issuingRoot is the serial of the newest root (roots: newest first) made
// at or before c was issued; "" when none is kept.
func issuingRoot(roots []*x509.Certificate, c *store.Cert) string {
	for _, r := range roots {
		if !r.NotBefore.After(c.IssuedAt) {
			return SerialString(r.SerialNumber)
		}
	}
	return ""
}

// storedRoots parses the CA record's roots: the current one, then the
// previous ones, newest first.
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
	for _, der := range m.Previous {
		if c, err := x509.ParseCertificate(der); err == nil {
			roots = append(roots, c)
		}
	}
	return roots, nil
}

// keyMatcher finds the certificate a peer authenticated with, caching the
// key ids of the certificates it has parsed.
type keyMatcher struct {
	ids map[string]string // serial -> libreswan key id; "" for a key that is not RSA
}

// match returns the certificate among certs that t's peer authenticated
// with, or nil: one whose RSA key has t's key id, else (a key that is not
// RSA, or no key id reported) one whose NotAfter is t's to the second.
// Among several, one that matches both, then the newest issued.
func (m *keyMatcher) match(t store.TunnelRecord, certs []*store.Cert) *store.Cert {
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
