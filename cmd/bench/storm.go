package main

// The storm phase (issue #23, goals 5 server part and 6): the CA server
// with N enrolled nodes each holding a Watch stream over its own mTLS
// connection, as the sidecar holds it; then the CA restarts under them
// (SIGTERM, the same data dir and address) and, once all are back, a
// forced `rotate --all` renews every one.
//
// N real sidecars do not fit on a 2-core host, so each node is a
// goroutine speaking the sidecar's gRPC-mode protocol call for call
// (sidecar/run.go Run and watch, sidecar/agent.go Pass, decide, obtain,
// snapshot, syncCRL, sendReport): a pass opens a connection per call
// (Watch snapshot, Renew when due, GetCRL anonymously, ReportInventory),
// then the node follows Watch on a connection of its own; an event that
// asks for one runs a pass, and a new certificate ends the stream so the
// node reconnects with it at once. A stream that fails is retried after
// the sidecar's backoff. Its backoff and dial code are unexported and
// tied to the NSS agent, so they are reproduced here from
// sidecar/run.go (newBackoff) and sidecar/client.go (dial): keep them in
// step. Node keys are ECDSA P-256 (the sidecar's --key-type ecdsa-p256),
// and each node's next key and CSR are made before the timed part, so
// the bench process spends the shared cores on the protocol only.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/ipsecca/ipsecca/internal/grpcaddr"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

var (
	stormNodes   int
	stormSpread  time.Duration
	stormProfile string
)

func init() {
	flag.IntVar(&stormNodes, "storm-nodes", 0, "storm phase: sidecars watching the CA (default 5000, --quick 500)")
	flag.DurationVar(&stormSpread, "storm-spread", 0, "storm phase: rotate --all --spread for the forced renewal")
	flag.StringVar(&stormProfile, "storm-profile", "", "storm phase: write the server's CPU profiles of the cold "+
		"connect, the reconnect and the rotation to this prefix")
	register("storm", runStorm)
}

// The sidecar's retry delays (sidecar/run.go): exponential from 1 s,
// capped at MaxBackoff (5 min by default), each drawn from [d/2, d].
const (
	sidecarMinBackoff = time.Second
	sidecarMaxBackoff = 5 * time.Minute
	sidecarResync     = time.Hour        // resyncEvery
	sidecarCallTO     = 30 * time.Second // Config.CallTimeout's default
)

func sidecarBackoff() *wait.Backoff {
	return &wait.Backoff{Duration: sidecarMinBackoff / 2, Factor: 2, Jitter: 1, Steps: math.MaxInt32,
		Cap: sidecarMaxBackoff / 2}
}

// backoffBound is the longest a sidecar can still be asleep `after` its
// stream dropped: the upper end of the delay of the last retry that can
// have begun by then (retry k waits at least 2^(k-2) s and at most
// 2^(k-1) s).
func backoffBound(after time.Duration) time.Duration {
	b := sidecarBackoff()
	elapsed := time.Duration(0)
	for {
		lo := b.Duration     // the lower end of this delay
		hi := 2 * b.Duration // Jitter 1: up to twice
		b.Step()
		if elapsed+lo >= after || hi >= sidecarMaxBackoff {
			return hi
		}
		elapsed += lo
	}
}

// stormFleet is the N emulated sidecars and what they saw.
type stormFleet struct {
	addr   string
	bundle []byte
	nodes  []*stormNode

	watching  atomic.Int64 // streams open whose first message arrived
	renewed   atomic.Int64
	renewErrs atomic.Int64
	refused   atomic.Int64 // Unauthenticated other than superseded: the node would enrol again
	dials     atomic.Int64 // connections made
	lastErr   atomic.Value // string
	errs      sync.Map     // message → *atomic.Int64
}

type stormNode struct {
	name string
	mu   sync.Mutex
	pair *tls.Certificate
	cert *x509.Certificate
	next *pending // the pending key and its CSR

	connectedAt atomic.Int64 // unix ns of the last stream's first message
	droppedAt   atomic.Int64 // unix ns of the last stream's end
	renewedAt   atomic.Int64
}

func (n *stormNode) current() (*tls.Certificate, *x509.Certificate) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pair, n.cert
}

