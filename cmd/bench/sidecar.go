package main

// The sidecar's footprint at rest (issue #23 goal 5): the real small
// ipsecca-sidecar binary, enrolled and delivered into a real NSS database,
// then left alone while its CPU ticks (/proc/PID/stat) and resident memory
// (/proc/PID/status) are read over a window, in the gRPC mode against the
// real CA and in the Kubernetes mode against a real kube-apiserver with the
// real `ipsecca serve --kube` signing. `ipsecca sidecar` (the one big
// binary) runs beside it over the same window, for comparison.

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ipsecca/ipsecca/internal/testbin"
	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/kube/deploy"
	"github.com/ipsecca/ipsecca/kube/kubetest"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// Targets of goal 5. CPU: one millicore, the smallest CPU request
// Kubernetes can express (at most 1 tick of 10 ms in a 10-second window,
// 6 in a minute). Memory: the 20 MiB, held by the largest VmRSS
// read in the window (at rest; VmHWM, the start-up peak, is in the rows).
const (
	sidecarIdleMillicores = 1
	sidecarRSSMiB         = 20
)

var (
	sidecarBinary string
	sidecarWindow time.Duration
)

func init() {
	flag.StringVar(&sidecarBinary, "sidecar-binary", "",
		"the small sidecar binary (default ipsecca-sidecar next to --binary)")
	flag.DurationVar(&sidecarWindow, "sidecar-window", 0,
		"how long the idle sidecars are watched (default 60s, 10s with --quick)")
	register("sidecar", sidecarFootprint)
}

func sidecarFootprint(c config, _ *baseline) ([]row, []goal) {
	small := sidecarBinary
	if small == "" {
		small = filepath.Join(filepath.Dir(c.binary), "ipsecca-sidecar")
	}
	if _, err := os.Stat(small); err != nil {
		sfatal("%v (run make build)", err)
	}
	window := sidecarWindow
	if window <= 0 {
		window = 60 * time.Second
		if c.quick {
			window = 10 * time.Second
		}
	}
	tmp, err := os.MkdirTemp("", "ipsecca-bench-sidecar-")
	if err != nil {
		sfatal("%v", err)
	}
	defer os.RemoveAll(tmp)

	var rows []row
	var goals []goal
	for _, mode := range []struct {
		name, ids string
		run       func(c config, dir string, bins []string) ([]*sidecarProc, []func())
	}{{"gRPC", "ab", grpcSidecars}, {"Kubernetes", "cd", kubeSidecars}} {
		procs, stops := mode.run(c, filepath.Join(tmp, mode.name), []string{small, c.binary})
		fp := watchIdle(procs, window)
		for _, p := range procs {
			p.stop()
		}
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		cleanups = nil
		for i, p := range procs {
			f := fp[i]
			rows = append(rows, row{
				Name: fmt.Sprintf("sidecar %s idle %s: %s", mode.name, window, p.label),
				Value: fmt.Sprintf("%d CPU ticks (%.2f millicores); VmRSS %.1f MiB = RssAnon %.1f + RssFile %.1f; "+
					"VmHWM %.1f MiB", f.ticks, f.cores*1000, f.rss, f.anon, f.file, f.hwm),
				RSSMiB: f.rss,
			})
		}
		small, big := fp[0], fp[1]
		detail := fmt.Sprintf("%s; ipsecca sidecar beside it", procs[0].label)
		goals = append(goals,
			goal{ID: "5" + mode.ids[:1], Name: "sidecar " + mode.name + " idle CPU over " + window.String(),
				Measured: small.cores * 1000, Target: sidecarIdleMillicores, AtMost: true, Unit: "millicores",
				Detail: fmt.Sprintf("%d ticks of 10 ms; %s: %d", small.ticks, detail, big.ticks)},
			goal{ID: "5" + mode.ids[1:], Name: "sidecar " + mode.name + " RSS (largest in the window)",
				Measured: small.rss, Target: sidecarRSSMiB, AtMost: true, Unit: "MiB",
				Detail: fmt.Sprintf("RssAnon %.1f + RssFile %.1f, start-up peak %.1f; %s: %.1f MiB (peak %.1f)",
					small.anon, small.file, small.hwm, detail, big.rss, big.hwm)},
		)
	}
	return rows, goals
}

