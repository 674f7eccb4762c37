// Command bench measures ipsecca in one run: the in-process signing limit,
// then the real `ipsecca serve` binary under enrolment and renewal load
// over gRPC+TLS with every certificate fsynced, the store at scale, and a
// fleet enrolling at once. `make bench` runs it; BENCHMARKS.md records
// the figures.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/internal/etcdtest"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
	"go.etcd.io/bbolt"
)

type config struct {
	binary      string
	quick       bool
	concurrency []int
	duration    time.Duration
	keyType     string
	storeSizes  []int
	fleet       int
	jsonOut     string
	cpuProfile  string
	store       string
	phases      map[string]bool // empty: every phase
}

// wants reports whether the run includes the named phase.
func (c config) wants(name string) bool { return len(c.phases) == 0 || c.phases[name] }

// row is one line of the results table.
type row struct {
	Name   string  `json:"name"`
	Rate   float64 `json:"per_second,omitempty"`
	P50    float64 `json:"p50_ms,omitempty"`
	P99    float64 `json:"p99_ms,omitempty"`
	Ratio  float64 `json:"ratio_to_limit,omitempty"`
	RSSMiB float64 `json:"server_peak_rss_mib,omitempty"`
	// CPUus is the server's CPU time (user+system) per certificate in
	// microseconds: steadier than the rate on a shared host, and what an
	// optimisation of the server moves.
	CPUus   float64 `json:"server_cpu_us_per_cert,omitempty"`
	Value   string  `json:"value,omitempty"`
	Comment string  `json:"comment,omitempty"`
}

func main() {
	if v := os.Getenv(minimalSignerEnv); v != "" {
		addr, caFile, _ := strings.Cut(v, ",")
		serveMinimalSigner(addr, caFile)
		return
	}
	var c config
	var conc, sizes string
	flag.StringVar(&c.binary, "binary", "bin/ipsecca", "the ipsecca binary to benchmark")
	flag.BoolVar(&c.quick, "quick", false,
		"a CI-sized run (about 2 minutes: 2 s loads, 500 nodes, stores of 10,000 and 50,000)")
	flag.StringVar(&conc, "concurrency", "1,16,64", "concurrent clients, comma-separated")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "load duration per concurrency level")
	flag.StringVar(&c.keyType, "ca-key-type", "ecdsa-p256", "the CA's key type")
	flag.StringVar(
		&sizes,
		"store-size",
		"10000,1000000",
		"store sizes for the scale test, comma-separated (small first)",
	)
	flag.IntVar(&c.fleet, "fleet", 5000, "nodes enrolling at once")
	flag.StringVar(&c.jsonOut, "json", "", "also write the results as JSON to this file")
	flag.StringVar(
		&c.store,
		"store",
		"etcd",
		"etcd: after bbolt, run the enrolment and renewal loads against a local 3-member etcd cluster (fsync on) in "+
			"the same run and print the ratio to bbolt (goal 3); bolt: bbolt only",
	)
	flag.StringVar(
		&c.cpuProfile,
		"cpuprofile",
		"",
		"write the server's CPU profile during the last enrolment run here (go tool pprof)",
	)
	var only string
	flag.StringVar(&only, "phases", "", "run only these phases, comma-separated: core and "+phaseNames()+
		" (default all)")
	flag.Parse()
	if only != "" {
		c.phases = map[string]bool{}
		for _, p := range strings.Split(only, ",") {
			c.phases[strings.TrimSpace(p)] = true
		}
	}
	if c.quick {
		c.duration, sizes, c.fleet = 2*time.Second, "10000,50000", 500
	}
	for _, s := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fatal("--concurrency %q: %v", conc, err)
		}
		c.concurrency = append(c.concurrency, n)
	}
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fatal("--store-size %q: %v", sizes, err)
		}
		c.storeSizes = append(c.storeSizes, n)
	}
	if c.store != "bolt" && c.store != "etcd" {
		fatal("--store %q: want bolt or etcd", c.store)
	}
	if _, err := os.Stat(c.binary); err != nil {
		fatal("binary %s: %v (run make build)", c.binary, err)
	}
	rows, goals := run(c)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "MEASURE\tPER SEC\tP50 ms\tP99 ms\tOF LIMIT\tSERVER CPU µs/CERT\tSERVER RSS MiB\tVALUE\n")
	for _, r := range rows {
		fmt.Fprintf(
			w,
			"%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.Name,
			num(r.Rate, 0),
			num(r.P50, 2),
			num(r.P99, 2),
			pct(r.Ratio),
			num(r.CPUus, 0),
			num(r.RSSMiB, 0),
			r.Value,
		)
	}
	w.Flush()
	printGoals(os.Stdout, goals)
	if c.jsonOut != "" {
		b, _ := json.MarshalIndent(struct {
			Rows  []row  `json:"rows"`
			Goals []goal `json:"goals"`
		}{rows, goals}, "", "  ")
		os.WriteFile(c.jsonOut, b, 0o644)
	}
}

