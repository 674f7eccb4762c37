package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ipsecca/ipsecca/internal/atomicfile"
)

// OVSConfig makes the sidecar deliver through Open vSwitch, as
// OVN-Kubernetes' ovn-ipsec-host does: it writes the node's certificate,
// key and CA bundle as PEM files and points the Open_vSwitch table's
// other_config:certificate, private_key and ca_cert at them;
// ovs-monitor-ipsec imports them into NSS under its ovs_ names and writes
// the libreswan conns. The sidecar keeps the CRL in NSS (ovs-monitor-ipsec
// does not) and reads the tunnels' state back for the CA.
type OVSConfig struct {
	// DB is the OVSDB remote (ovs-vsctl --db), e.g.
	// unix:/var/run/openvswitch/db.sock.
	DB string
	// RunDir is OVS's run directory, where ovs-monitor-ipsec's pidfile and
	// control socket are (ovs-appctl -t ovs-monitor-ipsec).
	RunDir string
	// PKIDir receives the PEM files; <state-dir>/ovs when empty.
	PKIDir string
	// PlutoCtl is pluto's control socket (ovs-monitor-ipsec --ipsec-ctl).
	PlutoCtl string
	// PlutoStartCmd (sh -c) starts pluto after the sidecar stopped it with
	// its IPsec SAs left in the kernel, once per CA key rollover
	// (restartPluto), e.g. "systemctl start ipsec". Empty: the sidecar
	// warns instead and leaves pluto alone.
	PlutoStartCmd string
	// ReportInterval is how often the tunnels are read and reported to
	// the CA, and the CRL refreshed (30 s when zero).
	ReportInterval time.Duration
}

// The files other_config points at: fixed names, each replaced
// atomically. ovs-monitor-ipsec 3.1 notices only a change of the path
// strings, and on one it deletes every conn before it adds their new
// versions, so traffic stops (and leaves in clear, with no policy) for as
// long as that takes; the sidecar points other_config once and hands
// later versions over itself (deliverOVS).
const (
	ovsCertFile = "node.pem"
	ovsKeyFile  = "node-key.pem"
	ovsCAFile   = "ca.pem"
)

// pkiKeys are the other_config keys ovs-monitor-ipsec reads, for
// ovsCertFile, ovsKeyFile and ovsCAFile.
var pkiKeys = [3]string{"certificate", "private_key", "ca_cert"}

// deliverOVS hands the pair and the bundle to ovs-monitor-ipsec and pluto
// in four steps:
//
//  1. writeFiles: the PEM files, each replaced atomically, so that
//     ovs-monitor-ipsec (at start, and on a restart) imports the current
//     versions;
//  2. point: other_config at them, once; on that change ovs-monitor-ipsec
//     imports them into NSS and writes the conns itself;
//  3. syncNSS: afterwards, the bundle's CA certificates (syncTrust) and
//     the pair go in, the pair and the newest root under
//     ovs-monitor-ipsec's nicknames, as it would import them;
//  4. reread: when the pair changed, pluto re-reads its certificates; the
//     CA then asks one side of each pair to authenticate its IKE SA again
//     (replaceIKESAs), so that every peer sees the new certificate. When
//     the CA certificates changed, pluto drops its cache of them first
//     (dropRootCache); when a CA key left, it starts again later, in the
//     slot the CA gives the node (restartPluto).
//
// It reports whether anything changed.
func (a *Agent) deliverOVS(ctx context.Context, pair *Pair, bundle []byte) (bool, error) {
	if err := a.writeOVSFiles(pair, bundle); err != nil {
		return false, err
	}
	pointed, err := a.pointOVS(ctx, pair)
	if err != nil || pointed {
		return pointed, err
	}
	pairChanged, trustChanged, err := a.syncNSS(ctx, pair, bundle)
	if err != nil {
		return pairChanged || trustChanged, err
	}
	if err := a.checkPlutoRestart(); err != nil {
		return true, err
	}
	if trustChanged {
		if err := a.dropRootCache(ctx); err != nil {
			return true, err
		}
	}
	if pairChanged {
		return true, a.reread(ctx, pair)
	}
	return trustChanged, nil
}