// cleanups stop what the phase started (the CA, the API server) when it
// fails, so that nothing is left running after the bench exits.
var cleanups []func()

func sfatal(format string, a ...any) {
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	fatal("sidecar: "+format, a...)
}

// sidecarProc is a running sidecar and where it logs.
type sidecarProc struct {
	label   string
	cmd     *exec.Cmd
	log     string
	nss, cn string
}

func startSidecar(label, bin, dir, cn string, args ...string) *sidecarProc {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		sfatal("%v", err)
	}
	p := &sidecarProc{label: label, log: filepath.Join(dir, "log"), nss: filepath.Join(dir, "nss"), cn: cn}
	logf, err := os.Create(p.log)
	if err != nil {
		sfatal("%v", err)
	}
	defer logf.Close()
	if filepath.Base(bin) != "ipsecca-sidecar" {
		args = append([]string{"sidecar"}, args...)
	}
	p.cmd = exec.Command(bin, append(args, "--nss-dir", p.nss, "--state-dir", filepath.Join(dir, "state"),
		"--log-level", "warn")...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // not left behind by fatal
	if err := p.cmd.Start(); err != nil {
		sfatal("%v", err)
	}
	return p
}

// ready waits until the node's NSS database holds its certificate and key
// and the CA, as libreswan would read them.
func (p *sidecarProc) ready(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.cmd.ProcessState != nil {
			break
		}
		out, _ := exec.Command("certutil", "-L", "-d", "sql:"+p.nss).Output()
		if strings.Contains(string(out), "ovs_certkey_"+p.cn) && strings.Contains(string(out), "ovs_cert_cacert") {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	log, _ := os.ReadFile(p.log)
	sfatal("%s did not deliver into %s within %s; its log:\n%s", p.label, p.nss, timeout, log)
}

func (p *sidecarProc) stop() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(os.Interrupt)
		p.cmd.Wait()
	}
}

// grpcSidecars runs one node's small sidecar and another's `ipsecca
// sidecar` against a real CA, each enrolled with its own bootstrap token.
// The CA is stopped by the returned function.
func grpcSidecars(c config, dir string, bins []string) ([]*sidecarProc, []func()) {
	s := startServer(c, "")
	cleanups = append(cleanups, s.stop)
	caFile := filepath.Join(s.dir, "ca.pem")
	var procs []*sidecarProc
	for i, bin := range bins {
		node := fmt.Sprintf("bench-sidecar-%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		tok, err := s.admin.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: node, Ttl: durationpb.New(time.Hour)})
		cancel()
		if err != nil {
			sfatal("create token: %v", err)
		}
		nodeDir := filepath.Join(dir, node)
		tokenFile := filepath.Join(nodeDir, "token")
		os.MkdirAll(nodeDir, 0o755)
		if err := os.WriteFile(tokenFile, []byte(tok.GetToken()), 0o600); err != nil {
			sfatal("%v", err)
		}
		procs = append(procs, startSidecar(sidecarLabel(bin, "gRPC"), bin, nodeDir, node,
			"--server", s.addr, "--ca-file", caFile, "--node", node, "--token-file", tokenFile))
	}
	for _, p := range procs {
		p.ready(60 * time.Second)
	}
	return procs, []func(){s.stop}
}

// kubeSidecars runs one node's small sidecar and another's `ipsecca
// sidecar`, both --kube as the nodes' own identities, against a real
// kube-apiserver where the real `ipsecca serve --kube` signs under the RBAC
// `ipsecca manifests` prints. The returned functions stop the API server
// and the CA.
func kubeSidecars(c config, dir string, bins []string) ([]*sidecarProc, []func()) {
	ctx := context.Background()
	var users []kubetest.User
	for i := range bins {
		users = append(users, kubetest.User{Name: fmt.Sprintf("system:ovn-node:bench-kube-%d", i),
			Groups: []string{"system:ovn-nodes"}})
	}
	if _, err := testbin.KubeAPIServer(); err != nil {
		sfatal("kube-apiserver: %v", err)
	}
	srv, err := kubetest.Run(kubetest.Options{Users: users})
	if err != nil {
		sfatal("%v", err)
	}
	stops := []func(){srv.Stop}
	cleanups = append(cleanups, srv.Stop)
	admin, err := kubernetes.NewForConfig(srv.Admin)
	if err != nil {
		sfatal("%v", err)
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: "openshift-ovn-kubernetes"}}, metav1.CreateOptions{}); err != nil {
		sfatal("%v", err)
	}
	objs, err := deploy.Manifests(deploy.ManifestOptions{})
	if err != nil {
		sfatal("%v", err)
	}
	if err := kubetest.CreateObjects(ctx, srv, objs); err != nil {
		sfatal("%v", err)
	}
	signerCfg, err := srv.ServiceAccount(ctx, kube.DefaultNamespace, deploy.NameCA)
	if err != nil {
		sfatal("%v", err)
	}
	kc, err := srv.WriteKubeconfig(signerCfg)
	if err != nil {
		sfatal("%v", err)
	}
	s := startServer(c, "", "--kube", "--kubeconfig", kc)
	stops = append(stops, s.stop)
	cleanups = append(cleanups, s.stop)
	var procs []*sidecarProc
	for i, bin := range bins {
		// The chassis-id OVN-Kubernetes publishes is the certificate's name.
		node, chassis := fmt.Sprintf("bench-kube-%d", i), fmt.Sprintf("6a3c8c41-4f5e-4a8e-9e0c-3b7d2f1e9a1%d", i)
		if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node,
			Annotations: map[string]string{kube.AnnotationChassisID: chassis}}}, metav1.CreateOptions{}); err != nil {
			sfatal("%v", err)
		}
		nkc, err := srv.WriteKubeconfig(srv.ConfigFor(users[i].Name))
		if err != nil {
			sfatal("%v", err)
		}
		procs = append(procs, startSidecar(sidecarLabel(bin, "Kubernetes"), bin, filepath.Join(dir, node), chassis,
			"--kube", "--kubeconfig", nkc, "--node", node))
	}
	for _, p := range procs {
		p.ready(90 * time.Second)
	}
	return procs, stops
}