func serialOf(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// dial is the sidecar's: TLS 1.2+, the CA bundle, the node's pair when
// given, only an ipsecca server accepted, GetCRL and GetCABundle retried.
func (f *stormFleet) dial(pair *tls.Certificate) (*grpc.ClientConn, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.bundle)
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if pair != nil {
		cfg.Certificates = []tls.Certificate{*pair}
	}
	f.dials.Add(1)
	return grpcaddr.Dial(f.addr, cfg, grpcaddr.WithRetry(ipseccav1.NodeService_ServiceDesc.ServiceName,
		"GetCABundle", "GetCRL"))
}

func (f *stormFleet) noteErr(err error) {
	if err != nil {
		f.lastErr.Store(err.Error())
		msg := status.Code(err).String() + ": " + addrRE.ReplaceAllString(status.Convert(err).Message(), "ADDR")
		if len(msg) > 110 {
			msg = msg[:110]
		}
		v, _ := f.errs.LoadOrStore(msg, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
}

var addrRE = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+`)

// errSummary lists the errors the nodes met since the last call, by kind.
func (f *stormFleet) errSummary() string {
	var out []string
	f.errs.Range(func(k, v any) bool {
		out = append(out, fmt.Sprintf("%d× %s", v.(*atomic.Int64).Load(), k))
		f.errs.Delete(k)
		return true
	})
	return strings.Join(out, "; ")
}

// run is the sidecar's Run loop in gRPC mode. A pass never fails here
// (its failures are the NSS database's).
func (n *stormNode) run(ctx context.Context, f *stormFleet) {
	backoff := sidecarBackoff()
	for ctx.Err() == nil {
		n.pass(ctx, f)
		err := n.watch(ctx, f)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			f.noteErr(err)
			t := time.NewTimer(backoff.Step())
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		backoff = sidecarBackoff()
	}
}

// pass is Pass: decide (a Watch snapshot), renew when due, then the CRL
// and the inventory report, each on its own connection.
func (n *stormNode) pass(ctx context.Context, f *stormFleet) {
	pair, cert := n.current()
	snap, err := n.snapshot(ctx, f, pair)
	renew := false
	switch {
	case status.Code(err) == codes.Unauthenticated && denial(err) == "certificate-superseded":
		renew = true
	case status.Code(err) == codes.Unauthenticated:
		f.refused.Add(1) // the sidecar would enrol again with a token: a node lost
		f.noteErr(err)
	case err != nil:
		f.noteErr(err) // server unreachable: keep the pair
	default:
		renew = snap.GetRotationDue() ||
			(snap.GetCurrentSerial() != "" && snap.GetCurrentSerial() != serialOf(cert))
	}
	if renew {
		if err := n.renew(ctx, f, pair); err != nil {
			f.renewErrs.Add(1)
			f.noteErr(err)
		}
	}
	n.syncCRL(ctx, f)
	n.report(ctx, f)
}

func denial(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == "ipsecca.io" {
			return info.GetReason()
		}
	}
	return ""
}

func (n *stormNode) snapshot(ctx context.Context, f *stormFleet, pair *tls.Certificate) (*ipseccav1.NodeEvent,
	error) {
	conn, err := f.dial(pair)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, sidecarCallTO)
	defer cancel()
	stream, err := ipseccav1.NewNodeServiceClient(conn).Watch(cctx, &ipseccav1.WatchRequest{})
	if err != nil {
		return nil, err
	}
	return stream.Recv()
}

func (n *stormNode) renew(ctx context.Context, f *stormFleet, pair *tls.Certificate) error {
	conn, err := f.dial(pair)
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, sidecarCallTO)
	defer cancel()
	n.mu.Lock()
	next := n.next
	n.mu.Unlock()
	resp, err := ipseccav1.NewNodeServiceClient(conn).Renew(cctx, &ipseccav1.RenewRequest{CsrPem: next.csr})
	if err != nil {
		return err
	}
	b, _ := pem.Decode(resp.GetCertificate().GetCertificatePem())
	if b == nil {
		return errors.New("renew: no certificate in the reply")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.pair = &tls.Certificate{Certificate: [][]byte{b.Bytes}, PrivateKey: next.key, Leaf: cert}
	n.cert = cert
	n.next = nodeCSR(n.name) // the following rotation's pending key (made ahead, see the file comment)
	n.mu.Unlock()
	n.renewedAt.Store(time.Now().UnixNano())
	f.renewed.Add(1)
	return nil
}

func (n *stormNode) syncCRL(ctx context.Context, f *stormFleet) {
	conn, err := f.dial(nil)
	if err != nil {
		return
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, sidecarCallTO)
	defer cancel()
	_, err = ipseccav1.NewNodeServiceClient(conn).GetCRL(cctx, &ipseccav1.GetCRLRequest{})
	f.noteErr(err)
}

// report sends what a node's NSS database holds: the CA and the node's
// pair.
func (n *stormNode) report(ctx context.Context, f *stormFleet) {
	pair, cert := n.current()
	conn, err := f.dial(pair)
	if err != nil {
		return
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, sidecarCallTO)
	defer cancel()
	_, err = ipseccav1.NewNodeServiceClient(conn).ReportInventory(cctx, &ipseccav1.ReportInventoryRequest{
		Entries: []*ipseccav1.InventoryEntry{
			{Nickname: "ipsecca-ca", Trust: "CT,,", Serial: "ca", Subject: "O=ipsecca",
				NotAfter: timestamppb.New(cert.NotAfter.AddDate(5, 0, 0))},
			{Nickname: "ovs_certkey_" + n.name, Trust: "u,u,u", Serial: serialOf(cert),
				Subject: cert.Subject.String(), NotAfter: timestamppb.New(cert.NotAfter)},
		},
	})
	f.noteErr(err)
}

// watch is the sidecar's watch: one stream on its own connection with the
// current pair; a pass for every event that asks for one; nil (reconnect
// at once) when the pass brought a new certificate.
func (n *stormNode) watch(ctx context.Context, f *stormFleet) error {
	pair, cert := n.current()
	conn, err := f.dial(pair)
	if err != nil {
		return err
	}
	defer conn.Close()
	wctx, cancel := context.WithTimeout(ctx, sidecarResync)
	defer cancel()
	stream, err := ipseccav1.NewNodeServiceClient(conn).Watch(wctx, &ipseccav1.WatchRequest{})
	if err != nil {
		n.droppedAt.Store(time.Now().UnixNano())
		return err
	}
	first := true
	defer func() {
		if !first {
			f.watching.Add(-1)
		}
		n.droppedAt.Store(time.Now().UnixNano())
	}()
	for {
		ev, err := stream.Recv()
		if err != nil {
			return err
		}
		if first {
			first = false
			n.connectedAt.Store(time.Now().UnixNano())
			f.watching.Add(1)
		}
		act := false
		switch ev.GetKind() {
		case ipseccav1.NodeEvent_SNAPSHOT:
			act = ev.GetRotationDue() || (ev.GetCurrentSerial() != "" && ev.GetCurrentSerial() != serialOf(cert))
		case ipseccav1.NodeEvent_ROTATION_DUE, ipseccav1.NodeEvent_CA_BUNDLE_CHANGED, ipseccav1.NodeEvent_REVOKED:
			act = true
		}
		if !act {
			continue
		}
		n.pass(ctx, f)
		if _, c := n.current(); serialOf(c) != serialOf(cert) {
			return nil
		}
	}
}

// nodeCSR is a fresh key and the CSR the sidecar makes for it (CN and
// SAN DNS:<cn>).
func nodeCSR(name string) *pending {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader,
		&x509.CertificateRequest{Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}}, k)
	if err != nil {
		fatal("%v", err)
	}
	return &pending{name: name, key: k, csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST",
		Bytes: der})}
}

// enrolFleet enrols n nodes with tokens (64 in flight) and returns them,
// each with its next key ready.
func (s *server) enrolFleet(n int) *stormFleet {
	f := &stormFleet{addr: s.addr, bundle: s.caPEM}
	ps := s.tokens(n)
	f.nodes = make([]*stormNode, n)
	conns := s.conns(8)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				p := nodeCSR(ps[i].name)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				resp, err := conns[w%len(conns)].Enroll(ctx, &ipseccav1.EnrollRequest{Token: ps[i].token,
					CsrPem: p.csr})
				cancel()
				if err != nil {
					fatal("storm: enrol %s: %v", p.name, err)
				}
				b, _ := pem.Decode(resp.GetCertificate().GetCertificatePem())
				cert, err := x509.ParseCertificate(b.Bytes)
				if err != nil {
					fatal("storm: %v", err)
				}
				f.nodes[i] = &stormNode{name: p.name, cert: cert, next: nodeCSR(p.name),
					pair: &tls.Certificate{Certificate: [][]byte{b.Bytes}, PrivateKey: p.key, Leaf: cert}}
			}
		}()
	}
	wg.Wait()
	return f
}

// waitAll waits until every node's stamp (read by at) is after since,
// or the deadline; it returns when the last one came and how many did.
func (f *stormFleet) waitAll(since time.Time, limit time.Duration, at func(*stormNode) int64) (time.Time, int) {
	deadline := time.Now().Add(limit)
	for {
		var last int64
		done := 0
		for _, n := range f.nodes {
			if t := at(n); t > since.UnixNano() {
				done++
				last = max(last, t)
			}
		}
		if done == len(f.nodes) || time.Now().After(deadline) {
			return time.Unix(0, last), done
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quantiles describes when the nodes' stamps came after since.
func (f *stormFleet) quantiles(since time.Time, at func(*stormNode) int64) string {
	var ds []time.Duration
	for _, n := range f.nodes {
		if t := at(n); t > since.UnixNano() {
			ds = append(ds, time.Unix(0, t).Sub(since))
		}
	}
	if len(ds) == 0 {
		return "none"
	}
	slices.Sort(ds)
	q := func(p float64) time.Duration { return ds[int(p*float64(len(ds)-1))].Round(time.Millisecond) }
	return fmt.Sprintf("%d nodes, p10 %s, p50 %s, p90 %s, max %s", len(ds), q(0.1), q(0.5), q(0.9), q(1))
}

// procStatus reads VmRSS and VmHWM (MiB) of pid.
func procStatus(pid int) (rss, hwm float64) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			hwm = kb / 1024
		}
	}
	return rss, hwm
}

// goHeap reads the server's Go memory from its pprof endpoint: heap in
// use and goroutine stacks in MiB, and the goroutine count.
func (s *server) goHeap() (heap, stack float64, goroutines int) {
	get := func(path string) string {
		resp, err := http.Get("http://" + s.pprofAddr + path)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	h := get("/debug/pprof/heap?debug=1")
	if m := regexp.MustCompile(`# HeapInuse = (\d+)`).FindStringSubmatch(h); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		heap = v / (1 << 20)
	}
	if m := regexp.MustCompile(`# Stack = (\d+)`).FindStringSubmatch(h); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		stack = v / (1 << 20)
	}
	g := get("/debug/pprof/goroutine?debug=1")
	if m := regexp.MustCompile(`goroutine profile: total (\d+)`).FindStringSubmatch(g); m != nil {
		goroutines, _ = strconv.Atoi(m[1])
	}
	return heap, stack, goroutines
}