// dropRootCache has pluto drop its cache of root certificates after the
// trust anchors in NSS changed. pluto 4.10 reads the roots once and
// extends the cache's life on every use, so on a busy node it never sees a
// CA added (a key rollover's new CA: a peer presenting a certificate from
// it fails with AUTHENTICATION_FAILED) or removed; whack --rereadcerts
// does not drop it (measured), the global event FREE_ROOT_CERTS does, and
// whack --impair trigger reaches it.
func (a *Agent) dropRootCache(ctx context.Context) error {
	if _, err := a.whack(ctx, "--impair", "trigger:FREE_ROOT_CERTS"); err != nil {
		return err
	}
	a.log.Info("pluto dropped its cache of root certificates (the trust anchors in NSS changed)")
	return nil
}

// writeOVSFiles is step 1 of deliverOVS. ca.pem holds the bundle's roots
// first (anchorsFirst): ovs-monitor-ipsec imports the first certificate
// of it alone, as trust anchor.
func (a *Agent) writeOVSFiles(pair *Pair, bundle []byte) error {
	dir := a.cfg.OVS.PKIDir
	caPEM, err := anchorsFirst(bundle)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("sidecar: OVS PKI directory: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{{ovsKeyFile, pair.KeyPEM, 0o600}, {ovsCertFile, pair.CertPEM, 0o644}, {ovsCAFile, caPEM, 0o644}} {
		path := filepath.Join(dir, f.name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, f.data) {
			continue
		}
		if err := atomicfile.WriteFile(path, f.data, f.perm); err != nil {
			return err
		}
	}
	return nil
}

// pointOVS is step 2 of deliverOVS: it sets other_config in one OVSDB
// transaction when it does not name the files, and reports whether it did.
func (a *Agent) pointOVS(ctx context.Context, pair *Pair) (bool, error) {
	dir := a.cfg.OVS.PKIDir
	want := [3]string{filepath.Join(dir, ovsCertFile), filepath.Join(dir, ovsKeyFile), filepath.Join(dir, ovsCAFile)}
	have, err := a.ovsPKI(ctx)
	if err != nil || have == want {
		return false, err
	}
	// --no-wait: ovs-monitor-ipsec reads the database; ovs-vswitchd has
	// nothing to apply.
	args := []string{"--no-wait", "set", "Open_vSwitch", "."}
	for i, k := range pkiKeys {
		args = append(args, fmt.Sprintf("other_config:%s=%q", k, want[i]))
	}
	if _, err := a.vsctl(ctx, args...); err != nil {
		return false, err
	}
	a.log.Info("pointed OVS at the node's certificate files", "serial", pair.Serial(), "dir", dir,
		"previous_certificate", have[0])
	return true, a.handoffs().reset(pair.Serial())
}

// syncNSS is step 3 of deliverOVS. It waits for ovs-monitor-ipsec's first
// import (nothing under the node's nickname yet) rather than race it.
func (a *Agent) syncNSS(ctx context.Context, pair *Pair, bundle []byte) (pairChanged, trustChanged bool, err error) {
	held, err := a.db.Certs(ctx, a.cfg.Nickname)
	if err != nil || len(held) == 0 {
		return false, false, err
	}
	if trustChanged, err = a.syncTrust(ctx, bundle); err != nil {
		return false, trustChanged, err
	}
	pairChanged, err = a.db.PutKeyPair(ctx, a.cfg.Nickname, pair.Cert, pair.Key)
	if pairChanged {
		a.log.Info("NSS database updated for ovs-monitor-ipsec", "nickname", a.cfg.Nickname,
			"serial", pair.Serial())
	}
	return pairChanged, trustChanged, err
}