func sidecarLabel(bin, mode string) string {
	if filepath.Base(bin) == "ipsecca-sidecar" {
		return "ipsecca-sidecar (" + mode + ")"
	}
	return "ipsecca sidecar (" + mode + ", the one big binary)"
}

// footprint is a process's CPU and memory over the idle window.
type footprint struct {
	ticks           int64   // user+system CPU ticks (10 ms) in the window
	cores           float64 // ticks over the window's length
	rss, anon, file float64 // MiB, at the window's largest VmRSS
	hwm             float64 // VmHWM (MiB): the peak since the process started
}

// watchIdle lets the sidecars settle, then reads their CPU ticks and
// memory every second over window.
func watchIdle(procs []*sidecarProc, window time.Duration) []footprint {
	time.Sleep(2 * time.Second) // the pass's last writes and logs
	out := make([]footprint, len(procs))
	start := make([]int64, len(procs))
	for i, p := range procs {
		start[i] = procTicks(p.cmd.Process.Pid)
	}
	say("sidecar: watching %d idle sidecars for %s", len(procs), window)
	began := time.Now()
	for {
		for i, p := range procs {
			if p.cmd.ProcessState != nil {
				log, _ := os.ReadFile(p.log)
				sfatal("%s exited while idle; its log:\n%s", p.label, log)
			}
			m := procMemory(p.cmd.Process.Pid)
			if m["VmRSS"] > out[i].rss {
				out[i].rss, out[i].anon, out[i].file = m["VmRSS"], m["RssAnon"], m["RssFile"]
			}
		}
		if time.Since(began) >= window {
			break
		}
		time.Sleep(min(time.Second, window-time.Since(began)))
	}
	elapsed := time.Since(began).Seconds()
	for i, p := range procs {
		out[i].ticks = procTicks(p.cmd.Process.Pid) - start[i]
		out[i].cores = float64(out[i].ticks) / 100 / elapsed
		out[i].hwm = procMemory(p.cmd.Process.Pid)["VmHWM"]
	}
	return out
}

// procTicks is the process's user+system CPU time in clock ticks.
func procTicks(pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		sfatal("%v", err)
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// procMemory reads /proc/PID/status's memory lines in MiB.
func procMemory(pid int) map[string]float64 {
	fh, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		sfatal("%v", err)
	}
	defer fh.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if f := strings.Fields(v); ok && len(f) == 2 && f[1] == "kB" {
			n, _ := strconv.ParseFloat(f[0], 64)
			out[k] = n / 1024
		}
	}
	return out
}
