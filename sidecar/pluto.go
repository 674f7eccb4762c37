package sidecar

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/ipsecca/ipsecca/internal/atomicfile"
	"github.com/ipsecca/ipsecca/nssdb"
)

// A running pluto cannot honour a CRL from a CA's new key. NSS caches, per
// CA subject, the CRLs and the first certificate of that subject it checked
// them with (lib/certdb/crl.c, the DPCache's issuerDERCert), for the life of
// the process: after a key rollover, where the new CA has the old one's
// subject (ovs-monitor-ipsec's conns say rightca=%same), every CRL the new
// key signs fails that check and revokes nothing. Nothing short of a new
// process drops that cache. So when the old key's CA leaves NSS (the
// rollover's retire phase), the sidecar restarts pluto once, leaving its
// IPsec SAs in the kernel so that the traffic keeps flowing while the new
// pluto negotiates the tunnels again (restartPluto), when the CA says: it
// reports that the restart is due, and the CA gives each node a slot.

// plutoRestartFile marks, in the state directory, that pluto must start
// again: written before the old key's CA is deleted from NSS, removed once
// pluto did, so that a sidecar stopped in between still does it.
const plutoRestartFile = "pluto-restart"

// plutoWait bounds each wait of restartPluto for pluto.
const plutoWait = 30 * time.Second

// notePlutoRestart records that pluto must start again: the CA c leaves
// NSS with its key while a CA of its subject stays.
func (a *Agent) notePlutoRestart(c *x509.Certificate) error {
	id, _ := nssdb.KeyID(c.PublicKey)
	reason := fmt.Sprintf("the CA key %s of %s left NSS\n", id, c.Subject)
	if err := atomicfile.WriteFile(a.state.path(plutoRestartFile), []byte(reason), 0o600); err != nil {
		return fmt.Errorf("sidecar: note that pluto must restart: %w", err)
	}
	return nil
}

