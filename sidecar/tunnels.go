package sidecar

import (
	"bufio"
	"context"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// ovsTunnel is one tunnel as ovs-monitor-ipsec shows it (tunnels/show):
// its interface, the version of its configuration (the suffix of the
// libreswan conns it writes for it) and its peer.
type ovsTunnel struct {
	Iface      string
	Version    int
	RemoteName string
	RemoteIP   string
	// Configured: ovs-monitor-ipsec has conns for it (not INVALID or REMOVED).
	Configured bool
}

var tunnelHeader = regexp.MustCompile(`^Interface name: (\S+) v(\d+) \((\w+)`)

// parseTunnelsShow reads `ovs-appctl -t ovs-monitor-ipsec tunnels/show`:
// a block per tunnel, "Interface name: IFACE vN (STATE...)" then indented
// "Key:   value" lines.
func parseTunnelsShow(out []byte) []ovsTunnel {
	var res []ovsTunnel
	var cur *ovsTunnel
	s := bufio.NewScanner(strings.NewReader(string(out)))
	for s.Scan() {
		line := s.Text()
		if m := tunnelHeader.FindStringSubmatch(line); m != nil {
			v, _ := strconv.Atoi(m[2])
			res = append(res, ovsTunnel{Iface: m[1], Version: v, Configured: m[3] == "CONFIGURED"})
			cur = &res[len(res)-1]
			continue
		}
		if cur == nil {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "None" {
			v = ""
		}
		switch k {
		case "Remote name":
			cur.RemoteName = v
		case "Remote IP":
			cur.RemoteIP = v
		}
	}
	return res
}

// plutoState is one state of `ipsec whack --showstates`.
type plutoState struct {
	Serial      uint64
	Conn        string
	IKE         bool   // an IKE SA (else a Child SA)
	Established bool   // STATE_V2_ESTABLISHED_*
	Parent      uint64 // a Child SA's IKE SA
}

var (
	stateLine  = regexp.MustCompile(`#(\d+): "([^"]+)"(?::\d+)? (STATE_\w+)`)
	parentOfSA = regexp.MustCompile(`IKE SA #(\d+)`)
)

// parseShowStates reads `ipsec whack --showstates` (libreswan 4):
// `000 #3: "conn":500 STATE_V2_ESTABLISHED_IKE_SA (...); ...` and
// `000 #4: "conn":500 STATE_V2_ESTABLISHED_CHILD_SA (...); ...; IKE SA #3; ...`.
func parseShowStates(out []byte) []plutoState {
	var res []plutoState
	s := bufio.NewScanner(strings.NewReader(string(out)))
	for s.Scan() {
		m := stateLine.FindStringSubmatch(s.Text())
		if m == nil {
			continue
		}
		n, _ := strconv.ParseUint(m[1], 10, 64)
		st := plutoState{Serial: n, Conn: m[2], Established: strings.HasPrefix(m[3], "STATE_V2_ESTABLISHED_")}
		st.IKE = strings.HasSuffix(m[3], "_IKE_SA") || strings.Contains(m[3], "PARENT")
		if p := parentOfSA.FindStringSubmatch(s.Text()); p != nil {
			st.Parent, _ = strconv.ParseUint(p[1], 10, 64)
		}
		res = append(res, st)
	}
	return res
}

var trafficLine = regexp.MustCompile(`#(\d+): "[^"]+".*add_time=(\d+)`)

// parseTrafficStatus reads `ipsec whack --trafficstatus`: each ESP Child
// SA's serial and when it was added.
func parseTrafficStatus(out []byte) map[uint64]time.Time {
	res := map[uint64]time.Time{}
	s := bufio.NewScanner(strings.NewReader(string(out)))
	for s.Scan() {
		if m := trafficLine.FindStringSubmatch(s.Text()); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			sec, _ := strconv.ParseInt(m[2], 10, 64)
			res[n] = time.Unix(sec, 0).UTC()
		}
	}
	return res
}

var connName = regexp.MustCompile(`^(.+)-(?:in|out)-(\d+)$`)

// tunnelsFrom joins what ovs-monitor-ipsec and pluto say into one Tunnel
// per configured peer. Only states of the tunnel's current conns count
// (ovs-monitor-ipsec names them <iface>-in|out-<version>); serialOf says
// which of the node's certificates an IKE SA presents.
func tunnelsFrom(
	tunnels []ovsTunnel, states []plutoState, added map[uint64]time.Time, serialOf func(uint64) string,
) []*ipseccav1.Tunnel {
	byIface := map[string]*ipseccav1.Tunnel{}
	version := map[string]int{}
	var res []*ipseccav1.Tunnel
	for _, t := range tunnels {
		if t.RemoteName == "" || !t.Configured {
			continue
		}
		tu := &ipseccav1.Tunnel{Peer: t.RemoteName, PeerAddress: t.RemoteIP}
		byIface[t.Iface], version[t.Iface] = tu, t.Version
		res = append(res, tu)
	}
	for _, st := range states {
		m := connName.FindStringSubmatch(st.Conn)
		if m == nil || !st.Established {
			continue
		}
		tu := byIface[m[1]]
		if v, _ := strconv.Atoi(m[2]); tu == nil || v != version[m[1]] {
			continue
		}
		if st.IKE {
			// The oldest IKE SA speaks for the tunnel: the pair is on the
			// new certificates only once every IKE SA of it is (the two
			// conns of a tunnel may each have their own).
			if !tu.Established || st.Serial < tu.IkeState {
				tu.IkeState = st.Serial
			}
			tu.Established = true
			continue
		}
		tu.ChildSas++
		if at, ok := added[st.Serial]; ok && (tu.ChildAddedAt == nil || at.After(tu.ChildAddedAt.AsTime())) {
			tu.ChildAddedAt = timestamppb.New(at)
		}
	}
	for _, tu := range res {
		if tu.Established {
			tu.LocalSerial = serialOf(tu.IkeState)
		}
	}
	// pluto 4.10 shows no time of authentication; the first Child SA is
	// made in the same exchange (IKE_AUTH), so the oldest Child SA under
	// the IKE SA dates it, unless its Child SAs were all rekeyed since.
	for _, st := range states {
		for _, tu := range res {
			at, ok := added[st.Serial]
			if ok && tu.Established && st.Parent == tu.IkeState &&
				(tu.AuthenticatedAt == nil || at.Before(tu.AuthenticatedAt.AsTime())) {
				tu.AuthenticatedAt = timestamppb.New(at)
			}
		}
	}
	sort.Slice(res, func(i, j int) bool { return res[i].Peer < res[j].Peer })
	return res
}

// observeTunnels reads the node's tunnels from ovs-monitor-ipsec and
// pluto.
func (a *Agent) observeTunnels(ctx context.Context) ([]*ipseccav1.Tunnel, error) {
	show, err := a.ovsTool(ctx, "ovs-appctl", "-t", "ovs-monitor-ipsec", "tunnels/show")
	if err != nil {
		return nil, err
	}
	states, err := a.whack(ctx, "--showstates")
	if err != nil {
		return nil, err
	}
	traffic, err := a.whack(ctx, "--trafficstatus")
	if err != nil {
		return nil, err
	}
	pluto := parseShowStates(states)
	current := ""
	if pair, _ := a.state.Current(); pair != nil {
		current = pair.Serial()
	}
	return tunnelsFrom(parseTunnelsShow(show), pluto, parseTrafficStatus(traffic),
		a.handoffs().serialFor(pluto, current)), nil
}

// whack runs `ipsec whack --ctlsocket PLUTO_CTL args...`.
func (a *Agent) whack(ctx context.Context, args ...string) ([]byte, error) {
	return a.ovsTool(ctx, "ipsec", append([]string{"whack", "--ctlsocket", a.cfg.OVS.PlutoCtl}, args...)...)
}

// deleteIKEStates deletes IKE SAs the CA says a revoked peer
// authenticated with: the peer must authenticate again, and is refused.
func (a *Agent) deleteIKEStates(ctx context.Context, serials []uint64) {
	// With every other IKE SA of the same tunnels.
	if show, err := a.ovsTool(ctx, "ovs-appctl", "-t", "ovs-monitor-ipsec", "tunnels/show"); err == nil {
		if states, err := a.plutoStates(ctx); err == nil {
			if ikes, _ := liveUnder(parseTunnelsShow(show), states, serials); len(ikes) > 0 {
				serials = ikes
			}
		}
	}
	for _, n := range serials {
		if _, err := a.whack(ctx, "--deletestate", strconv.FormatUint(n, 10), "--asynchronous"); err != nil {
			a.log.Warn("could not delete an IKE SA of a revoked peer", "state", n, "err", err)
			continue
		}
		a.log.Warn("deleted an IKE SA whose peer authenticated with a revoked certificate", "state", n)
	}
}