// reread is step 4 of deliverOVS: pluto re-reads its certificates
// (whack --rereadcerts), so every IKE SA authenticated from now on
// presents the new one; the handoff log records from which state on.
// The live IKE SAs are authenticated again when the CA asks (the reply to
// a report names them, replaceIKESAs), one side per pair.
func (a *Agent) reread(ctx context.Context, pair *Pair) error {
	states, err := a.plutoStates(ctx)
	if err != nil {
		return err
	}
	if _, err := a.whack(ctx, "--rereadcerts"); err != nil {
		return err
	}
	if err := a.handoffs().add(watermark(states), pair.Serial()); err != nil {
		return err
	}
	a.log.Info("pluto re-read the node's certificate", "serial", pair.Serial())
	return nil
}

// handoffTimeout bounds each wait of replaceIKESAs for pluto.
const handoffTimeout = 30 * time.Second

// replaceIKESAs authenticates the IKE SAs old again without a gap in the
// traffic. libreswan 4.10 has no command for it: an initiate on a
// connection with an established IKE SA only adds a Child SA under it, and
// deleting the IKE SA first stops the traffic until the peers agree on a
// new one (seconds: both sides initiate at once). Its re-authentication
// (what reauth=yes runs at the end of an IKE SA's life) starts a new IKE
// SA next to the old one, and pluto has it as the state action
// "event-v2-reauth" of whack --impair. So:
//
//  1. reauth: a new IKE SA is started next to each old one, with the Child
//     SA of the connection that made it;
//  2. wait until the tunnels have as many IKE SAs newer than the old ones;
//  3. move: the other connections with Child SAs under an old IKE SA are
//     initiated again, which puts their Child SAs under the new one;
//  4. wait until those Child SAs are up;
//  5. delete the old IKE SAs (their Child SAs no longer carry traffic).
//
// An IKE SA whose replacement does not come up is kept; it still works,
// and the CA asks again. It returns how many IKE SAs it replaced.
func (a *Agent) replaceIKESAs(ctx context.Context, asked []uint64) (int, error) {
	show, err := a.ovsTool(ctx, "ovs-appctl", "-t", "ovs-monitor-ipsec", "tunnels/show")
	if err != nil {
		return 0, err
	}
	tunnels := parseTunnelsShow(show)
	states, err := a.plutoStates(ctx)
	if err != nil {
		return 0, err
	}
	mark := watermark(states)
	old, conns := liveUnder(tunnels, states, asked)
	for _, n := range old {
		if _, err := a.whack(ctx, "--impair", fmt.Sprintf("event-v2-reauth:%d", n), "--asynchronous"); err != nil {
			a.log.Warn("could not start authenticating an IKE SA again", "state", n, "err", err)
		}
	}
	newIKE := func(st []plutoState) bool { return len(liveAbove(tunnels, st, mark, true)) >= len(old) }
	if states, err = a.waitStates(ctx, newIKE); err != nil {
		a.log.Warn("not every IKE SA was authenticated again; the old ones stay", "err", err)
	}
	for _, c := range conns {
		if slices.Contains(liveAbove(tunnels, states, mark, false), c) {
			continue // its Child SA came with the new IKE SA
		}
		if _, err := a.whack(ctx, "--name", c, "--initiate", "--asynchronous"); err != nil {
			a.log.Warn("could not move a connection to the new IKE SA", "conn", c, "err", err)
		}
	}
	childrenMoved := func(st []plutoState) bool {
		for _, c := range conns {
			if !slices.Contains(liveAbove(tunnels, st, mark, false), c) {
				return false
			}
		}
		return true
	}
	if states, err = a.waitStates(ctx, childrenMoved); err != nil {
		a.log.Warn("not every connection moved to the new IKE SA", "err", err)
	}
	replaced := 0
	for _, n := range old {
		if !parentMoved(tunnels, states, n, mark) {
			continue
		}
		if _, err := a.whack(ctx, "--deletestate", strconv.FormatUint(n, 10), "--asynchronous"); err != nil {
			a.log.Warn("could not delete a replaced IKE SA", "state", n, "err", err)
			continue
		}
		replaced++
	}
	a.log.Info("authenticated IKE SAs again for the CA", "asked", asked, "replaced", replaced)
	return replaced, nil
}