// plutoRestartDue reports why pluto must start again ("" when it need not).
func (a *Agent) plutoRestartDue() string {
	raw, err := os.ReadFile(a.state.path(plutoRestartFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(raw))
}

func (a *Agent) plutoRestartDone() error {
	if err := os.Remove(a.state.path(plutoRestartFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sidecar: %w", err)
	}
	return nil
}

// checkPlutoRestart handles a restart that cannot be done: without OVS
// mode or a start command the sidecar warns, once, that revocations from
// the new key wait for a restart of pluto, and forgets it. Otherwise the
// restart waits for its slot (restartPluto).
func (a *Agent) checkPlutoRestart() error {
	reason := a.plutoRestartDue()
	if reason == "" || a.canRestartPluto() {
		return nil
	}
	a.log.Warn("pluto must be restarted to enforce revocations from the CA's new key: a running pluto "+
		"checks CRLs with the CA certificate it first saw (give the sidecar --pluto-start-cmd to have it "+
		"done, or run ipsec whack --shutdown --leave-state and start pluto)", "reason", reason)
	return a.plutoRestartDone()
}

func (a *Agent) canRestartPluto() bool { return a.cfg.OVS != nil && a.cfg.OVS.PlutoStartCmd != "" }

// restartPluto starts pluto again, at the time the CA gave this node (two
// peers restarting at once lose traffic and send some in clear, measured),
// in four steps:
//
//  1. stop: whack --shutdown --leave-state, which keeps the IPsec SAs and
//     policies in the kernel (libreswan's own unit then skips its flush),
//     and wait until pluto is gone; a pluto that does not answer is gone
//     already, one that answers but does not stop is an error (two plutos
//     must never run);
//  2. start: OVSConfig.PlutoStartCmd, then wait until pluto answers, and
//     note it (a retry after a later failure does not stop it again);
//  3. conns: pluto loads ovs-monitor-ipsec's conns itself as it starts
//     (auto=route); once it lists them all, each is initiated, and the new
//     IKE and IPsec SAs replace the kept ones, which carry the traffic until
//     then and expire in the kernel. ovs-monitor-ipsec's refresh command
//     would delete and add every conn again while their negotiations run,
//     and pluto 4.10 stopped answering in the middle of one (measured);
//  4. forget: pluto numbers its states from 1 again, so the handoff log
//     starts over with the node's certificate.
func (a *Agent) restartPluto(ctx context.Context, pair *Pair) error {
	reason := a.plutoRestartDue()
	if reason == "" || !a.canRestartPluto() {
		return nil
	}
	start := time.Now()
	show, err := a.ovsTool(ctx, "ovs-appctl", "-t", "ovs-monitor-ipsec", "tunnels/show")
	if err != nil {
		return err
	}
	conns := tunnelConns(parseTunnelsShow(show))
	if !strings.HasSuffix(reason, plutoStarted) {
		if err := a.stopPluto(ctx); err != nil {
			return err
		}
		if err := a.runPlutoStart(ctx); err != nil {
			return err
		}
		if err := a.waitPluto(ctx, true); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(a.state.path(plutoRestartFile), []byte(reason+plutoStarted), 0o600); err != nil {
			return fmt.Errorf("sidecar: %w", err)
		}
	}
	if err := a.initiateConns(ctx, conns); err != nil {
		return err
	}
	if err := a.handoffs().reset(pair.Serial()); err != nil {
		return err
	}
	a.log.Info("restarted pluto with its IPsec SAs left in the kernel, so that it checks CRLs with the CA's "+
		"current key", "reason", strings.TrimSuffix(reason, plutoStarted), "conns", len(conns),
		"took", time.Since(start).Round(time.Millisecond))
	return a.plutoRestartDone()
}

// plutoStarted ends the restart note once the new pluto runs.
const plutoStarted = "; pluto started"

// tunnelConns lists the libreswan conns ovs-monitor-ipsec writes for its
// configured tunnels: IFACE-in-V and IFACE-out-V.
func tunnelConns(tunnels []ovsTunnel) []string {
	var conns []string
	for _, t := range tunnels {
		if t.Configured {
			conns = append(conns, fmt.Sprintf("%s-in-%d", t.Iface, t.Version),
				fmt.Sprintf("%s-out-%d", t.Iface, t.Version))
		}
	}
	return conns
}

// stopPluto is step 1 of restartPluto.
func (a *Agent) stopPluto(ctx context.Context) error {
	if _, err := a.whack(ctx, "--shutdown", "--leave-state"); err != nil {
		if _, up := a.whack(ctx, "--showstates"); up == nil {
			return fmt.Errorf("sidecar: pluto answers but did not stop: %w", err)
		}
		return nil // not running
	}
	return a.waitPluto(ctx, false)
}

// initiateConns is step 3 of restartPluto. A tunnel's two conns share one
// IKE SA: the second is initiated once the first has its IKE SA, or pluto
// starts two IKE SAs with the peer, and the peer (uniqueids=yes) deletes
// the first with its Child SA as the second comes (measured: 3 s without
// traffic on the pair).
func (a *Agent) initiateConns(ctx context.Context, conns []string) error {
	deadline := time.Now().Add(plutoWait)
	for {
		status, err := a.whack(ctx, "--status")
		if err == nil && !slices.ContainsFunc(conns, func(c string) bool {
			return !strings.Contains(string(status), fmt.Sprintf("%q:", c))
		}) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sidecar: pluto did not load the conns %v in %s", conns, plutoWait)
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
	for i, c := range conns {
		if i%2 == 1 { // the tunnel's second conn: after the tunnel's IKE SA (under either conn)
			first := conns[i-1]
			if _, err := a.waitStates(ctx, func(st []plutoState) bool {
				return slices.ContainsFunc(st, func(s plutoState) bool {
					return s.IKE && s.Established && (s.Conn == first || s.Conn == c)
				})
			}); err != nil {
				a.log.Warn("no IKE SA for a conn after the restart of pluto", "conn", first, "err", err)
			}
		}
		if _, err := a.whack(ctx, "--name", c, "--initiate", "--asynchronous"); err != nil {
			a.log.Warn("could not initiate a conn after the restart of pluto", "conn", c, "err", err)
		}
	}
	return nil
}

// runPlutoStart runs the start command. pluto forks into the background
// and may keep the command's output open: Wait gives it a second.
func (a *Agent) runPlutoStart(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, plutoWait)
	defer cancel()
	cmd := exec.CommandContext(cctx, "sh", "-c", a.cfg.OVS.PlutoStartCmd)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.WaitDelay = &out, &out, time.Second
	if err := cmd.Run(); err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		return fmt.Errorf("sidecar: pluto start command %q: %v: %s", a.cfg.OVS.PlutoStartCmd, err,
			strings.TrimSpace(out.String()))
	}
	return nil
}

// waitPluto waits until pluto answers on its control socket (up) or no
// longer does.
func (a *Agent) waitPluto(ctx context.Context, up bool) error {
	deadline := time.Now().Add(plutoWait)
	for {
		_, err := a.whack(ctx, "--showstates")
		if (err == nil) == up {
			return nil
		}
		if time.Now().After(deadline) {
			state := map[bool]string{true: "start", false: "stop"}[up]
			return fmt.Errorf("sidecar: pluto did not %s in %s (control socket %s)", state, plutoWait,
				a.cfg.OVS.PlutoCtl)
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
}
