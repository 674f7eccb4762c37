package sidecar

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// What libreswan 4.10 and ovs-monitor-ipsec 3.1 printed in the OVS mesh
// test (integration.TestOVSMesh): node-a with tunnels to node-b (version
// 2, after one hand-over by the old path change) and node-c.
const (
	showStatesOut = "" +
		`000 #5: "gnv-b-in-2":500 STATE_V2_ESTABLISHED_IKE_SA (established IKE SA); REKEY in 28528s; ` +
		`REPLACE in 28798s; newest; idle;` + "\n" +
		`000 #6: "gnv-b-in-2":500 STATE_V2_ESTABLISHED_CHILD_SA (established Child SA); REKEY in 28528s; ` +
		`REPLACE in 28798s; newest; eroute owner; IKE SA #5; idle;` + "\n" +
		`000 #6: "gnv-b-in-2" esp.1f3a4169@10.1.1.2 esp.81ae594a@10.1.1.1 Traffic: ESPin=0B ESPout=0B ` +
		`ESPmax=2^63B ` + "\n" +
		`000 #7: "gnv-b-out-2":500 STATE_V2_ESTABLISHED_CHILD_SA (established Child SA); REKEY in 28528s; ` +
		`REPLACE in 28798s; newest; eroute owner; IKE SA #5; idle;` + "\n" +
		`000 #2: "gnv-b-out-1":500 STATE_V2_ESTABLISHED_IKE_SA (established IKE SA); REKEY in 28000s; ` +
		`REPLACE in 28200s; idle;` + "\n" +
		`000 #9: "gnv-c-out-1":500 STATE_V2_PARENT_I1 (sent IKE_SA_INIT request); EVENT_RETRANSMIT in 1s; ` +
		`idle;` + "\n"
	trafficOut = "" +
		`006 #6: "gnv-b-in-2", type=ESP, add_time=1796060077, inBytes=84, outBytes=84, maxBytes=2^63B, ` +
		`id='@node-b'` + "\n" +
		`006 #7: "gnv-b-out-2", type=ESP, add_time=1796060079, inBytes=0, outBytes=0, maxBytes=2^63B, ` +
		`id='@node-b'` + "\n"
	tunnelsShowOut = `Interface name: gnv-b v2 (CONFIGURED)
  Tunnel Type:    geneve
  Local IP:       %defaultroute
  Remote IP:      10.1.1.2
  Address Family: IPv4
  SKB mark:       None
  Local cert:     /var/lib/ipsecca-sidecar/ovs/node.pem
  Local name:     node-a
  Local key:      /var/lib/ipsecca-sidecar/ovs/node-key.pem
  Remote cert:    None
  Remote name:    node-b
  CA cert:        /var/lib/ipsecca-sidecar/ovs/ca.pem
  PSK:            None
  Custom Options: {}
  Ofport:         1
  CFM state:      Disabled
Kernel policies installed:
  src 10.1.1.1/32 dst 10.1.1.2/32 proto udp dport 6081
Kernel security associations installed:
  sel src 10.1.1.1/32 dst 10.1.1.2/32 proto udp dport 6081
IPsec connections that are active:
  000 #7: "gnv-b-out-2":500 STATE_V2_ESTABLISHED_CHILD_SA (established Child SA)

Interface name: gnv-c v1 (CONFIGURED)
  Tunnel Type:    geneve
  Remote IP:      10.1.1.3
  Remote name:    node-c
  CFM state:      Disabled
Kernel policies installed:
Kernel security associations installed:
IPsec connections that are active:

Interface name: gnv-x v1 (INVALID: 'remote_ip' is not set)
  Remote name:    node-x
`
)

