package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cloudflare/cfssl/helpers"

	"github.com/ipsecca/ipsecca/store"
)

// RolloverNode is where one node is in a rollover.
type RolloverNode struct {
	Node          string
	TrustsNew     bool // its NSS inventory holds the new CA
	OnNew         bool // its current certificate was issued by the new key
	HoldsOld      bool // its NSS inventory still holds the old CA (or an earlier root of its key)
	ReportedAt    time.Time
	CurrentSerial string
}

// RolloverReport is a rollover's state and its phase's gate.
type RolloverReport struct {
	Phase              string // "" when none is in progress
	StartedAt, PhaseAt time.Time
	Emergency, Aborted bool
	NewSerial          string // the CA moved to
	OldSerial          string // the CA moved from
	// Ready: the phase's gate holds; WaitingFor says what it still waits
	// for, one line each.
	Ready      bool
	WaitingFor []string
	Nodes      []RolloverNode
	PairsOnNew int // live pairs authenticated with certificates of the new key
	Pairs      int
	Spread     time.Duration
	// CSRPEM is, in a subordinate's request phase, the new key's request.
	CSRPEM []byte
}

// rolloverView is what a gate is evaluated on, read from the store.
type rolloverView struct {
	ca      *store.CA
	nodes   []*store.NodeInfo
	current map[string]*store.Cert // node -> its current certificate
	admins  []*store.Cert          // active admin certificates
	mesh    *Mesh
}

// RolloverStatus reads what the nodes report and evaluates the rollover's
// gate at now.
func (a *Authority) RolloverStatus(ctx context.Context, now time.Time) (*RolloverReport, error) {
	v := rolloverView{current: map[string]*store.Cert{}}
	var err error
	if v.ca, err = a.st.CA(ctx); err != nil {
		return nil, err
	}
	if v.ca.Rollover == nil {
		return &RolloverReport{}, nil
	}
	if v.nodes, err = a.st.NodeInfos(ctx); err != nil {
		return nil, err
	}
	for _, n := range v.nodes {
		c, err := a.st.CurrentCert(ctx, n.Name)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return nil, err
		default:
			v.current[n.Name] = c
		}
	}
	if v.admins, err = a.activeCerts(ctx, store.KindAdmin, now); err != nil {
		return nil, err
	}
	if v.mesh, err = a.MeshStatus(ctx, now); err != nil {
		return nil, err
	}
	return rolloverGate(v, now)
}

// activeCerts lists the active certificates of a kind.
func (a *Authority) activeCerts(ctx context.Context, kind store.Kind, now time.Time) ([]*store.Cert, error) {
	var out []*store.Cert
	f := store.CertFilter{Kind: kind, State: store.StateActive, Now: now, Limit: 500}
	for {
		page, next, err := a.st.ListCerts(ctx, f)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if next == "" {
			return out, nil
		}
		f.After = next
	}
}

// rolloverGate evaluates the gate of v's rollover phase (a pure function
// of what was read): see the phases in rollover.go.
func rolloverGate(v rolloverView, now time.Time) (*RolloverReport, error) {
	ro := v.ca.Rollover
	rep := &RolloverReport{Phase: ro.Phase, StartedAt: ro.StartedAt, PhaseAt: ro.PhaseAt, Emergency: ro.Emergency,
		Aborted: ro.Aborted, Spread: ro.Spread}
	issuing, err := helpers.ParseCertificatePEM(v.ca.CertPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: stored CA certificate: %w", err)
	}
	if ro.Phase == store.RolloverRequest {
		rep.OldSerial, rep.CSRPEM = SerialString(issuing.SerialNumber), ro.Other.CSRPEM
		rep.WaitingFor = []string{"the new subordinate CA's certificate: have its request (ca-rollover.csr, or " +
			"csr_pem of ipsecca ca rollover status --json) signed by your root as before, then run ipsecca ca import"}
		return rep, nil
	}
	other, err := helpers.ParseCertificatePEM(ro.Other.CertPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: stored rollover CA certificate: %w", err)
	}
	newCA, oldCA, oldPrevious := issuing, other, ro.Other.Previous
	if ro.Phase == store.RolloverTrust {
		newCA, oldCA, oldPrevious = other, issuing, v.ca.Previous
	}
	rep.NewSerial, rep.OldSerial = SerialString(newCA.SerialNumber), SerialString(oldCA.SerialNumber)
	oldSerials := []string{rep.OldSerial}
	for _, der := range oldPrevious {
		if c, err := x509.ParseCertificate(der); err == nil {
			oldSerials = append(oldSerials, SerialString(c.SerialNumber))
		}
	}
	wait := func(format string, args ...any) {
		rep.WaitingFor = append(rep.WaitingFor, fmt.Sprintf(format, args...))
	}
	for _, n := range v.nodes {
		cur := v.current[n.Name]
		if n.Revoked || !n.ForgottenAt.IsZero() || cur == nil || cur.StateAt(now) != store.StateActive {
			continue // a node without a live certificate takes no part
		}
		rn := RolloverNode{Node: n.Name, ReportedAt: n.ReportedAt, CurrentSerial: cur.Serial,
			OnNew: issuedBy(cur.DER, newCA)}
		for _, e := range n.Inventory {
			rn.TrustsNew = rn.TrustsNew || e.Serial == rep.NewSerial
			rn.HoldsOld = rn.HoldsOld || slices.Contains(oldSerials, e.Serial)
		}
		rep.Nodes = append(rep.Nodes, rn)
		switch ro.Phase {
		case store.RolloverTrust:
			if !rn.TrustsNew {
				wait("node %s: its NSS database does not hold the new CA %s yet%s", n.Name, rep.NewSerial,
					reportedAgo(n.ReportedAt, now))
			}
		case store.RolloverIssue:
			if !rn.OnNew {
				wait("node %s: its certificate %s is from the old key; it rotates when due%s", n.Name, cur.Serial,
					reportedAgo(n.ReportedAt, now))
			}
		case store.RolloverRetire:
			if rn.HoldsOld {
				wait("node %s: its NSS database still holds the retired CA%s", n.Name, reportedAgo(n.ReportedAt, now))
			} else if n.PlutoRestartDue {
				wait("node %s: its pluto has not started again since the retired CA left its NSS database (at %s)%s",
					n.Name, plutoRestartAt(ro, v.nodes, n.Name, now).Format(time.RFC3339), reportedAgo(n.ReportedAt, now))
			}
		}
	}
	for _, p := range v.mesh.Pairs {
		rep.Pairs++
		if p.State == PairCurrent {
			rep.PairsOnNew++
		} else if ro.Phase == store.RolloverIssue {
			wait("pair %s -> %s: %s", p.Node, p.Peer, p.State)
		}
	}
	if ro.Phase == store.RolloverIssue {
		for _, c := range v.admins {
			if !issuedBy(c.DER, newCA) {
				wait("admin credential %s (%s) is from the old key: rotate it with ipsecca admin rotate", c.Serial,
					c.Node)
			}
		}
	}
	rep.Ready = len(rep.WaitingFor) == 0
	return rep, nil
}

