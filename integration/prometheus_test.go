package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// shippedRules is the rule file `manifests --monitoring` puts in its
// PrometheusRule, loaded here unmodified.
const shippedRules = "../kube/deploy/monitoring/ipsecca-rules.yaml"

// promServer is a running Prometheus with its own storage.
type promServer struct {
	t    *testing.T
	url  string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

// startPrometheus runs /usr/bin/prometheus scraping the CA's metrics as
// job ipsecca and the sidecar's as job ipsecca-sidecar every second,
// evaluating the shipped rules every second, and waits until it is ready.
func startPrometheus(t *testing.T, caMetrics, sidecarMetrics string) *promServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus is missing (make deps installs the prometheus package): %v", err)
	}
	rules, err := filepath.Abs(shippedRules)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: ipsecca
    static_configs: [{targets: [%q]}]
  - job_name: ipsecca-sidecar
    static_configs: [{targets: [%q]}]
`, rules, caMetrics, sidecarMetrics)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &promServer{t: t, url: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)), log: &syncBuffer{},
		done: make(chan struct{})}
	p.cmd = exec.Command(bin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+strings.TrimPrefix(p.url, "http://"))
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", p.log.String())
		}
	})
	p.waitFor("ready", 30*time.Second, func() (bool, string) {
		resp, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return p
}

// waitFor polls cond every 500 ms until it holds, failing the test after
// timeout with cond's last word.
func (p *promServer) waitFor(what string, timeout time.Duration, cond func() (bool, string)) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		select {
		case <-p.done:
			p.t.Fatalf("prometheus exited:\n%s", p.log.String())
		default:
		}
		ok, why := cond()
		if ok {
			return
		}
		last = why
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: not within %s: %s", what, timeout, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// api GETs a Prometheus HTTP API path and decodes its data into v.
func (p *promServer) api(path string, v any) error {
	resp, err := http.Get(p.url + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("%s: %v: %s", path, err, body)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, env.Status, env.Error)
	}
	return json.Unmarshal(env.Data, v)
}

// sample is one element of an instant vector.
type sample struct {
	Metric map[string]string
	Value  float64
}

// query evaluates expr now.
func (p *promServer) query(expr string) ([]sample, error) {
	var data struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := p.api("/api/v1/query?query="+url.QueryEscape(expr), &data); err != nil {
		return nil, err
	}
	var out []sample
	for _, r := range data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: value %v", expr, r.Value)
		}
		out = append(out, sample{r.Metric, v})
	}
	return out, nil
}

// alert is an entry of /api/v1/alerts.
type alert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
}

func (p *promServer) alerts() ([]alert, error) {
	var data struct {
		Alerts []alert `json:"alerts"`
	}
	err := p.api("/api/v1/alerts", &data)
	return data.Alerts, err
}

// TestPrometheus: a real Prometheus scrapes a real CA and a real sidecar
// enrolled against it, with the shipped rule file loaded unmodified. Both
// targets are up, the series an on-call engineer reads are there with
// values that agree with the node's certificate, a healthy install has no
// alert even pending, and the denial-burst alert fires, after being
// pending, when a looping client with a bad token is denied again and
// again through the CLI.
func TestPrometheus(t *testing.T) {
	caMetrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	sidecarMetrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	srv := startServer(t, "", "--metrics-listen", caMetrics)
	n := newNode(t, srv, "node-a")
	var sidecarLog syncBuffer
	sidecar := exec.Command(binary, n.args("--metrics-listen", sidecarMetrics)...)
	sidecar.Stdout, sidecar.Stderr = &sidecarLog, &sidecarLog
	if err := sidecar.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sidecar.Process.Signal(syscall.SIGTERM)
		sidecar.Wait()
		if t.Failed() {
			t.Logf("sidecar log:\n%s", sidecarLog.String())
		}
	})
	start := time.Now()
	p := startPrometheus(t, caMetrics, sidecarMetrics)

	// Both targets up.
	p.waitFor("both targets up", 30*time.Second, func() (bool, string) {
		up, err := p.query(`up`)
		if err != nil {
			return false, err.Error()
		}
		jobs := map[string]float64{}
		for _, s := range up {
			jobs[s.Metric["job"]] = s.Value
		}
		return jobs["ipsecca"] == 1 && jobs["ipsecca-sidecar"] == 1, fmt.Sprint(up)
	})

	// The series the rules and the dashboard read, as the sidecar's first
	// pass and the CA's scrape leave them.
	now := float64(time.Now().Unix())
	const day = 86400.0
	for _, tc := range []struct {
		expr     string
		min, max float64
	}{
		{`ipsecca_build_info{job="ipsecca"}`, 1, 1},
		{`ipsecca_build_info{job="ipsecca-sidecar"}`, 1, 1},
		{`ipsecca_store_up{job="ipsecca"}`, 1, 1},
		// a 5-year certificate, due for rotation at 4.5 years
		{`ipsecca_certificate_expiration_timestamp_seconds{node="node-a"}`, now + 5*365*day - 2*day,
			now + 5*365*day + 3*day},
		{`ipsecca_certificate_rotation_due_timestamp_seconds{node="node-a"}`, now + 4*365*day,
			now + 5*365*day},
		{`ipsecca_sidecar_certificate_expiration_timestamp_seconds{node="node-a"}`, now + 5*365*day - 2*day,
			now + 5*365*day + 3*day},
		// a 10-year root
		{`ipsecca_ca_expiry_timestamp_seconds{ca="root"}`, now + 9*365*day, now + 11*365*day},
		{`ipsecca_sidecar_last_success_timestamp_seconds`, float64(start.Unix()) - 1, now + 60},
		{`ipsecca_sidecar_ca_reachable`, 1, 1},
		{`ipsecca_sidecar_nss_drift`, 0, 0},
		{`sum(grpc_server_handled_total{job="ipsecca",grpc_method="Enroll",grpc_code="OK"})`, 1, 1},
		{`ipsecca_node_last_report_timestamp_seconds{node="node-a"}`, float64(start.Unix()) - 1, now + 60},
	} {
		p.waitFor(tc.expr, 20*time.Second, func() (bool, string) {
			got, err := p.query(tc.expr)
			if err != nil {
				return false, err.Error()
			}
			if len(got) != 1 {
				return false, fmt.Sprintf("%d series: %v", len(got), got)
			}
			return got[0].Value >= tc.min && got[0].Value <= tc.max,
				fmt.Sprintf("%v, want %.0f..%.0f", got[0], tc.min, tc.max)
		})
	}

	// A healthy install: the rules loaded, nothing pending or firing.
	var groups struct {
		Groups []struct {
			Rules []struct {
				Name   string `json:"name"`
				Health string `json:"health"`
				Error  string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := p.api("/api/v1/rules?type=alert", &groups); err != nil {
		t.Fatal(err)
	}
	rules := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			rules++
			if r.Health == "err" {
				t.Errorf("rule %s: %s", r.Name, r.Error)
			}
		}
	}
	if rules < 17 {
		t.Fatalf("prometheus loaded %d alerting rules from %s", rules, shippedRules)
	}
	// (Until the first scrape, absent(up{job="ipsecca"}) holds: the next
	// evaluations clear that.)
	p.waitFor("no alert on a healthy install", 15*time.Second, func() (bool, string) {
		as, err := p.alerts()
		return err == nil && len(as) == 0, fmt.Sprintf("%+v, %v", as, err)
	})

	// A node looping with a bad token: each enrolment is denied
	// (token-invalid), within the CA's failure budget per address (a burst
	// of 30, then 1/s). The CLI exits non-zero each time.
	dir := t.TempDir()
	_, csr := opensslCSR(t, dir, "a", "/CN=node-a")
	bad := strings.Repeat("0", 16) + "." + strings.Repeat("f", 48)
	denied := func() float64 {
		got, err := p.query(`sum(ipsecca_denials_total{job="ipsecca",reason="token-invalid"})`)
		if err != nil || len(got) == 0 {
			return 0
		}
		return got[0].Value
	}
	sawPending := false
	deadline := time.Now().Add(150 * time.Second)
	for {
		if denied() < 45 {
			if r := run(t, nil, srv.enrollArgs("--token", bad, csr, filepath.Join(dir, "a.pem"))...); r.Code == 0 {
				t.Fatalf("enrolment with a bad token succeeded: %+v", r)
			}
		}
		as, err := p.alerts()
		if err != nil {
			t.Fatal(err)
		}
		var burst *alert
		for i, a := range as {
			if a.Labels["alertname"] != "IpseccaDenialBurst" {
				t.Fatalf("another alert: %+v", a)
			}
			burst = &as[i]
		}
		if burst != nil && burst.State == "pending" {
			sawPending = true
		}
		if burst != nil && burst.State == "firing" {
			if !sawPending || burst.Labels["reason"] != "token-invalid" || burst.Labels["severity"] != "warning" ||
				!strings.Contains(burst.Annotations["summary"], "(token-invalid)") ||
				!strings.Contains(burst.Annotations["description"], "ipsecca token create --node") {
				t.Fatalf("firing alert %+v (seen pending first: %v)", burst, sawPending)
			}
			t.Logf("IpseccaDenialBurst fired %s after the start (%.0f denials): %s",
				time.Since(start).Round(time.Second), denied(), burst.Annotations["summary"])
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("IpseccaDenialBurst did not fire within 150 s (%.0f denials; alerts %+v)", denied(), as)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestPrometheusManifests: `ipsecca manifests --monitoring` prints the
// monitoring objects, its PrometheusRule holding the very rules the
// Prometheus above loaded, and the sidecar listening for scrapes on the
// PodMonitor's port; without the flag none of them; --encapsulation, which
// set a variable nothing read, is refused as a usage error.
func TestPrometheusManifests(t *testing.T) {
	kinds := func(y string) []string {
		var out []string
		for _, line := range strings.Split(y, "\n") {
			if k, ok := strings.CutPrefix(line, "kind: "); ok {
				out = append(out, k)
			}
		}
		return out
	}
	with := mustRun(t, nil, "manifests", "--monitoring")
	got := kinds(with)
	if want := []string{"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}; len(got) < 4 ||
		strings.Join(got[len(got)-4:], ",") != strings.Join(want, ",") {
		t.Fatalf("manifests --monitoring prints %v", got)
	}
	shipped, err := os.ReadFile(shippedRules)
	if err != nil {
		t.Fatal(err)
	}
	for _, alert := range regexp.MustCompile(`alert: (\w+)`).FindAllStringSubmatch(string(shipped), -1) {
		if !strings.Contains(with, "alert: "+alert[1]+"\n") {
			t.Errorf("the PrometheusRule lacks %s", alert[1])
		}
	}
	for _, want := range []string{"- --metrics-listen\n        - 0.0.0.0:9449\n", "name: metrics",
		"grafana_dashboard: \"1\"", "replacement: ipsecca-sidecar", "replacement: ipsecca\n"} {
		if !strings.Contains(with, want) {
			t.Errorf("manifests --monitoring lacks %q", want)
		}
	}
	without := mustRun(t, nil, "manifests")
	for _, k := range kinds(without) {
		if k == "ServiceMonitor" || k == "PodMonitor" || k == "PrometheusRule" || k == "ConfigMap" {
			t.Errorf("manifests without --monitoring prints a %s", k)
		}
	}
	if strings.Contains(without, "IPSECCA_ENCAPSULATION") || strings.Contains(without, "IPSECCA_NSS_DIR") ||
		strings.Contains(without, "9449") {
		t.Error("manifests without --monitoring: a dead variable or the sidecar's metrics port")
	}
	if r := run(t, nil, "manifests", "--encapsulation", "Always"); r.Code != 2 ||
		!strings.Contains(r.Stderr, "--encapsulation") {
		t.Errorf("manifests --encapsulation Always: %+v", r)
	}
}