func num(v float64, prec int) string {
	if v == 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

func pct(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", v*100)
}

func fatal(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
	os.Exit(1)
}

func say(format string, a ...any) { fmt.Fprintf(os.Stderr, "# "+format+"\n", a...) }

func phaseNames() string {
	var names []string
	for _, p := range phases {
		names = append(names, p.name)
	}
	return strings.Join(names, ", ")
}

func run(c config) ([]row, []goal) {
	var rows []row
	var goals []goal
	base := &baseline{Ceiling: map[int]row{}, Enrol: map[int]row{}}
	if c.wants("core") {
		rows, goals = coreRows(c, base)
	}
	for _, p := range phases {
		if c.wants(p.name) {
			say("phase %s", p.name)
			r, g := p.run(c, base)
			rows, goals = append(rows, r...), append(goals, g...)
		}
	}
	return rows, goals
}

// coreRows measures the limit, the ceiling, and the CA's enrolment,
// renewal, fleet and scale; with --store etcd also etcd against bbolt.
// Goals 1 to 3 of issue #23 are ratios of these, taken in this run.
func coreRows(c config, base *baseline) ([]row, []goal) {
	var rows []row
	limit := inProcessLimit(c)
	base.Limit = limit
	rows = append(
		rows,
		row{
			Name: "in-process limit (parse+verify CSR, sign leaf, " + strconv.Itoa(runtime.GOMAXPROCS(0)) + " cores)",
			Rate: limit,
		},
	)
	rows = append(rows, ceilingRows(c, limit, base)...)

	srv := startServer(c, "")
	defer srv.stop()
	commit, shapedCommit := srv.commitLatency()
	commit.Name = "one bbolt commit (1 key, fsync) on the data dir's filesystem"
	shapedCommit.Name = "one bbolt commit shaped like an issuance (a key in each of 8 buckets, fsync)"
	rows = append(rows, commit, shapedCommit)
	for _, n := range c.concurrency {
		r := srv.enrolLoad(c, n)
		r.Ratio = r.Rate / limit
		base.Enrol[n] = r
		rows = append(rows, r)
	}
	top := c.concurrency[len(c.concurrency)-1]
	enrolConn := srv.enrolPerConnLoad(c, top)
	renew, current := srv.renewLoad(c, top)
	renew.Value = fmt.Sprintf("%.0f%% of enrolment with a connection per call", 100*renew.Rate/enrolConn.Rate)
	anonConn, nodeConn := srv.connectionCost(c, top, nil), srv.connectionCost(c, top, current)
	rows = append(rows, enrolConn, renew, anonConn, nodeConn)
	rows = append(rows, srv.fleet(c))
	rows[len(rows)-1].RSSMiB = srv.peakRSS()
	srv.stop()
	var goals []goal
	ceil, enrol := base.Ceiling[top], base.Enrol[top]
	goals = append(goals,
		goal{ID: "1a", Name: fmt.Sprintf("enrolment rate / ceiling's, %d in flight", top), Measured: enrol.Rate /
			ceil.Rate, Target: 0.75, Detail: fmt.Sprintf("%.0f/s vs %.0f/s", enrol.Rate, ceil.Rate)},
		goal{ID: "1b", Name: fmt.Sprintf("server CPU per cert / ceiling's, %d in flight", top), Measured: enrol.CPUus /
			ceil.CPUus, Target: 1.3, AtMost: true, Detail: fmt.Sprintf("%.0f µs vs %.0f µs", enrol.CPUus,
			ceil.CPUus)},
		goal{ID: "2", Name: fmt.Sprintf("renewal / enrolment, %d in flight, a connection per call", top),
			Measured: renew.Rate / enrolConn.Rate, Target: 0.9, Detail: fmt.Sprintf("%.0f/s vs %.0f/s; server CPU "+
				"+%.0f µs per renewal, of which +%.0f µs authenticating the node's mTLS connection", renew.Rate,
				enrolConn.Rate, renew.CPUus-enrolConn.CPUus, nodeConn.CPUus-anonConn.CPUus)},
	)
	if c1, e1, ok := base.Ceiling[1], base.Enrol[1], base.Enrol[1].Rate > 0; ok {
		goals = append(goals, goal{ID: "1c", Name: "p50 gap to the ceiling at 1 in flight / one bbolt commit's p50",
			Measured: (e1.P50 - c1.P50) / commit.P50, Target: 1, AtMost: true,
			Detail: fmt.Sprintf("%.2f ms − %.2f ms vs %.2f ms; a commit shaped like an issuance's takes %.2f ms",
				e1.P50, c1.P50, commit.P50, shapedCommit.P50)})
	}
	if c.store == "etcd" {
		er := etcdRows(c, limit, base)
		rows = append(rows, er...)
		for _, r := range er {
			if r.Name == "etcd: "+enrol.Name {
				goals = append(goals,
					goal{ID: "3a", Name: fmt.Sprintf("etcd enrolment rate / bbolt's, %d in flight", top),
						Measured: r.Rate / enrol.Rate, Target: 0.6, Detail: fmt.Sprintf("%.0f/s vs %.0f/s", r.Rate,
							enrol.Rate)},
					goal{ID: "3b", Name: fmt.Sprintf("etcd p99 / bbolt's, %d in flight", top), Measured: r.P99 /
						enrol.P99, Target: 2, AtMost: true, Detail: fmt.Sprintf("%.1f ms vs %.1f ms", r.P99,
						enrol.P99)})
			}
		}
	}
	rows = append(rows, scale(c)...)
	return rows, goals
}

// cpuSeconds returns each process's user+system CPU time in seconds.
func cpuSeconds(pids []int) []float64 {
	out := make([]float64, len(pids))
	for i, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
		f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			s, _ := strconv.ParseFloat(f[12], 64)
			out[i] = (u + s) / 100 // USER_HZ
		}
	}
	return out
}