// saveHeap writes the server's heap profile (go tool pprof -sample_index=inuse_space).
func (s *server) saveHeap(file string) {
	resp, err := http.Get("http://" + s.pprofAddr + "/debug/pprof/heap")
	if err != nil {
		say("heap profile: %v", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	os.WriteFile(file, b, 0o644)
}

// restart stops the server with SIGTERM and starts it again on the same
// data dir and address. It returns when the old process exited and when
// the new one listened, both from the signal. Call waitHealthy for the
// admin connection: during the nodes' reconnect its health check
// competes with them for a handshake.
func (s *server) restart() (t0 time.Time, exited, listening time.Duration) {
	if s.adminConn != nil {
		s.adminConn.Close()
		s.adminConn = nil
	}
	args := s.cmd.Args
	t0 = time.Now()
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
	exited = time.Since(t0)
	s.cmd = exec.Command(args[0], args[1:]...)
	s.cmd.Stderr = os.Stderr
	if err := s.cmd.Start(); err != nil {
		fatal("storm: restart: %v", err)
	}
	// Listening: the nodes can reach it.
	for {
		if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
			c.Close()
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return t0, exited, time.Since(t0)
}

// raiseNoFile lifts the bench's open-file limit to its hard limit: every
// node holds a connection, some two at once.
func raiseNoFile(need uint64) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		fatal("storm: %v", err)
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		fatal("storm: raise RLIMIT_NOFILE: %v", err)
	}
	if l.Cur < need {
		say("storm: RLIMIT_NOFILE is %d, below the %d this run may hold open", l.Cur, need)
	}
}

func runStorm(c config, _ *baseline) ([]row, []goal) {
	n := stormNodes
	if n == 0 {
		n = 5000
		if c.quick {
			n = 500
		}
	}
	idle, limit := 10*time.Second, 5*time.Minute
	if c.quick {
		idle, limit = 3*time.Second, 60*time.Second
	}
	raiseNoFile(uint64(2*n + 256))
	// The nodes' side shares the cores with the server: spend less of
	// them collecting the bench's own garbage.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	srv := startServer(c, "")
	defer srv.stop()
	pid := func() int { return srv.cmd.Process.Pid }
	t0 := time.Now()
	f := srv.enrolFleet(n)
	say("storm: enrolled %d nodes in %s", n, time.Since(t0).Round(time.Millisecond))
	// The server at rest with n nodes in its store and no stream.
	srv.adminConn.Close()
	srv.adminConn = nil
	time.Sleep(time.Second)
	rss0, _ := procStatus(pid())
	heap0, stack0, gr0 := srv.goHeap()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	cpu0 := cpuSeconds([]int{pid()})[0]
	self0 := cpuSeconds([]int{os.Getpid()})[0]
	if stormProfile != "" {
		go srv.profile(stormProfile+"-connect.pprof", 4*time.Second)
	}
	start := time.Now()
	for _, nd := range f.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); nd.run(ctx, f) }()
	}
	lastUp, up := f.waitAll(start, limit, func(nd *stormNode) int64 { return nd.connectedAt.Load() })
	coldConnect := lastUp.Sub(start)
	say("storm: cold connect: %s; errors: %s", f.quantiles(start, func(nd *stormNode) int64 {
		return nd.connectedAt.Load()
	}), f.errSummary())
	if up < n {
		say("storm: only %d of %d nodes watching after %s", up, n, limit)
		coldConnect = limit
	}
	coldCPU := cpuSeconds([]int{pid()})[0] - cpu0
	selfCPU := cpuSeconds([]int{os.Getpid()})[0] - self0
	say("storm: %d streams open in %s (server CPU %.2f s, the nodes' side %.2f s, %d dials)", n,
		coldConnect.Round(time.Millisecond), coldCPU, selfCPU, f.dials.Load())

	// At rest with every stream open.
	time.Sleep(2 * time.Second)
	cpu1 := cpuSeconds([]int{pid()})[0]
	time.Sleep(idle)
	idleCores := (cpuSeconds([]int{pid()})[0] - cpu1) / idle.Seconds()
	rss1, hwm1 := procStatus(pid())
	heap1, stack1, gr1 := srv.goHeap()
	if stormProfile != "" {
		srv.saveHeap(stormProfile + "-heap.pprof")
	}
	perStream := (rss1 - rss0) * 1024 / float64(n) // KiB
	say("storm: %d streams: RSS %.1f MiB (%.1f before), HWM %.1f MiB, %.1f KiB/stream, heap %.1f→%.1f MiB, "+
		"stacks %.1f→%.1f MiB, goroutines %d→%d, idle %.4f cores", n, rss1, rss0, hwm1, perStream, heap0, heap1,
		stack0, stack1, gr0, gr1, idleCores)

	// The reconnect storm.
	dials0 := f.dials.Load()
	sig, exited, listening := srv.restart()
	if stormProfile != "" {
		go srv.profile(stormProfile+"-reconnect.pprof", 8*time.Second)
	}
	lastBack, back := f.waitAll(sig, limit, func(nd *stormNode) int64 { return nd.connectedAt.Load() })
	backCPU := cpuSeconds([]int{pid()})[0] // the new process's, all of it
	srv.waitHealthy()
	serving := time.Since(sig) // SERVING to an admin, asked once the nodes are back
	_, hwmBack := procStatus(pid())
	var firstDrop, lastDrop int64 = math.MaxInt64, 0
	for _, nd := range f.nodes {
		d := nd.droppedAt.Load()
		if d > sig.UnixNano() {
			firstDrop, lastDrop = min(firstDrop, d), max(lastDrop, d)
		}
	}
	dropped := time.Unix(0, firstDrop)
	say("storm: reconnect after the drop: %s; errors: %s", f.quantiles(dropped, func(nd *stormNode) int64 {
		return nd.connectedAt.Load()
	}), f.errSummary())
	reconnect := lastBack.Sub(dropped)
	downFor := sig.Add(listening).Sub(dropped)
	bound := backoffBound(downFor)
	target6a := downFor + bound + coldConnect
	say("storm: restart: streams dropped %s..%s after SIGTERM, old process gone at %s, listening at %s, admin "+
		"SERVING at %s; %d of %d watching again %s after the drop (%d dials, server CPU %.2f s)",
		dropped.Sub(sig).Round(time.Millisecond), time.Unix(0, lastDrop).Sub(sig).Round(time.Millisecond),
		exited.Round(time.Millisecond), listening.Round(time.Millisecond), serving.Round(time.Millisecond), back, n,
		reconnect.Round(time.Millisecond), f.dials.Load()-dials0, backCPU)

	// rotate --all: the CLI's call (cmd/ipsecca/rotation.go).
	time.Sleep(time.Second)
	cpu2 := cpuSeconds([]int{pid()})[0]
	if stormProfile != "" {
		go srv.profile(stormProfile+"-rotate.pprof", 8*time.Second)
	}
	dials1 := f.dials.Load()
	rot := time.Now()
	rctx, rcancel := context.WithTimeout(context.Background(), limit)
	resp, err := srv.admin.Rotate(rctx, &ipseccav1.RotateRequest{All: true, Spread: durationpb.New(stormSpread)})
	rcancel()
	if err != nil {
		fatal("storm: rotate --all: %v", err)
	}
	marked := time.Since(rot)
	lastRenew, renewed := f.waitAll(rot, limit+stormSpread,
		func(nd *stormNode) int64 { return nd.renewedAt.Load() })
	// Renewed and watching again with the new certificate.
	lastRe, rewatching := f.waitAll(rot, 30*time.Second, func(nd *stormNode) int64 {
		if nd.renewedAt.Load() <= rot.UnixNano() || nd.connectedAt.Load() < nd.renewedAt.Load() {
			return 0
		}
		return nd.connectedAt.Load()
	})
	say("storm: renewals after rotate --all: %s", f.quantiles(rot, func(nd *stormNode) int64 {
		return nd.renewedAt.Load()
	}))
	rotCPU := cpuSeconds([]int{pid()})[0] - cpu2
	rssEnd, hwmEnd := procStatus(pid())
	gaveUp := n - renewed
	say("storm: rotate --all marked %d in %s; %d of %d renewed in %s, %d watching with the new certificate in %s "+
		"(%d renewal errors, %d refused, %d dials, server CPU %.2f s, %.0f µs/node); RSS %.1f MiB, HWM %.1f MiB",
		resp.GetMarked(), marked.Round(time.Millisecond), renewed, n, lastRenew.Sub(rot).Round(time.Millisecond),
		rewatching, lastRe.Sub(rot).Round(time.Millisecond), f.renewErrs.Load(), f.refused.Load(),
		f.dials.Load()-dials1, rotCPU,
		perCert(rotCPU, n), rssEnd, hwmEnd)
	say("storm: errors during the rotation: %s", f.errSummary())

	// Peak memory bound: the server at rest plus every node holding two
	// connections at once (its stream and a pass's call), at the
	// per-stream cost measured above.
	memBound := rss0 + 2*float64(n)*perStream/1024
	rows := []row{
		{Name: fmt.Sprintf("storm: %d Watch streams open (one mTLS conn each), server RSS", n), RSSMiB: rss1,
			Value: fmt.Sprintf("%.1f MiB (%.1f before the streams), VmHWM %.1f MiB", rss1, rss0, hwm1)},
		{Name: "storm: server memory per Watch stream", Value: fmt.Sprintf("%.1f KiB RSS; Go heap %.1f KiB, "+
			"stacks %.1f KiB, %.1f goroutines", perStream, (heap1-heap0)*1024/float64(n),
			(stack1-stack0)*1024/float64(n), float64(gr1-gr0)/float64(n))},
		{Name: fmt.Sprintf("storm: server idle CPU, %d streams, over %s", n, idle),
			Value: fmt.Sprintf("%.4f cores", idleCores)},
		{Name: fmt.Sprintf("storm: %d sidecars connect from cold (pass + Watch)", n),
			Rate: float64(n) / coldConnect.Seconds(), Value: fmt.Sprintf("%s, server CPU %.0f µs/node, "+
				"the nodes' side (this process) %.0f µs/node", coldConnect.Round(time.Millisecond),
				perCert(coldCPU, n), perCert(selfCPU, n))},
		{Name: "storm: CA restart (SIGTERM → streams dropped → old process gone → listening → SERVING)",
			Value: fmt.Sprintf("dropped %s, exited %s, listening %s, SERVING %s",
				dropped.Sub(sig).Round(time.Millisecond), exited.Round(time.Millisecond),
				listening.Round(time.Millisecond), serving.Round(time.Millisecond))},
		{Name: fmt.Sprintf("storm: %d sidecars watching again after the drop", back),
			Value: fmt.Sprintf("%s (%s after listening), server CPU %.0f µs/node", reconnect.Round(time.Millisecond),
				lastBack.Sub(sig.Add(listening)).Round(time.Millisecond), perCert(backCPU, n))},
		{Name: fmt.Sprintf("storm: rotate --all (spread %s), %d renewed", stormSpread, renewed),
			Rate: float64(renewed) / lastRenew.Sub(rot).Seconds(),
			Value: fmt.Sprintf("marked in %s, all renewed in %s, watching with the new cert in %s, "+
				"server CPU %.0f µs/node", marked.Round(time.Millisecond), lastRenew.Sub(rot).Round(time.Millisecond),
				lastRe.Sub(rot).Round(time.Millisecond), perCert(rotCPU, n))},
		{Name: "storm: server peak memory (restarted process, reconnect + rotate --all)", RSSMiB: hwmEnd,
			Value: fmt.Sprintf("VmHWM %.1f MiB (%.1f after reconnecting), RSS now %.1f MiB", hwmEnd, hwmBack, rssEnd)},
	}
	goals := []goal{
		{ID: "5s", Name: fmt.Sprintf("CA server idle CPU with %d Watch streams open", n), Measured: idleCores,
			Target: 0.01, AtMost: true, Unit: "cores", Detail: fmt.Sprintf("over %s; %.1f KiB RSS per stream, "+
				"RSS %.1f→%.1f MiB", idle, perStream, rss0, rss1)},
		{ID: "6a", Name: fmt.Sprintf("all %d reconnected after a CA restart", n), Measured: reconnect.Seconds(),
			Target: target6a.Seconds(), AtMost: true, Unit: "s",
			Detail: fmt.Sprintf("%d of %d; target = server away %s + the sidecar backoff's longest sleep then %s"+
				" + a cold connect of all %s", back, n, downFor.Round(time.Millisecond), bound,
				coldConnect.Round(time.Millisecond))},
		{ID: "6b", Name: fmt.Sprintf("rotate --all renewed all %d", n), Measured: float64(renewed),
			Target: float64(n), Unit: "nodes",
			Detail: fmt.Sprintf("%d not renewed, %d renewal errors, %d certificates refused, in %s; %d watching "+
				"with the new cert", gaveUp, f.renewErrs.Load(), f.refused.Load(),
				lastRenew.Sub(rot).Round(time.Millisecond), rewatching)},
		{ID: "6c", Name: "server peak memory through restart and rotate --all", Measured: hwmEnd,
			Target: memBound, AtMost: true, Unit: "MiB",
			Detail: fmt.Sprintf("bound = at rest %.1f MiB + 2 conns × %d nodes × %.1f KiB", rss0, n, perStream)},
	}
	return rows, goals
}
