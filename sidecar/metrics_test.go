package sidecar

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ipsecca/ipsecca/daemon"
	"github.com/ipsecca/ipsecca/internal/buildinfo"
	"github.com/ipsecca/ipsecca/internal/testclock"
	"github.com/ipsecca/ipsecca/store/bolt"
)

// scrape reads url's metrics as Prometheus would: name{labels} -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range families {
		if !strings.HasPrefix(name, "ipsecca_") {
			continue
		}
		for _, m := range f.GetMetric() {
			out[name+labelString(m)] = m.GetGauge().GetValue()
		}
	}
	return out
}

func labelString(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		if l.GetName() == "goversion" || l.GetName() == "revision" || l.GetName() == "version" {
			continue // the build's, checked apart
		}
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	if len(parts) == 0 {
		return ""
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// The sidecar's metrics over HTTP after real passes against a CA served
// in-process (real TLS, bbolt and certutil; the clock is shared): the
// last successful pass, its own certificate's expiry, the CRL in NSS,
// NSS drift repaired, and the CA's reachability when it goes away.
func TestSidecarMetrics(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	caDir := filepath.Join(t.TempDir(), "ca")
	if err := os.Mkdir(caDir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(caDir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clock := testclock.New(time.Now().Truncate(time.Second))
	in, err := daemon.Open(ctx, daemon.Options{DataDir: caDir, Store: st, Clock: clock, Rand: rand.Reader})
	if err != nil {
		t.Fatal(err)
	}
	caLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	caCtx, stopCA := context.WithCancel(ctx)
	caDone := make(chan struct{})
	go func() { in.Serve(caCtx, caLis); close(caDone) }()
	defer func() { stopCA(); <-caDone }()

	nodeDir := t.TempDir()
	tokenFile := filepath.Join(nodeDir, "token")
	tok, _, err := in.Authority.CreateToken(ctx, "node-a", "", 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(tokenFile, []byte(tok), 0o600)
	cfg := Config{Server: caLis.Addr().String(), CAFile: filepath.Join(caDir, daemon.CAFile), Node: "node-a",
		TokenFile: tokenFile, NSSDir: filepath.Join(nodeDir, "nss"), StateDir: filepath.Join(nodeDir, "state"),
		KeyType: "ecdsa-p256", Now: clock.Now}
	agent, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go agent.ServeMetrics(ctx, lis)
	url := "http://" + lis.Addr().String() + "/metrics"

	if got := scrape(t, url); len(got) != 1 || got["ipsecca_build_info"] != 1 {
		t.Errorf("before any pass: %v; want only ipsecca_build_info 1", got)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	bi := buildinfo.Get()
	if want := fmt.Sprintf("ipsecca_build_info{goversion=%q,revision=%q,version=%q} 1", bi.GoVersion, bi.Revision,
		bi.Version); !strings.Contains(string(text), want) {
		t.Errorf("the scrape lacks %s", want)
	}

	// node-b, revoked, puts a serial on the CRL.
	revokeNodeB := func() {
		tokB, _, err := in.Authority.CreateToken(ctx, "node-b", "", 0, "test")
		if err != nil {
			t.Fatal(err)
		}
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csr, _ := newCSR(key, "node-b")
		if _, err := in.Authority.EnrollWithToken(ctx, tokB, csr); err != nil {
			t.Fatal(err)
		}
		if _, err := in.Authority.RevokeNode(ctx, "node-b", "test", "test"); err != nil {
			t.Fatal(err)
		}
	}
	crl := func() *x509.RevocationList {
		der, err := in.Authority.CRL(ctx)
		if err != nil {
			t.Fatal(err)
		}
		l, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	deleteNodeCert := func() {
		out, err := exec.Command("certutil", "-D", "-d", "sql:"+cfg.NSSDir, "-n", NodeNickname("node-a")).
			CombinedOutput()
		if err != nil {
			t.Fatalf("certutil -D: %v: %s", err, out)
		}
	}
	steps := []struct {
		name      string
		before    func()
		drift     float64
		reachable float64
		crlInNSS  bool
	}{
		{"enrolment", nil, 0, 1, false},
		{"a revocation: the CRL goes into NSS", revokeNodeB, 0, 1, true},
		{"the node certificate deleted from NSS: drift repaired", deleteNodeCert, 1, 1, true},
		{"the CA stopped: unreachable, NSS still correct", func() { stopCA(); <-caDone }, 0, 0, true},
	}
	for _, step := range steps {
		clock.Add(time.Minute)
		if step.before != nil {
			step.before()
		}
		if _, err := agent.Pass(ctx); err != nil {
			t.Fatalf("%s: pass: %v", step.name, err)
		}
		if err := agent.Check(ctx); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		p, _ := agent.state.Current()
		want := map[string]float64{
			"ipsecca_build_info":                             1,
			"ipsecca_sidecar_last_success_timestamp_seconds": unix(clock.Now()),
			"ipsecca_sidecar_nss_drift":                      step.drift,
			"ipsecca_sidecar_ca_reachable":                   step.reachable,
			"ipsecca_sidecar_certificate_expiration_timestamp_seconds{node=node-a,serial=" + p.Serial() + "}": unix(
				p.Cert.NotAfter),
		}
		if step.crlInNSS {
			l := crl()
			want["ipsecca_sidecar_crl_this_update_timestamp_seconds"] = unix(l.ThisUpdate)
			want["ipsecca_sidecar_crl_next_update_timestamp_seconds"] = unix(l.NextUpdate)
		}
		got := scrape(t, url)
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				t.Errorf("%s: %s = %v (present %v); want %v", step.name, k, g, ok, v)
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("%s: unexpected series %s = %v", step.name, k, got[k])
			}
		}
	}

	// Between passes a check of NSS alone: a correct database is a success
	// with no drift; a wrong one changes neither (the next pass repairs).
	deleteNodeCert()
	if _, err := agent.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if got := scrape(t, url)["ipsecca_sidecar_nss_drift"]; got != 1 {
		t.Fatalf("drift %v after a repair with the CA away; want 1", got)
	}
	checks := []struct {
		name   string
		tamper func()
		want   float64 // last success
	}{
		{"correct", nil, unix(clock.Now().Add(time.Minute))},
		{"node certificate deleted", deleteNodeCert, unix(clock.Now().Add(time.Minute))},
	}
	for _, c := range checks {
		if c.tamper != nil {
			c.tamper()
		}
		clock.Add(time.Minute)
		agent.verify(ctx)
		got := scrape(t, url)
		if got["ipsecca_sidecar_last_success_timestamp_seconds"] != c.want || got["ipsecca_sidecar_nss_drift"] != 0 {
			t.Errorf("check between passes, %s: last success %v (want %v), drift %v (want 0)", c.name,
				got["ipsecca_sidecar_last_success_timestamp_seconds"], c.want, got["ipsecca_sidecar_nss_drift"])
		}
	}

	// A restarted sidecar knows the CRL in NSS before its first pass.
	again, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !again.metrics.crlNext.Equal(crl().NextUpdate) {
		t.Errorf("after a restart: CRL NextUpdate %v; want %v", again.metrics.crlNext, crl().NextUpdate)
	}
}

// Run refuses a metrics address it cannot listen on before doing anything.
func TestRunRefusesBadMetricsListen(t *testing.T) {
	dir := t.TempDir()
	a, err := New(Config{Server: "127.0.0.1:1", Node: "node-a", NSSDir: filepath.Join(dir, "nss"),
		StateDir: filepath.Join(dir, "state"), MetricsListen: "127.0.0.1:notaport"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Run(ctx); err == nil || !strings.Contains(err.Error(), "metrics listener") {
		t.Fatalf("Run: %v; want a metrics listener error", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "nss")); !os.IsNotExist(err) {
		t.Errorf("the NSS directory was made before the refusal (%v)", err)
	}
}