// writeBytes is what the process has caused to be written to storage
// (write_bytes of /proc/PID/io).
func writeBytes(pid int) int64 {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// perCert is CPU seconds spread over n certificates, in microseconds.
func perCert(seconds float64, n int) float64 {
	if n == 0 {
		return 0
	}
	return seconds / float64(n) * 1e6
}

// etcdRows runs the enrolment and renewal loads against one replica over
// a local 3-member etcd cluster with fsync on (every certificate
// committed by a quorum before the reply), and compares with bbolt.
func etcdRows(c config, limit float64, base *baseline) []row {
	say("starting a 3-member etcd cluster (fsync on; the first run builds etcd)")
	cluster, err := etcdtest.Run(etcdtest.Options{Members: 3, Fsync: true})
	if err != nil {
		fatal("%v", err)
	}
	defer cluster.Stop()
	d, _ := os.MkdirTemp("", "ipsecca-bench-etcd-")
	defer os.RemoveAll(d)
	kek := filepath.Join(d, "kek")
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(kek, []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		fatal("%v", err)
	}
	srv := startServer(
		c,
		filepath.Join(d, "ca"),
		"--store",
		"etcd",
		"--etcd-endpoints",
		strings.Join(cluster.Endpoints(), ","),
		"--kek-file",
		kek,
		"--etcd-max-txn-ops",
		strconv.Itoa(etcdtest.MaxTxnOps),
	)
	defer srv.stop()
	var rows []row
	ratio := func(r row, n int) row {
		r.Name = "etcd: " + r.Name
		r.Ratio = r.Rate / limit
		if b := base.Enrol[n].Rate; b > 0 {
			r.Value = fmt.Sprintf("%.0f%% of bbolt", 100*r.Rate/b)
		}
		return r
	}
	pids := []int{srv.cmd.Process.Pid}
	for _, m := range cluster.Members() {
		pids = append(pids, m.Pid())
	}
	for _, n := range c.concurrency {
		before := cpuSeconds(pids)
		start := time.Now()
		r := ratio(srv.enrolLoad(c, n), n)
		after, wall := cpuSeconds(pids), time.Since(start).Seconds()
		// Where the two cores went: the replica versus the three etcd members.
		etcdCPU := 0.0
		for i := 1; i < len(pids); i++ {
			etcdCPU += after[i] - before[i]
		}
		r.Comment = fmt.Sprintf("cores busy: ipsecca %.2f, etcd members %.2f", (after[0]-before[0])/wall, etcdCPU/wall)
		say("%s", r.Comment)
		rows = append(rows, r)
	}
	rr, _ := srv.renewLoad(c, c.concurrency[len(c.concurrency)-1])
	rr.Name = "etcd: " + rr.Name
	rows = append(rows, rr)
	rows[len(rows)-1].RSSMiB = srv.peakRSS()
	return rows
}

// inProcessLimit measures what the CA's signing path can do on all cores
// without storage or network: parse and verify a P-256 CSR, run the node
// policy, sign the leaf under the node profile with the CA's key.
func inProcessLimit(c config) float64 {
	dir, _ := os.MkdirTemp("", "ipsecca-bench-")
	defer os.RemoveAll(dir)
	st, err := bolt.Open(dir)
	if err != nil {
		fatal("%v", err)
	}
	defer st.Close()
	kt, err := ca.ParseKeyType(c.keyType)
	if err != nil {
		fatal("%v", err)
	}
	root, _, err := ca.Bootstrap(context.Background(), st, ca.RootConfig{KeyType: kt}, ca.ClockFunc(time.Now))
	if err != nil {
		fatal("%v", err)
	}
	csrs := makeCSRs(256, "node")
	var done atomic.Int64
	deadline := time.Now().Add(c.duration)
	var wg sync.WaitGroup
	for g := 0; g < runtime.GOMAXPROCS(0); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; time.Now().Before(deadline); i++ {
				p := csrs[i%len(csrs)]
				csr, err := ca.ParseCSR(p.csr)
				if err != nil {
					fatal("%v", err)
				}
				if err := ca.Evaluate(ca.NodePolicy, &ca.Request{CSR: csr, Identity: ca.Identity{Node: p.name,
					CN: p.name}}); err != nil {
					fatal("%v", err)
				}
				now := time.Now()
				tmpl := &x509.Certificate{
					SerialNumber: new(big.Int).SetUint64(uint64(now.UnixNano())),
					Subject:      pkix.Name{Organization: []string{"ipsecca"}, CommonName: p.name},
					NotBefore:    now,
					NotAfter:     now.AddDate(5, 0, 0),
					DNSNames:     []string{p.name},
					KeyUsage:     x509.KeyUsageDigitalSignature,
					ExtKeyUsage: []x509.ExtKeyUsage{
						x509.ExtKeyUsageServerAuth,
						x509.ExtKeyUsageClientAuth,
					},
					AuthorityKeyId: root.Cert.SubjectKeyId,
				}
				if _, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, csr.PublicKey,
					root.Signer); err != nil {
					fatal("%v", err)
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	rate := float64(done.Load()) / c.duration.Seconds()
	say("in-process limit: %.0f certs/s", rate)
	return rate
}

type pending struct {
	name  string
	key   crypto.Signer
	csr   []byte
	token string
}

// makeCSRs makes n CSRs for <prefix>-<i>, over a pool of 64 P-256 keys
// (the policy does not care which key; key generation is not measured).
func makeCSRs(n int, prefix string) []*pending {
	keys := make([]crypto.Signer, 64)
	for i := range keys {
		keys[i], _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	out := make([]*pending, n)
	var wg sync.WaitGroup
	for g := 0; g < runtime.GOMAXPROCS(0); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += runtime.GOMAXPROCS(0) {
				name := fmt.Sprintf("%s-%d", prefix, i)
				k := keys[i%len(keys)]
				der, err := x509.CreateCertificateRequest(
					rand.Reader,
					&x509.CertificateRequest{Subject: pkix.Name{CommonName: name}},
					k,
				)
				if err != nil {
					fatal("%v", err)
				}
				out[i] = &pending{
					name: name,
					key:  k,
					csr:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
				}
			}
		}()
	}
	wg.Wait()
	return out
}

// server is a running `ipsecca serve`.
type server struct {
	dir, addr string
	pprofAddr string
	cmd       *exec.Cmd
	caPEM     []byte
	admin     ipseccav1.AdminServiceClient
	adminConn *grpc.ClientConn
	seq       int
	tmp       string // removed by stop: made by startServer
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal("%v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startServer runs the binary on dir (a fresh one when empty) with the
// rate limits off, and returns once it answers health checks. The time
// it took is in the returned server's startup.
func startServer(c config, dir string, extra ...string) *server {
	tmp := ""
	if dir == "" {
		tmp, _ = os.MkdirTemp("", "ipsecca-bench-srv-")
		dir = filepath.Join(tmp, "ca")
	}
	s := &server{dir: dir, addr: freeAddr(), pprofAddr: freeAddr(), tmp: tmp}
	s.cmd = exec.Command(c.binary, "serve", "--data-dir", dir, "--listen", s.addr, "--ca-key-type", c.keyType,
		"--limit-global", "0", "--limit-per-node", "0", "--log-level", "error", "--pprof-listen", s.pprofAddr)
	s.cmd.Args = append(s.cmd.Args, extra...)
	s.cmd.Stderr = os.Stderr
	if err := s.cmd.Start(); err != nil {
		fatal("%v", err)
	}
	s.waitHealthy()
	return s
}

func (s *server) waitHealthy() time.Duration {
	start := time.Now()
	for time.Since(start) < 120*time.Second {
		caPEM, err := os.ReadFile(filepath.Join(s.dir, "ca.pem"))
		if err == nil {
			conn := s.dial(caPEM, nil)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			cancel()
			conn.Close()
			if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				s.caPEM = caPEM
				pair, err := tls.LoadX509KeyPair(
					filepath.Join(s.dir, "admin.pem"),
					filepath.Join(s.dir, "admin-key.pem"),
				)
				if err != nil {
					fatal("%v", err)
				}
				s.adminConn = s.dial(caPEM, &pair)
				s.admin = ipseccav1.NewAdminServiceClient(s.adminConn)
				return time.Since(start)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	fatal("server on %s not healthy", s.dir)
	return 0
}

func (s *server) dial(caPEM []byte, cert *tls.Certificate) *grpc.ClientConn {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		fatal("%v", err)
	}
	return conn
}

func (s *server) stop() {
	if s.adminConn != nil {
		s.adminConn.Close()
		s.adminConn = nil
	}
	if s.cmd != nil && s.cmd.ProcessState == nil {
		s.cmd.Process.Signal(os.Interrupt)
		s.cmd.Wait()
	}
	if s.tmp != "" {
		os.RemoveAll(s.tmp)
		s.tmp = ""
	}
}

// peakRSS is the server's VmHWM in MiB.
func (s *server) peakRSS() float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// tokens creates n nodes' tokens in bulk and returns their CSRs.
func (s *server) tokens(n int) []*pending {
	s.seq++
	ps := makeCSRs(n, fmt.Sprintf("n%d", s.seq))
	for i := 0; i < n; i += 10000 {
		req := &ipseccav1.CreateTokensRequest{}
		for _, p := range ps[i:min(i+10000, n)] {
			req.Requests = append(
				req.Requests,
				&ipseccav1.CreateTokenRequest{Node: p.name, Ttl: durationpb.New(time.Hour)},
			)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		resp, err := s.admin.CreateTokens(ctx, req)
		cancel()
		if err != nil {
			fatal("create tokens: %v", err)
		}
		for j, t := range resp.GetTokens() {
			ps[i+j].token = t.GetToken()
		}
	}
	return ps
}

// load runs conc workers for d, each calling call(i) with a fresh index,
// and returns the rate and latency percentiles in ms.
func load(conc int, d time.Duration, max int, call func(worker, i int) error) (rate, p50, p99 float64, n int) {
	var next atomic.Int64
	lat := make([][]time.Duration, conc)
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				i := int(next.Add(1)) - 1
				if i >= max {
					return
				}
				t0 := time.Now()
				if err := call(w, i); err != nil {
					fatal("call %d: %v", i, err)
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return 0, 0, 0, 0
	}
	slices.Sort(all)
	ms := func(q float64) float64 { return float64(all[int(q*float64(len(all)-1))]) / 1e6 }
	return float64(len(all)) / elapsed.Seconds(), ms(0.5), ms(0.99), len(all)
}

// conns opens k connections for anonymous calls.
func (s *server) conns(k int) []ipseccav1.NodeServiceClient {
	out := make([]ipseccav1.NodeServiceClient, k)
	for i := range out {
		out[i] = ipseccav1.NewNodeServiceClient(s.dial(s.caPEM, nil))
	}
	return out
}

func (s *server) enrolLoad(c config, conc int) row {
	// Enough tokens for the run at up to 15,000/s.
	need := int(c.duration.Seconds()*15000) + conc
	if conc == 1 {
		need = int(c.duration.Seconds()*3000) + 1
	}
	ps := s.tokens(need)
	clients := s.conns(conc/8 + 1)
	if c.cpuProfile != "" && conc == c.concurrency[len(c.concurrency)-1] {
		go s.profile(c.cpuProfile, c.duration-time.Second)
	}
	cpu0, io0 := cpuSeconds([]int{s.cmd.Process.Pid})[0], writeBytes(s.cmd.Process.Pid)
	rate, p50, p99, n := load(conc, c.duration, len(ps), func(w, i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := clients[w%len(clients)].Enroll(ctx, &ipseccav1.EnrollRequest{Token: ps[i].token, CsrPem: ps[i].csr})
		return err
	})
	us := perCert(cpuSeconds([]int{s.cmd.Process.Pid})[0]-cpu0, n)
	kb := float64(writeBytes(s.cmd.Process.Pid)-io0) / 1024 / float64(max(n, 1))
	say("enrol at %d in flight: %.0f/s (%d certs), p50 %.2f ms, p99 %.2f ms, server CPU %.0f µs/cert, %.1f KiB "+
		"written/cert", conc, rate, n, p50, p99, us, kb)
	return row{
		Name:  fmt.Sprintf("enrol, %d in flight, %d conns, TLS, fsync", conc, conc/8+1),
		Rate:  rate,
		P50:   p50,
		P99:   p99,
		CPUus: us,
		Value: fmt.Sprintf("%.1f KiB written/cert", kb),
	}
}

// enrolPerConnLoad enrols like enrolLoad but each call on a connection
// of its own, as a real node enrols: the like-for-like partner of
// renewLoad (goal 2).
func (s *server) enrolPerConnLoad(c config, conc int) row {
	ps := s.tokens(int(c.duration.Seconds()*5000) + conc)
	cpu0 := cpuSeconds([]int{s.cmd.Process.Pid})[0]
	rate, p50, p99, n := load(conc, c.duration, len(ps), func(w, i int) error {
		conn := s.dial(s.caPEM, nil)
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := ipseccav1.NewNodeServiceClient(conn).Enroll(ctx, &ipseccav1.EnrollRequest{Token: ps[i].token,
			CsrPem: ps[i].csr})
		return err
	})
	us := perCert(cpuSeconds([]int{s.cmd.Process.Pid})[0]-cpu0, n)
	say("enrol at %d in flight, a connection per call: %.0f/s, p50 %.2f ms, p99 %.2f ms, server CPU %.0f µs/cert",
		conc, rate, p50, p99, us)
	return row{Name: fmt.Sprintf("enrol, %d in flight, a new TLS connection per call", conc), Rate: rate, P50: p50,
		P99: p99, CPUus: us}
}

// renewLoad renews as sidecars do: each node presents its CURRENT
// certificate on a new mTLS connection, gets its successor and uses that
// next time, so every call is an issuance (not the lost-reply path a
// superseded certificate takes). Workers own disjoint nodes, so no two
// renew the same node at once.
func (s *server) renewLoad(c config, conc int) (row, []tls.Certificate) {
	const perWorker = 4
	ps := s.tokens(conc * perWorker)
	type node struct {
		cert tls.Certificate
		csr  []byte
	}
	nodes := make([]node, len(ps))
	anon := s.conns(4)
	for i, p := range ps {
		resp, err := anon[i%4].Enroll(context.Background(), &ipseccav1.EnrollRequest{Token: p.token, CsrPem: p.csr})
		if err != nil {
			fatal("enrol for renewal: %v", err)
		}
		b, _ := pem.Decode(resp.GetCertificate().GetCertificatePem())
		nodes[i] = node{tls.Certificate{Certificate: [][]byte{b.Bytes}, PrivateKey: p.key}, p.csr}
	}
	turn := make([]int, conc)
	cpu0 := cpuSeconds([]int{s.cmd.Process.Pid})[0]
	rate, p50, p99, n := load(conc, c.duration, 1<<30, func(w, _ int) error {
		nd := &nodes[w+conc*(turn[w]%perWorker)]
		turn[w]++
		conn := s.dial(s.caPEM, &nd.cert)
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := ipseccav1.NewNodeServiceClient(conn).Renew(ctx, &ipseccav1.RenewRequest{CsrPem: nd.csr})
		if err != nil {
			return err
		}
		b, _ := pem.Decode(resp.GetCertificate().GetCertificatePem())
		nd.cert.Certificate = [][]byte{b.Bytes}
		return nil
	})
	us := perCert(cpuSeconds([]int{s.cmd.Process.Pid})[0]-cpu0, n)
	say("renew at %d in flight: %.0f/s, p50 %.2f ms, p99 %.2f ms, server CPU %.0f µs/cert", conc, rate, p50, p99, us)
	current := make([]tls.Certificate, len(nodes))
	for i, nd := range nodes {
		current[i] = nd.cert
	}
	return row{
		Name:  fmt.Sprintf("renew with the current cert, %d in flight, a new mTLS connection per call", conc),
		Rate:  rate,
		P50:   p50,
		P99:   p99,
		CPUus: us,
	}, current
}

// connectionCost measures the server's CPU per new connection and refused
// call: anonymous TLS and an Enroll without a token when certs is empty,
// else mTLS with a node's current certificate, authenticated, and a Renew
// without a CSR. The difference is what authenticating a node costs,
// which a renewal pays and an enrolment does not.
func (s *server) connectionCost(c config, conc int, certs []tls.Certificate) row {
	cpu0 := cpuSeconds([]int{s.cmd.Process.Pid})[0]
	rate, p50, p99, n := load(conc, c.duration/2, 1<<30, func(w, i int) error {
		var cert *tls.Certificate
		if len(certs) > 0 {
			cert = &certs[i%len(certs)]
		}
		conn := s.dial(s.caPEM, cert)
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		if cert != nil {
			_, err = ipseccav1.NewNodeServiceClient(conn).Renew(ctx, &ipseccav1.RenewRequest{})
		} else {
			_, err = ipseccav1.NewNodeServiceClient(conn).Enroll(ctx, &ipseccav1.EnrollRequest{})
		}
		if status.Code(err) != codes.InvalidArgument {
			return fmt.Errorf("want InvalidArgument, got %v", err)
		}
		return nil
	})
	us := perCert(cpuSeconds([]int{s.cmd.Process.Pid})[0]-cpu0, n)
	name := "anonymous TLS connection + refused Enroll"
	if len(certs) > 0 {
		name = "node mTLS connection, authenticated + refused Renew"
	}
	say("%s at %d in flight: %.0f/s, server CPU %.0f µs/call", name, conc, rate, us)
	return row{Name: fmt.Sprintf("%s, %d in flight", name, conc), Rate: rate, P50: p50, P99: p99, CPUus: us}
}

// commitLatency times bbolt commits (fsync on) in a file next to the server's data directory: single-key
// commits, the unit of goal 1's 1-in-flight gap, and commits shaped like one issuance's (a key in each of 8
// buckets of a few thousand keys, so each commit rewrites a leaf and branch path per bucket), which show how
// much of the gap is the commit itself.
func (s *server) commitLatency() (single, shaped row) {
	f := filepath.Join(filepath.Dir(s.dir), "commit-probe.db")
	defer os.Remove(f)
	db, err := bbolt.Open(f, 0o600, nil)
	if err != nil {
		fatal("%v", err)
	}
	defer db.Close()
	timeCommits := func(n int, fn func(tx *bbolt.Tx, i int) error) row {
		var lat []time.Duration
		for i := 0; i < n; i++ {
			t0 := time.Now()
			if err := db.Update(func(tx *bbolt.Tx) error { return fn(tx, i) }); err != nil {
				fatal("%v", err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		return row{P50: float64(lat[len(lat)/2]) / 1e6, P99: float64(lat[len(lat)*99/100]) / 1e6}
	}
	single = timeCommits(300, func(tx *bbolt.Tx, i int) error {
		b, err := tx.CreateBucketIfNotExists([]byte("probe"))
		if err != nil {
			return err
		}
		return b.Put([]byte(strconv.Itoa(i%50)), make([]byte, 600))
	})
	const buckets, prefill = 8, 4000
	value := make([]byte, 300)
	if err := db.Update(func(tx *bbolt.Tx) error {
		for b := 0; b < buckets; b++ {
			bk, err := tx.CreateBucketIfNotExists([]byte("shaped" + strconv.Itoa(b)))
			if err != nil {
				return err
			}
			for k := 0; k < prefill; k++ {
				if err := bk.Put(fmt.Appendf(nil, "%016x", uint64(k)*0x9e3779b97f4a7c15), value); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		fatal("%v", err)
	}
	written := writeBytes(os.Getpid())
	shaped = timeCommits(300, func(tx *bbolt.Tx, i int) error {
		for b := 0; b < buckets; b++ {
			k := fmt.Appendf(nil, "%016x", uint64(prefill+i)*0x9e3779b97f4a7c15)
			if err := tx.Bucket([]byte("shaped"+strconv.Itoa(b))).Put(k, value); err != nil {
				return err
			}
		}
		return nil
	})
	shaped.Value = fmt.Sprintf("%.1f KiB written/commit", float64(writeBytes(os.Getpid())-written)/300/1024)
	say("one bbolt commit: p50 %.2f ms, p99 %.2f ms; shaped like an issuance (a key in each of %d buckets): "+
		"p50 %.2f ms, p99 %.2f ms, %s", single.P50, single.P99, buckets, shaped.P50, shaped.P99, shaped.Value)
	return single, shaped
}

// fleet enrols n nodes at once, each with its own key, token and TLS
// connection, retrying with exponential backoff on Unavailable or
// ResourceExhausted (at most 8 attempts).
func (s *server) fleet(c config) row {
	ps := s.tokens(c.fleet)
	for i := range ps {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(
			rand.Reader,
			&x509.CertificateRequest{Subject: pkix.Name{CommonName: ps[i].name}},
			k,
		)
		ps[i].csr = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	var retries, failed atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := s.dial(s.caPEM, nil)
			defer conn.Close()
			backoff := 100 * time.Millisecond
			for attempt := 0; attempt < 8; attempt++ {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				_, err := ipseccav1.NewNodeServiceClient(conn).
					Enroll(ctx, &ipseccav1.EnrollRequest{Token: p.token, CsrPem: p.csr})
				cancel()
				if err == nil {
					return
				}
				code := status.Code(err)
				if code != codes.Unavailable && code != codes.ResourceExhausted &&
					!errors.Is(err, context.DeadlineExceeded) {
					failed.Add(1)
					return
				}
				retries.Add(1)
				time.Sleep(backoff)
				backoff *= 2
			}
			failed.Add(1)
		}()
	}
	wg.Wait()
	took := time.Since(start)
	say("fleet of %d: %s, %d retries, %d failed", c.fleet, took.Round(time.Millisecond), retries.Load(), failed.Load())
	return row{
		Name: fmt.Sprintf("fleet: %d nodes at once (own key, token, TLS conn)", c.fleet),
		Rate: float64(c.fleet) / took.Seconds(),
		Value: fmt.Sprintf(
			"%s total, %d retries, %d failed",
			took.Round(time.Millisecond),
			retries.Load(),
			failed.Load(),
		),
	}
}

// scale fills stores of each size directly through the store package
// (the product's own code), then measures the real server on them:
// start-up until SERVING, the next 100 rotations, and RSS.
func scale(c config) []row {
	var rows []row
	var baseRSS float64
	for _, n := range c.storeSizes {
		dir, _ := os.MkdirTemp("", "ipsecca-bench-scale-")
		data := filepath.Join(dir, "ca")
		if out, err := exec.Command(c.binary, "init", "--data-dir", data, "--ca-key-type", c.keyType, "--log-level",
			"error").CombinedOutput(); err != nil {
			fatal("init: %v %s", err, out)
		}
		t0 := time.Now()
		fill(data, n)
		say("filled a store with %d certificates in %s", n, time.Since(t0).Round(time.Millisecond))
		start := time.Now()
		s := startServer(c, data)
		startup := time.Since(start)
		var lat []time.Duration
		for i := 0; i < 50; i++ {
			t := time.Now()
			resp, err := s.admin.ListSchedule(context.Background(), &ipseccav1.ListScheduleRequest{Limit: 100})
			if err != nil || len(resp.GetEntries()) != 100 {
				fatal("schedule: %v", err)
			}
			lat = append(lat, time.Since(t))
		}
		slices.Sort(lat)
		rss := s.peakRSS()
		if baseRSS == 0 {
			baseRSS = rss
		}
		s.stop()
		os.RemoveAll(dir)
		rows = append(
			rows,
			row{
				Name:    fmt.Sprintf("store of %d certs: start-up to SERVING", n),
				Value:   startup.Round(time.Millisecond).String(),
				RSSMiB:  rss,
				Comment: fmt.Sprintf("RSS %.1fx the smallest store's", rss/baseRSS),
			},
		)
		rows = append(
			rows,
			row{
				Name: fmt.Sprintf("store of %d certs: next 100 rotations (ListSchedule over gRPC)", n),
				P50:  float64(lat[len(lat)/2]) / 1e6,
				P99:  float64(lat[len(lat)*99/100]) / 1e6,
			},
		)
		say(
			"store %d: start-up %s, schedule p50 %s, RSS %.0f MiB",
			n,
			startup.Round(time.Millisecond),
			lat[len(lat)/2],
			rss,
		)
	}
	return rows
}

// fill issues n synthetic node certificate records into the store in
// dir, concurrently so group commit batches them.
func fill(dir string, n int) {
	st, err := bolt.Open(dir)
	if err != nil {
		fatal("%v", err)
	}
	defer st.Close()
	t0 := time.Now().UTC().Truncate(time.Second)
	der := make([]byte, 500) // about a P-256 certificate's size
	var next atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 512; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				nb := t0.Add(-time.Duration(i%(365*24)) * time.Hour)
				name := fmt.Sprintf("fill-%d", i)
				c := &store.Cert{
					Serial:      fmt.Sprintf("f%031x", i),
					Kind:        store.KindNode,
					Node:        name,
					CommonName:  name,
					Subject:     "CN=" + name + ",O=ipsecca",
					State:       store.StateActive,
					NotBefore:   nb,
					NotAfter:    nb.AddDate(5, 0, 0),
					RotateAfter: ca.RotateAfter(nb, nb.AddDate(5, 0, 0)),
					IssuedAt:    nb,
					IssuedVia:   "bench",
					DER:         der,
				}
				if err := st.Issue(context.Background(), store.Issuance{Cert: c, Event: store.Event{Time: nb,
					Type: store.EventEnrolled, Node: name, Serial: c.Serial}}); err != nil {
					fatal("fill: %v", err)
				}
			}
		}()
	}
	wg.Wait()
}

// profile saves the server's CPU profile over d.
func (s *server) profile(file string, d time.Duration) {
	resp, err := http.Get(
		fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", s.pprofAddr, max(int(d.Seconds()), 1)),
	)
	if err != nil {
		say("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	os.WriteFile(file, b, 0o644)
	say("CPU profile written to %s", file)
}
