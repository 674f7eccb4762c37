// Package sidecar is the node agent: it enrols the node (bootstrap token
// first, mTLS renewal after), keeps the node's certificate, key and the CA
// in the node's NSS database through nssdb, follows the server's Watch
// stream, and backs off when the server is away.
package sidecar

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ipsecca/ipsecca/ca/nodecert"
	"github.com/ipsecca/ipsecca/internal/atomicfile"
	"github.com/ipsecca/ipsecca/internal/pemutil"
	"github.com/ipsecca/ipsecca/nssdb"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store"
)

// Config configures an Agent.
type Config struct {
	Server    string // host:port of the CA
	CAFile    string // CA bundle to trust before the first enrolment
	Node      string // node name the token was made for
	CN        string // certificate name; Node when empty
	TokenFile string // bootstrap token, for the first enrolment and after expiry
	NSSDir    string // the node's NSS database, e.g. /var/lib/ipsec/nss
	StateDir  string // private state: key/cert versions and PEM copies
	// KeyType of the node key: "rsa-2048" (default, as OVN-Kubernetes'
	// own script) or "ecdsa-p256".
	KeyType string
	// Nicknames in NSS; ovs-monitor-ipsec's names by default.
	CANickname string // CANickname
	Nickname   string // NodeNickname(CN)
	// ReloadCmd runs (sh -c) after a change, e.g. "ipsec whack --rereadall".
	ReloadCmd     string
	ReloadTimeout time.Duration // 30 s when zero
	CallTimeout   time.Duration // per RPC; 30 s when zero
	// MaxBackoff caps the retry delay when the server is away (5 min).
	MaxBackoff time.Duration
	Logger     *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Hook is passed to nssdb for fault injection in tests; nil in production.
	Hook func(step string) error
	// Idle, when set, is called by Run once a pass has delivered and the
	// agent settles to wait (for a Watch event, or the next poll): the
	// process may give back memory it needed only to get there.
	Idle func()
	// Kube, when set, enrols through Kubernetes CSR objects instead of gRPC.
	Kube *KubeConfig
	// OVS, when set, delivers through Open vSwitch's other_config for
	// ovs-monitor-ipsec instead of putting the pair into NSS itself.
	OVS *OVSConfig
	// MetricsListen, when set, is the address (host:port) where Run serves
	// Prometheus metrics on /metrics.
	MetricsListen string
}

// Agent keeps one node's NSS database current.
type Agent struct {
	cfg   Config
	db    *nssdb.DB
	state State
	log   *slog.Logger
	// metrics of the passes, served on Config.MetricsListen.
	metrics *metrics
	// busy is held by a pass; the OVS mode's tunnel reports skip a round
	// rather than queue behind one (the NSS lock is a polled flock, which
	// back-to-back reports could hold against a pass for good).
	busy sync.Mutex
	// passes counts Pass calls; idleAt is passes when Run last called
	// Config.Idle (Run's goroutine only).
	passes atomic.Int64
	idleAt int64
}