// liveUnder lists the established IKE SAs of the tunnels' current conns
// that were asked for, or share a tunnel with one asked for (the two conns
// of a tunnel may each have their own), and the conns with established
// SAs under them.
func liveUnder(tunnels []ovsTunnel, states []plutoState, asked []uint64) (ikes []uint64, conns []string) {
	ifaces := map[string]bool{}
	for _, st := range states {
		if m := connName.FindStringSubmatch(st.Conn); m != nil && st.IKE && slices.Contains(asked, st.Serial) {
			ifaces[m[1]] = true
		}
	}
	asked = slices.Clone(asked)
	for _, st := range states {
		if m := connName.FindStringSubmatch(st.Conn); m != nil && st.IKE && st.Established && ifaces[m[1]] &&
			!slices.Contains(asked, st.Serial) {
			asked = append(asked, st.Serial)
		}
	}
	for _, st := range states {
		if !st.Established || !currentConn(tunnels, st.Conn) {
			continue
		}
		switch {
		case st.IKE && slices.Contains(asked, st.Serial):
			ikes = append(ikes, st.Serial)
		case !st.IKE && slices.Contains(asked, st.Parent):
		default:
			continue
		}
		if !slices.Contains(conns, st.Conn) {
			conns = append(conns, st.Conn)
		}
	}
	sort.Strings(conns)
	return ikes, conns
}

// plutoStates reads `ipsec whack --showstates`.
func (a *Agent) plutoStates(ctx context.Context) ([]plutoState, error) {
	out, err := a.whack(ctx, "--showstates")
	if err != nil {
		return nil, err
	}
	return parseShowStates(out), nil
}

// waitStates polls pluto's states until done holds or handoffTimeout.
func (a *Agent) waitStates(ctx context.Context, done func([]plutoState) bool) ([]plutoState, error) {
	deadline := time.Now().Add(handoffTimeout)
	for {
		states, err := a.plutoStates(ctx)
		if err == nil && done(states) {
			return states, nil
		}
		if time.Now().After(deadline) {
			return states, fmt.Errorf("sidecar: pluto did not get there in %s", handoffTimeout)
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return states, ctx.Err()
		}
	}
}

// liveAbove lists the tunnels' current conns with an established IKE SA
// (ike) or Child SA (!ike) numbered above mark, a Child SA counting only
// under such an IKE SA.
func liveAbove(tunnels []ovsTunnel, states []plutoState, mark uint64, ike bool) []string {
	var res []string
	for _, st := range states {
		if !st.Established || st.IKE != ike || st.Serial <= mark || (!ike && st.Parent <= mark) ||
			!currentConn(tunnels, st.Conn) || slices.Contains(res, st.Conn) {
			continue
		}
		res = append(res, st.Conn)
	}
	return res
}

// parentMoved reports whether IKE SA n has no established Child SA left
// whose conn lacks one under a newer IKE SA above mark.
func parentMoved(tunnels []ovsTunnel, states []plutoState, n, mark uint64) bool {
	moved := liveAbove(tunnels, states, mark, false)
	for _, st := range states {
		if st.Established && !st.IKE && st.Parent == n && !slices.Contains(moved, st.Conn) {
			return false
		}
	}
	return true
}

// currentConn reports whether conn is one of the tunnels' current conns
// (ovs-monitor-ipsec names them <iface>-in|out-<version>).
func currentConn(tunnels []ovsTunnel, conn string) bool {
	m := connName.FindStringSubmatch(conn)
	if m == nil {
		return false
	}
	for _, t := range tunnels {
		if t.Iface == m[1] && strconv.Itoa(t.Version) == m[2] && t.Configured {
			return true
		}
	}
	return false
}