// PlutoRestartSlot is each node's time to restart its pluto in a
// rollover's retire phase, one node after the other.
const PlutoRestartSlot = 45 * time.Second

// plutoRestartAt is when node, whose pluto must start again because the
// retired CA left its NSS database (a running pluto checks CRLs with the CA
// certificate it first saw), restarts it. Two peers restarting at once
// lose traffic and send some in clear (measured with libreswan 4.10), so in
// a rollover's retire phase each node has its own slot: the phase's start
// plus PlutoRestartSlot for each node before it by name (revoked and
// forgotten ones aside). Any other time (a late node after the rollover),
// now.
func plutoRestartAt(ro *store.Rollover, nodes []*store.NodeInfo, node string, now time.Time) time.Time {
	if ro == nil || ro.Phase != store.RolloverRetire {
		return now
	}
	var names []string
	for _, n := range nodes {
		if !n.Revoked && n.ForgottenAt.IsZero() {
			names = append(names, n.Name)
		}
	}
	slices.Sort(names)
	i, found := slices.BinarySearch(names, node)
	if !found {
		return now
	}
	return ro.PhaseAt.Add(time.Duration(i) * PlutoRestartSlot)
}

func reportedAgo(at, now time.Time) string {
	if at.IsZero() {
		return " (its sidecar never reported)"
	}
	return fmt.Sprintf(" (last report %s ago)", now.Sub(at).Round(time.Second))
}

// RetireCertificates revokes every active certificate the retired CA of a
// rollover in its retire phase issued, and returns how many. It is
// idempotent: the leader runs it until none is left.
func (a *Authority) RetireCertificates(ctx context.Context, actor string) (int, error) {
	m, err := a.st.CA(ctx)
	if err != nil {
		return 0, err
	}
	ro := m.Rollover
	if ro == nil || ro.Phase != store.RolloverRetire {
		return 0, nil
	}
	retired, err := helpers.ParseCertificatePEM(ro.Other.CertPEM)
	if err != nil {
		return 0, fmt.Errorf("ca: stored retired CA certificate: %w", err)
	}
	now := a.clock.Now().UTC()
	n := 0
	for _, kind := range []store.Kind{store.KindNode, store.KindAdmin, store.KindServer} {
		certs, err := a.activeCerts(ctx, kind, now)
		if err != nil {
			return n, err
		}
		for _, c := range certs {
			if !issuedBy(c.DER, retired) {
				continue
			}
			ev := store.Event{Time: now, Type: store.EventCertRevoked, Actor: actor, Node: c.Node, Serial: c.Serial,
				Reason: "ca-key-retired", Detail: map[string]string{"kind": string(c.Kind)}}
			if _, err := a.st.RevokeCert(ctx, c.Serial, now, ev); err != nil && !errors.Is(err, store.ErrNotFound) &&
				!errors.Is(err, store.ErrRevoked) {
				return n, err
			}
			n++
		}
	}
	if n > 0 {
		a.log.Warn("revoked the certificates of the retired CA key", "count", n,
			"retired", SerialString(retired.SerialNumber))
	}
	return n, nil
}