// New validates cfg and returns an Agent.
func New(cfg Config) (*Agent, error) {
	if cfg.CN == "" && cfg.Kube == nil {
		cfg.CN = cfg.Node
	}
	// The CA issues names in lower case (libreswan compares IDs without
	// regard to case); the NSS nickname must match the certificate's CN.
	cfg.Node, cfg.CN = store.CanonicalName(cfg.Node), store.CanonicalName(cfg.CN)
	if cfg.Kube != nil {
		cfg.Kube.setDefaults()
	}
	switch {
	case cfg.Server == "" && cfg.Kube == nil:
		return nil, errors.New("sidecar: the server address is required")
	case cfg.NSSDir == "" || cfg.StateDir == "":
		return nil, errors.New("sidecar: the NSS and state directories are required")
	}
	if err := nodecert.ValidName(cfg.Node); err != nil {
		return nil, fmt.Errorf("sidecar: node name: %v", err)
	}
	if cfg.CN != "" {
		if err := nodecert.ValidName(cfg.CN); err != nil {
			return nil, fmt.Errorf("sidecar: certificate name: %v", err)
		}
	}
	switch cfg.KeyType {
	case "":
		cfg.KeyType = nodecert.KeyRSA2048
	case nodecert.KeyRSA2048, nodecert.KeyECDSAP256:
	default:
		return nil, fmt.Errorf("sidecar: key type %q: want rsa-2048 or ecdsa-p256", cfg.KeyType)
	}
	if cfg.CANickname == "" {
		cfg.CANickname = CANickname
	}
	if cfg.Nickname == "" && cfg.CN != "" {
		cfg.Nickname = NodeNickname(cfg.CN)
	}
	if cfg.ReloadTimeout == 0 {
		cfg.ReloadTimeout = 30 * time.Second
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OVS != nil {
		cfg.OVS.setDefaults(cfg.StateDir)
	}
	db := nssdb.New(cfg.NSSDir)
	db.Hook = cfg.Hook
	db.Now = cfg.Now
	a := &Agent{cfg: cfg, db: db, state: State{Dir: cfg.StateDir}, log: cfg.Logger.With("node", cfg.Node),
		metrics: newMetrics()}
	a.loadCRLMetrics()
	return a, nil
}

// localRenewFraction: renew without being told once this much of the
// certificate's life has passed (the server normally says so at 90%).
const localRenewFraction = 0.95

// ErrNeedToken means the node must enrol and has no usable token.
var ErrNeedToken = errors.New("sidecar: a bootstrap token is needed")

// Pass does one reconcile: it obtains a certificate when the node has none
// (or an expired one), renews when the server says it is due, keeps the
// CA bundle current, and makes the NSS database hold exactly the CA and
// the node's pair. It returns whether the database changed. With the
// server unreachable but a valid pair in place it converges the database
// from the state directory and returns nil.
//
// A pass decides what to do about the certificate (decide: a typed
// action), does it (act), then delivers the outcome into NSS.
func (a *Agent) Pass(ctx context.Context) (changed bool, err error) {
	a.passes.Add(1)
	if a.cfg.Kube != nil {
		return a.kubePass(ctx)
	}
	unlock, changed, err := a.begin(ctx)
	if err != nil {
		return changed, err
	}
	defer unlock()
	bundle := a.state.ReadCABundle()
	delivered := bundle // by the last pass
	if len(bundle) == 0 {
		if bundle, err = os.ReadFile(a.cfg.CAFile); err != nil {
			return changed, fmt.Errorf("sidecar: read the CA bundle: %w", err)
		}
	}
	pair, err := a.state.Current()
	if err != nil {
		a.log.Warn("state directory holds no usable pair; enrolling again", "err", err)
		pair = nil
	}
	prev, now := pair, a.cfg.Now()
	pair, bundle, err = a.act(ctx, a.decide(ctx, pair, bundle, now), pair, now)
	if err != nil {
		return changed, err
	}
	probe := a.probeDrift(ctx, prev, pair, delivered, bundle)
	deliveredChange, err := a.deliver(ctx, pair, bundle)
	a.noteDrift(ctx, probe, deliveredChange, err)
	changed = changed || deliveredChange
	if err != nil {
		return changed, err
	}
	if crlChanged, err := a.syncCRL(ctx, bundle); err != nil {
		a.log.Warn("CRL not updated", "err", err)
	} else {
		changed = changed || crlChanged
	}
	a.report(ctx, bundle, pair)
	a.passDone(pair)
	if changed {
		a.reload(ctx)
	}
	return changed, nil
}

// begin is the preamble of a pass through either door (Pass, kubePass):
// it takes the NSS database's lock (unlock releases it), creates the
// database when there is none, and the state directory. changed reports
// a database created; on an error nothing is left locked.
func (a *Agent) begin(ctx context.Context) (unlock func(), changed bool, err error) {
	a.busy.Lock()
	unlockDB, err := a.db.Lock(ctx)
	if err != nil {
		a.busy.Unlock()
		return nil, false, err
	}
	unlock = func() { unlockDB(); a.busy.Unlock() }
	if created, err := a.db.Ensure(ctx); err != nil {
		unlock()
		return nil, false, err
	} else if created {
		a.log.Info("created NSS database", "dir", a.cfg.NSSDir)
		changed = true
	}
	if err := a.state.Init(); err != nil {
		unlock()
		return nil, changed, err
	}
	return unlock, changed, nil
}

// action is what a gRPC pass does about the node's certificate.
type action int

const (
	keep  action = iota // the current pair serves on
	enrol               // none, expired, or no longer accepted: with a token
	renew               // due, or the server holds a newer one: over mTLS
)

// decision is decide's verdict.
type decision struct {
	action action
	// revoked: the server no longer accepts the current certificate, so
	// it is no fallback when enrolment fails.
	revoked bool
	// bundle is the CA bundle to go on with: the server's when it changed.
	bundle []byte
}

// decide says what the pass does about pair at now: enrol when there is
// none or it expired; otherwise it asks the server (one Watch snapshot)
// whether the certificate is due, superseded or refused, and renews
// without being told once localRenewFraction of its life has passed. With
// the server unreachable it keeps the pair.
func (a *Agent) decide(ctx context.Context, pair *Pair, bundle []byte, now time.Time) decision {
	d := decision{action: keep, bundle: bundle}
	switch {
	case pair == nil:
		d.action = enrol
		return d
	case !now.Before(pair.Cert.NotAfter):
		a.log.Warn("the node certificate has expired; enrolling again with a token",
			"serial", pair.Serial(), "not_after", pair.Cert.NotAfter)
		d.action = enrol
		return d
	}
	snap, err := a.snapshot(ctx, bundle, pair)
	switch {
	case status.Code(err) == codes.Unauthenticated && denialReason(err) == reasonSuperseded:
		// The server issued a successor this node never got (a lost
		// renewal reply): renewing with the pending key returns it.
		a.log.Warn("the server holds a newer certificate than the node; renewing with the pending key to get it",
			"serial", pair.Serial())
		d.action = renew
	case status.Code(err) == codes.Unauthenticated:
		a.log.Warn(
			"the server no longer accepts the node certificate (revoked or unknown); enrolling again with a token",
			"err",
			status.Convert(err).Message(),
		)
		d.action, d.revoked = enrol, true
	case err != nil:
		a.log.Warn("server unreachable; keeping the current certificate", "err", err)
	default:
		if snap.GetCaBundleSha256() != "" && snap.GetCaBundleSha256() != bundleHash(bundle) &&
			len(snap.GetCaBundlePem()) > 0 {
			a.log.Info("CA bundle changed", "sha256", snap.GetCaBundleSha256())
			d.bundle = snap.GetCaBundlePem()
		}
		switch {
		case snap.GetRotationDue():
			a.log.Info("rotation due", "serial", pair.Serial(), "reason", snap.GetReason())
			d.action = renew
		case snap.GetCurrentSerial() != "" && snap.GetCurrentSerial() != pair.Serial():
			a.log.Info("the server holds a newer certificate than the node; renewing",
				"server_serial", snap.GetCurrentSerial(), "node_serial", pair.Serial())
			d.action = renew
		}
	}
	life := pair.Cert.NotAfter.Sub(pair.Cert.NotBefore)
	if d.action == keep && !now.Before(pair.Cert.NotBefore.Add(time.Duration(float64(life)*localRenewFraction))) {
		d.action = renew
	}
	return d
}

// act carries out d and returns the pair and bundle to deliver. A failed
// renewal keeps the current pair (retried later); a failed enrolment
// keeps it only while it is valid and the server did not refuse it.
func (a *Agent) act(ctx context.Context, d decision, pair *Pair, now time.Time) (*Pair, []byte, error) {
	switch d.action {
	case enrol:
		p, b, err := a.enrol(ctx, d.bundle)
		if err != nil {
			if pair != nil && now.Before(pair.Cert.NotAfter) && !d.revoked {
				a.log.Error("re-enrolment failed; keeping the current certificate", "err", err)
				return pair, d.bundle, nil
			}
			return nil, nil, err
		}
		return p, b, nil
	case renew:
		p, b, err := a.renew(ctx, d.bundle, pair)
		if err != nil {
			a.log.Warn("renewal failed; keeping the current certificate and retrying later", "err", err)
			return pair, d.bundle, nil
		}
		return p, b, nil
	}
	return pair, d.bundle, nil
}

// deliver puts the bundle's CA certificates and the pair into NSS
// (through OVS's other_config in OVS mode) and the PEM copies, as the
// server sent them, into the state directory.
func (a *Agent) deliver(ctx context.Context, pair *Pair, bundle []byte) (changed bool, err error) {
	if a.cfg.OVS != nil {
		changed, err = a.deliverOVS(ctx, pair, bundle)
	} else {
		changed, err = a.deliverNSS(ctx, pair, bundle)
	}
	if err != nil {
		return changed, err
	}
	if err := a.state.WriteCopies(pair, bundle); err != nil {
		return changed, err
	}
	a.state.Prune()
	return changed, nil
}

// deliverNSS puts the bundle's CA certificates, then the pair, into NSS.
func (a *Agent) deliverNSS(ctx context.Context, pair *Pair, bundle []byte) (bool, error) {
	changed, err := a.syncTrust(ctx, bundle)
	if err != nil {
		return changed, err
	}
	if err := a.checkPlutoRestart(); err != nil {
		return changed, err
	}
	c, err := a.db.PutKeyPair(ctx, a.cfg.Nickname, pair.Cert, pair.Key)
	changed = changed || c
	if err != nil {
		return changed, err
	}
	if changed {
		a.log.Info("NSS database updated", "nickname", a.cfg.Nickname,
			"serial", pair.Serial(), "not_after", pair.Cert.NotAfter)
	}
	return changed, nil
}

// parseBundle reads a CA bundle (from the server, the ConfigMap or
// --ca-file): one certificate or more; what follows the last block is
// ignored.
func parseBundle(b []byte) ([]*x509.Certificate, error) {
	roots, err := pemutil.ParseCertificates(b, pemutil.Options{AllowTrailing: true})
	switch {
	case errors.Is(err, pemutil.ErrNoCertificate):
		return nil, errors.New("sidecar: the CA bundle holds no certificate")
	case err != nil:
		return nil, fmt.Errorf("sidecar: CA bundle: %w", err)
	}
	return roots, nil
}

func bundleHash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (a *Agent) newKey() (crypto.Signer, error) {
	if a.cfg.KeyType == nodecert.KeyECDSAP256 {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return rsa.GenerateKey(rand.Reader, 2048)
}

func (a *Agent) readToken() (string, error) {
	if a.cfg.TokenFile == "" {
		return "", fmt.Errorf("%w: node %s has no valid certificate and no --token-file; "+
			"create one with `ipsecca token create --node %s` and give it with --token-file",
			ErrNeedToken, a.cfg.Node, a.cfg.Node)
	}
	b, err := os.ReadFile(a.cfg.TokenFile)
	if err != nil || strings.TrimSpace(string(b)) == "" {
		return "", fmt.Errorf("%w: node %s has no valid certificate and %s holds no token (%v); "+
			"create one with `ipsecca token create --node %s` and write it there",
			ErrNeedToken, a.cfg.Node, a.cfg.TokenFile, err, a.cfg.Node)
	}
	return strings.TrimSpace(string(b)), nil
}

func (a *Agent) enrol(ctx context.Context, bundle []byte) (*Pair, []byte, error) {
	token, err := a.readToken()
	if err != nil {
		return nil, nil, err
	}
	pair, b, err := a.obtain(ctx, bundle, nil,
		func(ctx context.Context, c ipseccav1.NodeServiceClient, csr []byte) (*ipseccav1.IssueResponse, error) {
			return c.Enroll(ctx, &ipseccav1.EnrollRequest{Token: token, CsrPem: csr})
		})
	if err != nil {
		if st, ok := status.FromError(errors.Unwrap(err)); ok && st.Code() == codes.Unauthenticated {
			return nil, nil, fmt.Errorf("%w: the server refused the token in %s (%s); "+
				"create a new one with `ipsecca token create --node %s`", ErrNeedToken, a.cfg.TokenFile, st.Message(), a.cfg.Node)
		}
		return nil, nil, fmt.Errorf("sidecar: enrol: %w", err)
	}
	a.log.Info("enrolled", "serial", pair.Serial(), "not_after", pair.Cert.NotAfter)
	return pair, b, nil
}

func (a *Agent) renew(ctx context.Context, bundle []byte, cur *Pair) (*Pair, []byte, error) {
	pair, b, err := a.obtain(ctx, bundle, cur,
		func(ctx context.Context, c ipseccav1.NodeServiceClient, csr []byte) (*ipseccav1.IssueResponse, error) {
			return c.Renew(ctx, &ipseccav1.RenewRequest{CsrPem: csr})
		})
	if err != nil {
		return nil, nil, fmt.Errorf("sidecar: renew: %w", err)
	}
	a.log.Info("renewed", "old_serial", cur.Serial(), "serial", pair.Serial(), "not_after", pair.Cert.NotAfter)
	return pair, b, nil
}

// obtain makes a CSR for the pending key, asks the server through call
// (over mTLS with cur when given) and commits the certificate it returns
// to the state directory. An RPC error is returned wrapped once.
func (a *Agent) obtain(
	ctx context.Context, bundle []byte, cur *Pair,
	call func(context.Context, ipseccav1.NodeServiceClient, []byte) (*ipseccav1.IssueResponse, error),
) (*Pair, []byte, error) {
	key, _, err := a.state.PendingKey(a.newKey)
	if err != nil {
		return nil, nil, err
	}
	csr, err := newCSR(key, a.cfg.CN)
	if err != nil {
		return nil, nil, err
	}
	conn, err := dial(a.cfg.Server, bundle, cur, a.cfg.Now)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	defer cancel()
	resp, err := call(cctx, ipseccav1.NewNodeServiceClient(conn), csr)
	a.noteCall(cctx, err)
	if err != nil {
		return nil, nil, fmt.Errorf("rpc: %w", err)
	}
	pair, err := a.state.Commit(resp.GetCertificate().GetCertificatePem())
	if err != nil {
		return nil, nil, err
	}
	if a.cfg.Hook != nil {
		if err := a.cfg.Hook("cert-stored"); err != nil {
			return nil, nil, err
		}
	}
	return pair, resp.GetCaBundlePem(), nil
}

// snapshot opens Watch, reads the first message and closes.
func (a *Agent) snapshot(ctx context.Context, bundle []byte, pair *Pair) (*ipseccav1.NodeEvent, error) {
	conn, err := dial(a.cfg.Server, bundle, pair, a.cfg.Now)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	defer cancel()
	stream, err := ipseccav1.NewNodeServiceClient(conn).Watch(cctx, &ipseccav1.WatchRequest{})
	if err != nil {
		a.noteCall(cctx, err)
		return nil, err
	}
	ev, err := stream.Recv()
	a.noteCall(cctx, err)
	return ev, err
}

// report sends the NSS inventory, and in OVS mode the tunnels, to the
// server (best effort), and deletes the IKE SAs it names as revoked.
func (a *Agent) report(ctx context.Context, bundle []byte, pair *Pair) {
	req, err := a.inventory(ctx)
	if err != nil {
		a.log.Warn("list NSS database for the inventory", "err", err)
		return
	}
	if a.cfg.OVS != nil {
		if req.Tunnels, err = a.observeTunnels(ctx); err != nil {
			a.log.Warn("could not read the tunnels from ovs-monitor-ipsec and pluto", "err", err)
		} else {
			req.TunnelsReported = true
		}
	}
	a.sendReport(ctx, bundle, pair, req)
}

// inventory lists the NSS database for a report: every certificate with
// its nickname and trust, the intermediates (trust ,,) as well as the
// anchors (CT,,), so the CA can tell one from the other.
func (a *Agent) inventory(ctx context.Context) (*ipseccav1.ReportInventoryRequest, error) {
	entries, err := a.db.List(ctx)
	if err != nil {
		return nil, err
	}
	req := &ipseccav1.ReportInventoryRequest{PlutoRestartDue: a.plutoRestartDue() != "" && a.canRestartPluto()}
	for _, e := range entries {
		certs := e.Certs
		if len(certs) > len(e.Trusts) {
			// certutil lists every certificate of the nickname's subject,
			// also those under another nickname (a subordinate CA with the
			// subject of the root it replaces, a pair parked by PutKeyPair):
			// report each under its own.
			certs = nil
			for _, c := range e.Certs {
				if ok, err := a.db.Under(ctx, e.Nickname, c); err != nil {
					return nil, err
				} else if ok {
					certs = append(certs, c)
				}
			}
		}
		for _, c := range certs {
			req.Entries = append(req.Entries, &ipseccav1.InventoryEntry{Nickname: e.Nickname,
				Serial: serialHex(c.SerialNumber), NotAfter: timestamppb.New(c.NotAfter), Trust: e.Trust,
				Subject: c.Subject.String()})
		}
	}
	return req, nil
}

// sendReport sends req over mTLS with pair and acts on the reply.
func (a *Agent) sendReport(ctx context.Context, bundle []byte, pair *Pair, req *ipseccav1.ReportInventoryRequest) {
	conn, err := dial(a.cfg.Server, bundle, pair, a.cfg.Now)
	if err != nil {
		return
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	defer cancel()
	resp, err := ipseccav1.NewNodeServiceClient(conn).ReportInventory(cctx, req)
	a.noteCall(cctx, err)
	if err != nil {
		a.log.Warn("inventory report failed", "err", err)
		return
	}
	if a.cfg.OVS == nil {
		return
	}
	if len(resp.GetRevokedIkeStates()) > 0 {
		a.deleteIKEStates(ctx, resp.GetRevokedIkeStates())
	}
	if len(resp.GetReauthenticateIkeStates()) > 0 {
		if _, err := a.replaceIKESAs(ctx, resp.GetReauthenticateIkeStates()); err != nil {
			a.log.Warn("could not authenticate IKE SAs again", "err", err)
		}
	}
	if at := resp.GetRestartPlutoAt(); req.GetPlutoRestartDue() && at != nil {
		if a.cfg.Now().Before(at.AsTime()) {
			a.log.Debug("pluto restarts in the slot the CA gave", "at", at.AsTime())
		} else if err := a.restartPluto(ctx, pair); err != nil {
			a.log.Error("could not restart pluto", "err", err)
		}
	}
}

func serialHex(n *big.Int) string { return n.Text(16) }

// reload runs the reload command with its timeout and logs the outcome.
func (a *Agent) reload(ctx context.Context) {
	if a.cfg.ReloadCmd == "" {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, a.cfg.ReloadTimeout)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(cctx, "sh", "-c", a.cfg.ReloadCmd).CombinedOutput()
	if err != nil {
		a.log.Error("reload command failed", "cmd", a.cfg.ReloadCmd, "err", err,
			"output", strings.TrimSpace(string(out)), "took", time.Since(start))
		return
	}
	a.log.Info("reload command done", "cmd", a.cfg.ReloadCmd, "took", time.Since(start))
}

// Check reports whether the NSS database holds exactly what it should:
// the CA under its nickname and one valid node pair, valid in NSS.
func (a *Agent) Check(ctx context.Context) error {
	pair, err := a.state.Current()
	if err != nil || pair == nil {
		return fmt.Errorf("sidecar: no current certificate in %s", a.cfg.StateDir)
	}
	if a.cfg.OVS != nil {
		return a.checkOVS(ctx, pair)
	}
	certs, err := a.db.Certs(ctx, a.cfg.Nickname)
	if err != nil {
		return err
	}
	if len(certs) != 1 || !certs[0].Equal(pair.Cert) {
		return fmt.Errorf("sidecar: %s holds %d certificate(s), want exactly serial %s",
			a.cfg.Nickname, len(certs), pair.Serial())
	}
	if ok, err := a.db.HasKey(ctx, pair.Cert); err != nil || !ok {
		return fmt.Errorf("sidecar: the key of %s is not in the NSS database (%v)", a.cfg.Nickname, err)
	}
	for _, u := range []string{"C", "V"} {
		if err := a.db.Verify(ctx, a.cfg.Nickname, u); err != nil {
			return err
		}
	}
	if !a.cfg.Now().Before(pair.Cert.NotAfter) {
		return fmt.Errorf("sidecar: the node certificate expired at %s", pair.Cert.NotAfter)
	}
	return nil
}

// revokedSerials lists the serials a CRL revokes, in its order, as ipsecca
// prints serials.
func revokedSerials(crl *x509.RevocationList) []string {
	serials := make([]string, 0, len(crl.RevokedCertificateEntries))
	for _, e := range crl.RevokedCertificateEntries {
		serials = append(serials, serialHex(e.SerialNumber))
	}
	return serials
}

// verifiedCRL parses a DER CRL and checks that a CA certificate of the
// bundle signed it: NSS imports it unchecked (nssdb.ImportCRL). Any CA of
// the bundle will do: the CA's own (for a subordinate CA no root), and
// during a key rollover the older key's, which signs the CRL.
func verifiedCRL(der, bundle []byte) (*x509.RevocationList, error) {
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("sidecar: CRL: %w", err)
	}
	cas, err := parseBundle(bundle)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(cas, func(c *x509.Certificate) bool { return crl.CheckSignatureFrom(c) == nil }) {
		return nil, fmt.Errorf("sidecar: the CRL (issuer %s) is not signed by a CA of the CA bundle", crl.Issuer)
	}
	return crl, nil
}

// crlFile keeps the last CRL imported into NSS, to import only changes.
const crlFile = "crl.der"

// syncCRL fetches the CA's CRL and imports it into NSS when it lists a
// different set of revoked certificates, so libreswan refuses revoked
// peers.
func (a *Agent) syncCRL(ctx context.Context, bundle []byte) (bool, error) {
	conn, err := dial(a.cfg.Server, bundle, nil, a.cfg.Now)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	defer cancel()
	resp, err := ipseccav1.NewNodeServiceClient(conn).GetCRL(cctx, &ipseccav1.GetCRLRequest{})
	a.noteCall(cctx, err)
	if err != nil {
		return false, err
	}
	crl, err := verifiedCRL(resp.GetDer(), bundle)
	if err != nil {
		return false, err
	}
	serials := revokedSerials(crl)
	path := a.state.path(crlFile)
	prev, _ := os.ReadFile(path)
	step := nextCRLStep(string(prev), serials, resp.GetDer())
	if step.state == string(prev) {
		return false, nil
	}
	if step.importIt {
		if err := a.db.ImportCRL(ctx, resp.GetDer()); err != nil {
			return false, err
		}
		a.crlImported(resp.GetDer(), crl)
		a.log.Info("imported CRL into NSS", "revoked", len(serials), "set_changed", step.changed)
	}
	return step.changed, atomicfile.WriteFile(path, []byte(step.state), 0o600)
}

// crlStep is what a pass does with the CA's CRL.
type crlStep struct {
	importIt bool   // import it into NSS
	changed  bool   // the revoked set changed: tell libreswan (reload)
	state    string // what to remember: the revoked serials, then the CRL's hash
}

// nextCRLStep decides from the remembered state (serials, a newline, the
// last imported CRL's SHA-256; older sidecars kept the serials alone) and
// the CRL just fetched. A CRL re-signed with the same serials is imported
// too, so NSS never keeps one past its NextUpdate, but needs no reload.
func nextCRLStep(prev string, serials []string, der []byte) crlStep {
	sum := sha256.Sum256(der)
	key := strings.Join(serials, ",")
	prevKey, _, _ := strings.Cut(prev, "\n")
	st := crlStep{state: key + "\n" + hex.EncodeToString(sum[:]), changed: key != prevKey}
	// Nothing revoked and nothing imported before: no CRL to keep current.
	st.importIt = st.state != prev && (len(serials) > 0 || prevKey != "")
	return st
}