// watermark is the highest state serial pluto has used.
func watermark(states []plutoState) uint64 {
	var w uint64
	for _, s := range states {
		w = max(w, s.Serial)
	}
	return w
}

// ovsPKI reads other_config's certificate, private_key and ca_cert.
func (a *Agent) ovsPKI(ctx context.Context) ([3]string, error) {
	var got [3]string
	out, err := a.vsctl(ctx, "--format=json", "--columns=other_config", "list", "Open_vSwitch")
	if err != nil {
		return got, err
	}
	m, err := parseOtherConfig(out)
	if err != nil {
		return got, err
	}
	for i, k := range pkiKeys {
		got[i] = m[k]
	}
	return got, nil
}

// parseOtherConfig reads `ovs-vsctl --format=json --columns=other_config
// list Open_vSwitch`: {"data":[[["map",[["k","v"],...]]]],...}.
func parseOtherConfig(out []byte) (map[string]string, error) {
	var doc struct {
		Data [][]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("sidecar: ovs-vsctl output: %w", err)
	}
	if len(doc.Data) != 1 || len(doc.Data[0]) != 1 {
		return nil, fmt.Errorf("sidecar: ovs-vsctl: want one Open_vSwitch row, got %d", len(doc.Data))
	}
	var m []json.RawMessage
	if err := json.Unmarshal(doc.Data[0][0], &m); err != nil || len(m) != 2 {
		return nil, fmt.Errorf("sidecar: ovs-vsctl: other_config is not a map: %s", doc.Data[0][0])
	}
	var pairs [][2]string
	if err := json.Unmarshal(m[1], &pairs); err != nil {
		return nil, fmt.Errorf("sidecar: ovs-vsctl: other_config: %w", err)
	}
	res := make(map[string]string, len(pairs))
	for _, p := range pairs {
		res[p[0]] = p[1]
	}
	return res, nil
}

// checkOVS reports whether other_config points at the current pair.
func (a *Agent) checkOVS(ctx context.Context, pair *Pair) error {
	have, err := a.ovsPKI(ctx)
	if err != nil {
		return err
	}
	if have[0] != filepath.Join(a.cfg.OVS.PKIDir, ovsCertFile) {
		return fmt.Errorf("sidecar: other_config:certificate is %q, not the sidecar's file", have[0])
	}
	raw, err := os.ReadFile(have[0])
	if err != nil {
		return fmt.Errorf("sidecar: other_config:certificate %q: %w", have[0], err)
	}
	certs, err := parseBundle(raw)
	if err != nil || !certs[0].Equal(pair.Cert) {
		return fmt.Errorf("sidecar: other_config:certificate %q does not hold the current certificate %s",
			have[0], pair.Serial())
	}
	if have[1] == "" || have[2] == "" {
		return errors.New("sidecar: other_config:private_key or ca_cert is not set")
	}
	return nil
}

// ovsTimeout bounds each OVS tool run.
const ovsTimeout = 30 * time.Second

// vsctl runs ovs-vsctl against the configured database.
func (a *Agent) vsctl(ctx context.Context, args ...string) ([]byte, error) {
	return a.ovsTool(ctx, "ovs-vsctl", append([]string{"--db=" + a.cfg.OVS.DB, "--timeout=10"}, args...)...)
}