func TestParseTunnelsShow(t *testing.T) {
	got := parseTunnelsShow([]byte(tunnelsShowOut))
	want := []ovsTunnel{
		{Iface: "gnv-b", Version: 2, RemoteName: "node-b", RemoteIP: "10.1.1.2", Configured: true},
		{Iface: "gnv-c", Version: 1, RemoteName: "node-c", RemoteIP: "10.1.1.3", Configured: true},
		{Iface: "gnv-x", Version: 1, RemoteName: "node-x"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseTunnelsShow:\n got %+v\nwant %+v", got, want)
	}
}

func TestParseShowStates(t *testing.T) {
	got := parseShowStates([]byte(showStatesOut))
	want := []plutoState{
		{Serial: 5, Conn: "gnv-b-in-2", IKE: true, Established: true},
		{Serial: 6, Conn: "gnv-b-in-2", Established: true, Parent: 5},
		// #6's traffic line names no state: it is not one.
		{Serial: 7, Conn: "gnv-b-out-2", Established: true, Parent: 5},
		{Serial: 2, Conn: "gnv-b-out-1", IKE: true, Established: true},
		{Serial: 9, Conn: "gnv-c-out-1", IKE: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseShowStates:\n got %+v\nwant %+v", got, want)
	}
	if w := watermark(got); w != 9 {
		t.Errorf("watermark = %d, want 9", w)
	}
}

func TestTunnelsFrom(t *testing.T) {
	added := parseTrafficStatus([]byte(trafficOut))
	if len(added) != 2 || !added[7].Equal(time.Unix(1796060079, 0)) {
		t.Fatalf("parseTrafficStatus = %v", added)
	}
	serialOf := func(n uint64) string { return map[uint64]string{5: "new", 2: "old"}[n] }
	got := tunnelsFrom(parseTunnelsShow([]byte(tunnelsShowOut)), parseShowStates([]byte(showStatesOut)), added,
		serialOf)
	if len(got) != 2 {
		t.Fatalf("got %d tunnels, want 2 (the invalid one left out): %v", len(got), got)
	}
	b, c := got[0], got[1]
	// #2 belongs to version 1 of gnv-b, which ovs-monitor-ipsec replaced:
	// it does not count.
	if b.GetPeer() != "node-b" || !b.GetEstablished() || b.GetIkeState() != 5 || b.GetChildSas() != 2 ||
		b.GetLocalSerial() != "new" || !b.GetChildAddedAt().AsTime().Equal(time.Unix(1796060079, 0)) ||
		b.GetPeerAddress() != "10.1.1.2" || !b.GetAuthenticatedAt().AsTime().Equal(time.Unix(1796060077, 0)) {
		t.Errorf("node-b tunnel = %v", b)
	}
	if c.GetPeer() != "node-c" || c.GetEstablished() || c.GetIkeState() != 0 || c.GetLocalSerial() != "" {
		t.Errorf("node-c tunnel (IKE SA still in IKE_SA_INIT) = %v", c)
	}
	// Asked for #5 and #2 (an earlier version's, which ovs-monitor-ipsec
	// replaced): only #5 is live, with its conns.
	ikes, conns := liveUnder(parseTunnelsShow([]byte(tunnelsShowOut)), parseShowStates([]byte(showStatesOut)),
		[]uint64{5, 2})
	if !reflect.DeepEqual(ikes, []uint64{5}) || !reflect.DeepEqual(conns, []string{"gnv-b-in-2", "gnv-b-out-2"}) {
		t.Errorf("liveUnder = %v %v, want [5] [gnv-b-in-2 gnv-b-out-2]", ikes, conns)
	}
}

func TestHandoffLog(t *testing.T) {
	h := handoffLog{filepath.Join(t.TempDir(), handoffFile)}
	states := func(max uint64) []plutoState { return []plutoState{{Serial: max}} }
	// Nothing recorded: every state presents the current certificate.
	if got := h.serialFor(states(3), "cur")(3); got != "cur" {
		t.Errorf("empty log: %q, want cur", got)
	}
	if err := h.reset("s1"); err != nil {
		t.Fatal(err)
	}
	if err := h.add(4, "s2"); err != nil {
		t.Fatal(err)
	}
	if err := h.add(9, "s3"); err != nil {
		t.Fatal(err)
	}
	of := h.serialFor(states(12), "s3")
	for n, want := range map[uint64]string{1: "s1", 4: "s1", 5: "s2", 9: "s2", 10: "s3", 12: "s3"} {
		if got := of(n); got != want {
			t.Errorf("IKE SA #%d presents %q, want %q", n, got, want)
		}
	}
	// pluto restarted (its serials start again below the last watermark):
	// it loaded the current certificate for every conn.
	if got := h.serialFor(states(2), "s3")(1); got != "s3" {
		t.Errorf("after a pluto restart: %q, want s3", got)
	}
	for i := range 20 {
		h.add(uint64(20+i), "x")
	}
	raw, _ := os.ReadFile(h.path)
	if n := len(strings.Split(strings.TrimSpace(string(raw)), "\n")); n != 16 {
		t.Errorf("the log keeps %d lines, want 16", n)
	}
}

func TestParseOtherConfig(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want map[string]string
		err  bool
	}{
		{`{"data":[[["map",[["ca_cert","/o/ca.pem"],["certificate","/o/node.pem"],` +
			`["private_key","/o/node-key.pem"]]]]],"headings":["other_config"]}`,
			map[string]string{"ca_cert": "/o/ca.pem", "certificate": "/o/node.pem", "private_key": "/o/node-key.pem"},
			false},
		{`{"data":[[["map",[]]]],"headings":["other_config"]}`, map[string]string{}, false},
		{`{"data":[],"headings":["other_config"]}`, nil, true},
		{`not json`, nil, true},
	} {
		got, err := parseOtherConfig([]byte(tc.out))
		if (err != nil) != tc.err || (!tc.err && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("parseOtherConfig(%s) = %v, %v; want %v (error %v)", tc.out, got, err, tc.want, tc.err)
		}
	}
}

// The make-before-break hand-over's view of pluto: an old IKE SA (#5, its
// Child SAs #6 in and #7 out), the new one (#10) with the Child SA of the
// conn that started it (#11 out), then the other conn moved (#12 in).
func TestReplaceIKESAsView(t *testing.T) {
	tunnels := []ovsTunnel{{Iface: "gnv-b", Version: 2, RemoteName: "node-b", Configured: true}}
	old := []plutoState{
		{Serial: 5, Conn: "gnv-b-out-2", IKE: true, Established: true},
		{Serial: 6, Conn: "gnv-b-in-2", Established: true, Parent: 5},
		{Serial: 7, Conn: "gnv-b-out-2", Established: true, Parent: 5},
		{Serial: 3, Conn: "gnv-b-out-1", IKE: true, Established: true}, // an earlier version's
	}
	const mark = 9
	reauthed := append(old[:len(old):len(old)],
		plutoState{Serial: 10, Conn: "gnv-b-out-2", IKE: true, Established: true},
		plutoState{Serial: 11, Conn: "gnv-b-out-2", Established: true, Parent: 10})
	moved := append(reauthed[:len(reauthed):len(reauthed)],
		plutoState{Serial: 12, Conn: "gnv-b-in-2", Established: true, Parent: 10})
	for _, tc := range []struct {
		name        string
		states      []plutoState
		ike, child  []string
		oldReleased bool
	}{
		{"before", old, nil, nil, false},
		{"new IKE SA up", reauthed, []string{"gnv-b-out-2"}, []string{"gnv-b-out-2"}, false},
		{"in moved", moved, []string{"gnv-b-out-2"}, []string{"gnv-b-out-2", "gnv-b-in-2"}, true},
	} {
		ike, child := liveAbove(tunnels, tc.states, mark, true), liveAbove(tunnels, tc.states, mark, false)
		if !reflect.DeepEqual(ike, tc.ike) || !reflect.DeepEqual(child, tc.child) {
			t.Errorf("%s: IKE SAs above the mark %v, Child SAs %v; want %v, %v", tc.name, ike, child, tc.ike, tc.child)
		}
		if got := parentMoved(tunnels, tc.states, 5, mark); got != tc.oldReleased {
			t.Errorf("%s: the old IKE SA may go: %v, want %v", tc.name, got, tc.oldReleased)
		}
	}
	if ikes, _ := liveUnder(tunnels, old, []uint64{5, 3}); !reflect.DeepEqual(ikes, []uint64{5}) {
		t.Errorf("liveUnder = %v, want [5] (not the earlier version's #3)", ikes)
	}
}

// Asked for one IKE SA of a tunnel whose two conns each have their own,
// the hand-over takes both.
func TestLiveUnderTakesTheTunnel(t *testing.T) {
	tunnels := []ovsTunnel{
		{Iface: "gnv-b", Version: 1, RemoteName: "node-b", Configured: true},
		{Iface: "gnv-c", Version: 1, RemoteName: "node-c", Configured: true},
	}
	states := []plutoState{
		{Serial: 1, Conn: "gnv-b-in-1", IKE: true, Established: true},
		{Serial: 2, Conn: "gnv-b-in-1", Established: true, Parent: 1},
		{Serial: 3, Conn: "gnv-b-out-1", IKE: true, Established: true},
		{Serial: 4, Conn: "gnv-b-out-1", Established: true, Parent: 3},
		{Serial: 5, Conn: "gnv-c-out-1", IKE: true, Established: true},
	}
	ikes, conns := liveUnder(tunnels, states, []uint64{1})
	if !reflect.DeepEqual(ikes, []uint64{1, 3}) || !reflect.DeepEqual(conns, []string{"gnv-b-in-1", "gnv-b-out-1"}) {
		t.Errorf("liveUnder = %v %v, want [1 3] [gnv-b-in-1 gnv-b-out-1]", ikes, conns)
	}
	serialOf := func(n uint64) string { return strconv.FormatUint(n, 10) }
	if got := tunnelsFrom(tunnels, states, nil, serialOf); got[0].GetIkeState() != 1 ||
		got[0].GetLocalSerial() != "1" {
		t.Errorf("the tunnel to node-b is reported by IKE SA #%d (%q), want the oldest, #1", got[0].GetIkeState(),
			got[0].GetLocalSerial())
	}
}

// ovs-monitor-ipsec runs elsewhere: the paths given to other_config are
// absolute even for a relative state directory.
func TestOVSPKIDirAbsolute(t *testing.T) {
	var o OVSConfig
	o.setDefaults("state")
	if !filepath.IsAbs(o.PKIDir) || filepath.Base(o.PKIDir) != "ovs" {
		t.Errorf("PKIDir = %q, want an absolute .../state/ovs", o.PKIDir)
	}
	if o.DB != "unix:"+DefaultOVSRunDir+"/db.sock" || o.PlutoCtl != DefaultPlutoCtl || o.ReportInterval != 30*time.Second {
		t.Errorf("defaults: %+v", o)
	}
}

// The conns a restarted pluto initiates are those ovs-monitor-ipsec writes
// for its configured tunnels.
func TestTunnelConns(t *testing.T) {
	got := tunnelConns([]ovsTunnel{{Iface: "gnv-b", Version: 3, Configured: true}, {Iface: "gnv-c", Version: 1},
		{Iface: "gnv-d", Version: 1, Configured: true}})
	if want := "gnv-b-in-3 gnv-b-out-3 gnv-d-in-1 gnv-d-out-1"; strings.Join(got, " ") != want {
		t.Errorf("tunnelConns = %v, want %s", got, want)
	}
}
