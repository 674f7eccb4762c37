package sidecar

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// Backoff delays: exponential from minBackoff, capped at MaxBackoff, each
// drawn from [d/2, d] so that 500 nodes losing the server together do not
// come back together.
const minBackoff = time.Second

// newBackoff is the retry delay sequence, capped at max: wait.Backoff adds
// up to Jitter×Duration to Duration, so half of each delay is the base.
func newBackoff(max time.Duration) *wait.Backoff {
	return &wait.Backoff{Duration: minBackoff / 2, Factor: 2, Jitter: 1, Steps: math.MaxInt32, Cap: max / 2}
}

// resyncEvery bounds how long one Watch stream is trusted before the
// agent reconnects for a fresh snapshot (and re-checks the database).
const resyncEvery = time.Hour

// Run keeps the node current until ctx ends: a pass, then the Watch
// stream, a pass for every event that asks for one; on any failure it
// keeps the current pair and retries after a backoff.
func (a *Agent) Run(ctx context.Context) error {
	if a.cfg.MetricsListen != "" {
		lis, err := net.Listen("tcp", a.cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("sidecar: metrics listener: %w", err)
		}
		go func() {
			if err := a.ServeMetrics(ctx, lis); err != nil {
				a.log.Error("metrics listener failed", "err", err)
			}
		}()
	}
	go a.verifyLoop(ctx)
	if a.cfg.OVS != nil {
		a.queuePacketsDuringHandoff()
	}
	if a.cfg.OVS != nil && a.cfg.Kube == nil {
		go a.tunnelLoop(ctx)
	}
	if a.cfg.Kube != nil {
		return a.kubeRun(ctx)
	}
	backoff := newBackoff(a.cfg.MaxBackoff)
	for ctx.Err() == nil {
		if _, err := a.Pass(ctx); err != nil {
			d := backoff.Step()
			a.log.Error("pass failed", "err", err, "retry_in", d)
			if !sleep(ctx, d) {
				break
			}
			continue
		}
		err := a.watch(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			d := backoff.Step()
			a.log.Warn("watch stream ended", "err", err, "retry_in", d)
			if !sleep(ctx, d) {
				break
			}
			continue
		}
		backoff = newBackoff(a.cfg.MaxBackoff)
	}
	return nil
}

// idle tells Config.Idle that the agent waits, once per pass: a wait
// that follows no new pass (a poll, a quiet event) has nothing new to give back.
func (a *Agent) idle() {
	if a.cfg.Idle == nil || a.passes.Load() == a.idleAt {
		return
	}
	a.idleAt = a.passes.Load()
	a.cfg.Idle()
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// errResync ends a healthy stream after resyncEvery.
var errResync = errors.New("sidecar: periodic resync")

// watch follows the stream and runs a pass for every event that needs
// one. It returns nil after a healthy resync period.
func (a *Agent) watch(ctx context.Context) error {
	pair, err := a.state.Current()
	if err != nil || pair == nil {
		return errors.New("sidecar: no current certificate to watch with")
	}
	conn, err := dial(a.cfg.Server, a.state.ReadCABundle(), pair, a.cfg.Now)
	if err != nil {
		return err
	}
	defer conn.Close()
	wctx, cancel := context.WithTimeoutCause(ctx, resyncEvery, errResync)
	defer cancel()
	stream, err := ipseccav1.NewNodeServiceClient(conn).Watch(wctx, &ipseccav1.WatchRequest{})
	if err != nil {
		a.noteCall(wctx, err)
		return err
	}
	for settled := false; ; settled = true {
		if settled {
			// The event handled, the stream waits for the next one.
			a.idle()
		}
		ev, err := stream.Recv()
		a.noteCall(wctx, err)
		if err != nil {
			if errors.Is(context.Cause(wctx), errResync) {
				return nil
			}
			return err
		}
		act, renewal := false, false
		switch ev.GetKind() {
		case ipseccav1.NodeEvent_SNAPSHOT:
			renewal = ev.GetRotationDue() || (ev.GetCurrentSerial() != "" && ev.GetCurrentSerial() != pair.Serial())
			act = renewal ||
				(ev.GetCaBundleSha256() != "" && ev.GetCaBundleSha256() != bundleHash(a.state.ReadCABundle()))
		case ipseccav1.NodeEvent_ROTATION_DUE:
			act, renewal = true, true
		case ipseccav1.NodeEvent_CA_BUNDLE_CHANGED:
			act = true
		case ipseccav1.NodeEvent_REVOKED:
			a.log.Error("the server revoked this node's certificates; re-admission needs a new token in the token file",
				"reason", ev.GetReason())
			act = true
		}
		if !act {
			continue
		}
		a.log.Info("server event", "kind", ev.GetKind().String(), "reason", ev.GetReason())
		if _, err := a.Pass(ctx); err != nil {
			return err
		}
		// The pair may have changed: reconnect with the new certificate.
		if cur, _ := a.state.Current(); cur != nil && cur.Serial() != pair.Serial() {
			return nil
		}
		// A pass keeps the current pair when its renewal fails (the CA
		// busy, a call timed out). The server says a rotation is due only
		// once per stream, so waiting on it would leave the node on its old
		// certificate until the next resync: end the stream, and Run tries
		// again after its backoff.
		if renewal {
			return errRenewalPending
		}
	}
}

// errRenewalPending ends a stream whose rotation the pass did not complete.
var errRenewalPending = errors.New("sidecar: the rotation the server asked for did not complete; retrying")

// tunnelLoop, in OVS mode, keeps the CA's view of the tunnels current
// between passes: every ReportInterval it takes the CRL when it changed
// (the CA tells peers nothing when another node is revoked) and reports
// the tunnels; the reply names IKE SAs to delete, whose peer
// authenticated with a certificate revoked since.
func (a *Agent) tunnelLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.OVS.ReportInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.tick(ctx)
	}
}

// tick is one round of tunnelLoop, under the NSS database's lock; none
// while a pass runs (it reports too).
func (a *Agent) tick(ctx context.Context) {
	if !a.busy.TryLock() {
		return
	}
	defer a.busy.Unlock()
	unlock, err := a.db.Lock(ctx)
	if err != nil {
		return
	}
	defer unlock()
	pair, err := a.state.Current()
	if err != nil || pair == nil {
		return
	}
	bundle := a.state.ReadCABundle()
	if len(bundle) == 0 {
		return // no pass has delivered yet
	}
	if _, err := a.syncCRL(ctx, bundle); err != nil {
		a.log.Warn("CRL not updated", "err", err)
	}
	a.report(ctx, bundle, pair)
}