// ovsTool runs an OVS or libreswan tool with OVS_RUNDIR set.
func (a *Agent) ovsTool(ctx context.Context, tool string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, ovsTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Env = append(os.Environ(), "OVS_RUNDIR="+a.cfg.OVS.RunDir, "LC_ALL=C")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("sidecar: %s %s: %v: %s", tool, strings.Join(args, " "), err,
			strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// Defaults: where OVN-Kubernetes' ovn-ipsec-host finds them.
const (
	DefaultOVSRunDir = "/var/run/openvswitch"
	DefaultPlutoCtl  = "/run/pluto/pluto.ctl"
)

func (o *OVSConfig) setDefaults(stateDir string) {
	if o.RunDir == "" {
		o.RunDir = DefaultOVSRunDir
	}
	if o.DB == "" {
		o.DB = "unix:" + filepath.Join(o.RunDir, "db.sock")
	}
	if o.PKIDir == "" {
		o.PKIDir = filepath.Join(stateDir, "ovs")
	}
	// ovs-monitor-ipsec reads the paths from its own working directory.
	if abs, err := filepath.Abs(o.PKIDir); err == nil {
		o.PKIDir = abs
	}
	if o.PlutoCtl == "" {
		o.PlutoCtl = DefaultPlutoCtl
	}
	if o.ReportInterval == 0 {
		o.ReportInterval = 30 * time.Second
	}
}

// handoffFile records, a line "<watermark> <serial>" per hand-over, from
// which pluto state on each certificate was presented: IKE SAs numbered
// above a watermark present that line's certificate (or a later one's).
const handoffFile = "ovs-handoffs"

type handoffLog struct{ path string }

func (a *Agent) handoffs() handoffLog { return handoffLog{a.state.path(handoffFile)} }

// reset starts the log: every state presents serial (pluto loads the
// certificate when ovs-monitor-ipsec adds the conns).
func (h handoffLog) reset(serial string) error {
	return atomicfile.WriteFile(h.path, []byte("0 "+serial+"\n"), 0o600)
}

// add records that states above watermark present serial. Only the last
// lines matter; the log keeps 16.
func (h handoffLog) add(watermark uint64, serial string) error {
	raw, _ := os.ReadFile(h.path)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	lines = append(lines, fmt.Sprintf("%d %s", watermark, serial))
	if len(lines) > 16 {
		lines = lines[len(lines)-16:]
	}
	return atomicfile.WriteFile(h.path, []byte(strings.TrimSpace(strings.Join(lines, "\n"))+"\n"), 0o600)
}

// serialFor returns a function giving the certificate IKE SA n presents,
// current when the log knows nothing better. A watermark above every
// state pluto has now means pluto restarted and loaded the current
// certificate for all.
func (h handoffLog) serialFor(states []plutoState, current string) func(uint64) string {
	raw, _ := os.ReadFile(h.path)
	type entry struct {
		mark   uint64
		serial string
	}
	var log []entry
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		m, s, ok := strings.Cut(l, " ")
		n, err := strconv.ParseUint(m, 10, 64)
		if ok && err == nil {
			log = append(log, entry{n, s})
		}
	}
	if len(log) == 0 || log[len(log)-1].mark > watermark(states) {
		return func(uint64) string { return current }
	}
	return func(n uint64) string {
		s := current
		for i, e := range log {
			if i == 0 || e.mark < n {
				s = e.serial
			}
		}
		return s
	}
}

// larvalDrop is the sysctl that decides what the kernel does with a packet
// whose IPsec policy has no SA yet: drop it (1, the default) or queue it
// until pluto installs one (0).
const larvalDrop = "/proc/sys/net/core/xfrm_larval_drop"

// queuePacketsDuringHandoff sets net.core.xfrm_larval_drop to 0 in the
// sidecar's network namespace (the node's, like pluto's): while an IKE SA
// is replaced to authenticate a new certificate, the kernel then holds
// the tunnels' packets for the milliseconds it takes instead of dropping
// them.
func (a *Agent) queuePacketsDuringHandoff() {
	raw, err := os.ReadFile(larvalDrop)
	if err == nil && strings.TrimSpace(string(raw)) == "0" {
		return
	}
	if err == nil {
		err = os.WriteFile(larvalDrop, []byte("0\n"), 0o644)
	}
	if err != nil {
		a.log.Warn("could not set net.core.xfrm_larval_drop=0: packets sent while an IKE SA is replaced "+
			"for a new certificate will be dropped", "err", err)
		return
	}
	a.log.Info("set net.core.xfrm_larval_drop=0: packets wait for a replaced IKE SA instead of being dropped")
}
