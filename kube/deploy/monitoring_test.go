package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	grafana "github.com/grafana/grafana-foundation-sdk/go/dashboard"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/ipsecca/ipsecca/internal/flagnames"
	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/kube/deploy"
)

const (
	rulesFile     = "monitoring/ipsecca-rules.yaml"
	rulesTestFile = "monitoring/ipsecca-rules_test.yaml"
)

// promtool runs Debian's promtool (package prometheus; make deps installs it).
func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is missing (make deps installs the prometheus package): %v", err)
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Record      string            `json:"record"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

type ruleTests struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		Name  string `json:"name"`
		Cases []struct {
			EvalTime  string           `json:"eval_time"`
			Alertname string           `json:"alertname"`
			ExpAlerts []map[string]any `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// The rule file is valid (promtool check rules), its unit tests pass
// (promtool test rules), every alert has a unit test in which it fires and
// one in which it does not, and every alert tells the on-call engineer
// what happened, where, how bad, and which command to run.
func TestAlertRules(t *testing.T) {
	out := promtool(t, "check", "rules", rulesFile)
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check rules: %s", out)
	}
	if out := promtool(t, "test", "rules", rulesTestFile); !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules: %s", out)
	}
	onDisk, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, deploy.RulesYAML) {
		t.Fatal("the embedded rule file differs from the file promtool checked")
	}
	var rules ruleFile
	if err := yaml.UnmarshalStrict(deploy.RulesYAML, &rules); err != nil {
		t.Fatal(err)
	}
	testsYAML, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var tests ruleTests
	if err := yaml.Unmarshal(testsYAML, &tests); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tests.RuleFiles, []string{filepath.Base(rulesFile)}) {
		t.Fatalf("the unit tests load %v, not the shipped rule file", tests.RuleFiles)
	}
	fires, silent := map[string]int{}, map[string]int{}
	for _, tc := range tests.Tests {
		for _, c := range tc.Cases {
			if len(c.ExpAlerts) > 0 {
				fires[c.Alertname]++
			} else {
				silent[c.Alertname]++
			}
		}
	}
	command := regexp.MustCompile("`(ipsecca|kubectl|certutil|etcdctl) [^`]+`|kubectl -n")
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if fires[r.Alert] == 0 || silent[r.Alert] == 0 {
				t.Errorf("%s: %d unit tests where it fires, %d where it does not; want both", r.Alert,
					fires[r.Alert], silent[r.Alert])
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s", r.Alert, a)
				}
			}
			if !command.MatchString(r.Annotations["description"]) {
				t.Errorf("%s: the description names no command to run: %q", r.Alert, r.Annotations["description"])
			}
		}
	}
	// What issue #22 asks the rules to cover.
	for _, metric := range []string{
		"ipsecca_certificate_expiration_timestamp_seconds", "ipsecca_certificate_rotation_due_timestamp_seconds",
		"ipsecca_rotation_overdue", "ipsecca_ca_expiry_timestamp_seconds", "ipsecca_ca_renew_by_timestamp_seconds",
		"ipsecca_node_last_report_timestamp_seconds", "ipsecca_sidecar_last_success_timestamp_seconds",
		"ipsecca_sidecar_ca_reachable", "ipsecca_sidecar_nss_drift", "ipsecca_denials_total",
		"ipsecca_kube_csr_oldest_pending_timestamp_seconds", "ipsecca_kube_csr_pending", "ipsecca_store_up",
		`up{job="` + deploy.JobCA + `"}`, `up{job="` + deploy.JobSidecar + `"}`,
	} {
		if !strings.Contains(string(deploy.RulesYAML), metric) {
			t.Errorf("no rule watches %s", metric)
		}
	}
	if len(alerts) < 17 {
		t.Errorf("%d alerts: %v", len(alerts), alerts)
	}
}

type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos *struct{ X, Y, W, H int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// grafanaVars are the Grafana variables the dashboard's queries may use,
// with a value that makes them PromQL.
var grafanaVars = map[string]string{"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

// The dashboard is what Grafana imports, as far as can be checked offline:
// a current schemaVersion, a Prometheus data source variable, unique panel
// ids, a place on the 24-column grid for every panel and no two panels on
// the same cells, a data source and queries on every panel but rows, and
// every query valid PromQL (promtool parses each as a recording rule). It
// shows what issue #22 asks: the rotation calendar, issuance and denial
// rates, the fleet's state and gRPC by method and code.
func TestDashboard(t *testing.T) {
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(deploy.DashboardJSON))
	if err := dec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 36 {
		t.Fatalf("title %q uid %q schemaVersion %d", d.Title, d.UID, d.SchemaVersion)
	}
	if len(d.Templating.List) == 0 || d.Templating.List[0].Name != "datasource" ||
		d.Templating.List[0].Type != "datasource" || d.Templating.List[0].Query != "prometheus" {
		t.Fatalf("no Prometheus data source variable: %+v", d.Templating.List)
	}
	ids := map[int]string{}
	cells := map[[2]int]string{}
	var exprs []string
	var all []panel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...) // a collapsed row's panels
	}
	for _, p := range all {
		if p.ID == 0 || ids[p.ID] != "" {
			t.Errorf("panel %q: id %d (also %q)", p.Title, p.ID, ids[p.ID])
		}
		ids[p.ID] = p.Title
		if p.Title == "" || p.Type == "" {
			t.Errorf("panel %d: title %q type %q", p.ID, p.Title, p.Type)
		}
		g := p.GridPos
		if g == nil || g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v", p.Title, g)
			continue
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other := cells[[2]int{x, y}]; other != "" {
					t.Fatalf("panels %q and %q overlap at %d,%d", other, p.Title, x, y)
				}
				cells[[2]int{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no queries", p.Title)
		}
		refs := map[string]bool{}
		for _, q := range p.Targets {
			if q.RefID == "" || refs[q.RefID] || strings.TrimSpace(q.Expr) == "" {
				t.Errorf("panel %q: query %+v", p.Title, q)
			}
			refs[q.RefID] = true
			exprs = append(exprs, q.Expr)
		}
	}
	// Every query parses: promtool check rules on one recording rule each.
	var rf strings.Builder
	rf.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	unknownVar := regexp.MustCompile(`\$\{?\w+`)
	for i, e := range exprs {
		for v, val := range grafanaVars {
			e = strings.ReplaceAll(e, v, val)
		}
		if v := unknownVar.FindString(e); v != "" {
			t.Errorf("query %q uses %s, which the dashboard does not define", exprs[i], v)
		}
		b, _ := json.Marshal(e)
		fmt.Fprintf(&rf, "      - record: dashboard:query_%d\n        expr: %s\n", i, b)
	}
	file := filepath.Join(t.TempDir(), "dashboard-queries.yaml")
	if err := os.WriteFile(file, []byte(rf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := promtool(t, "check", "rules", file); !strings.Contains(out,
		fmt.Sprintf("SUCCESS: %d rules found", len(exprs))) {
		t.Fatalf("promtool check rules on the dashboard's queries: %s", out)
	}
	joined := strings.Join(exprs, "\n")
	for _, want := range []string{
		// the rotation calendar
		"ipsecca_certificate_rotation_due_timestamp_seconds", "ipsecca_certificate_expiration_timestamp_seconds",
		"ipsecca_ca_expiry_timestamp_seconds",
		// issuance and denials
		"rate(ipsecca_certificates_issued_total", "rate(ipsecca_denials_total",
		// the fleet
		"ipsecca_certificates)", "ipsecca_mesh_pairs", "ipsecca_watch_streams",
		// gRPC by method and code
		"sum by (grpc_method, grpc_code) (rate(grpc_server_handled_total",
		"sum by (le, grpc_method) (rate(grpc_server_handling_seconds_bucket",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("no dashboard query has %q", want)
		}
	}
}

// The dashboard decodes strictly into Grafana's own dashboard schema (the
// Go types Grafana generates from it, with every panel plugin's options
// and the Prometheus query type registered) and passes its validation: no
// unknown field, no missing required one, no value of the wrong type.
func TestDashboardGrafanaSchema(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	var d grafana.Dashboard
	err := d.UnmarshalJSONStrict(deploy.DashboardJSON)
	if be := (cog.BuildErrors)(nil); errors.As(err, &be) && len(be) == 0 {
		err = nil // the generated decoder returns an empty list for none
	}
	if err != nil {
		t.Fatalf("Grafana's schema refuses the dashboard:\n%v", err)
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("Grafana's schema validation: %v", err)
	}
	if len(d.Panels) < 20 {
		t.Fatalf("%d panels decoded", len(d.Panels))
	}
	// The check has teeth: a misspelt field or a wrong type is refused.
	for _, bad := range []struct{ from, to string }{
		{`"gridPos": {`, `"gridPoss": {`}, {`"w": 14`, `"w": "14"`}, {`"legendFormat"`, `"legendFormats"`},
	} {
		mangled := strings.Replace(string(deploy.DashboardJSON), bad.from, bad.to, 1)
		if mangled == string(deploy.DashboardJSON) {
			t.Fatalf("no %q in the dashboard", bad.from)
		}
		var d grafana.Dashboard
		err := d.UnmarshalJSONStrict([]byte(mangled))
		if be := (cog.BuildErrors)(nil); err == nil || errors.As(err, &be) && len(be) == 0 {
			t.Errorf("a dashboard with %s decoded", bad.to)
		}
	}
}

// manifestsYAML renders o's manifests as the command prints them, and
// reads them back as generic objects.
func manifestsYAML(t *testing.T, o deploy.ManifestOptions) ([]runtime.Object, []map[string]any) {
	t.Helper()
	objs, err := deploy.Manifests(o)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := deploy.WriteYAML(&buf, objs); err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	for _, doc := range strings.Split(buf.String(), "---\n")[1:] {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		docs = append(docs, m)
	}
	return objs, docs
}

// --monitoring adds a ServiceMonitor on the CA Service's metrics port, a
// PodMonitor on the sidecars' (Full only) which then listen with
// --metrics-listen on a named port, the PrometheusRule holding the shipped
// rule file and the dashboard's ConfigMap; without it, none of these and
// no sidecar metrics listener.
func TestManifestsMonitoring(t *testing.T) {
	monKinds := []string{"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
	for _, tc := range []struct {
		name string
		o    deploy.ManifestOptions
		want []string
	}{
		{"Full", deploy.ManifestOptions{Monitoring: true}, monKinds},
		{"External", deploy.ManifestOptions{Monitoring: true, Mode: kube.ModeExternal},
			[]string{"ServiceMonitor", "PrometheusRule", "ConfigMap"}},
		{"etcd", deploy.ManifestOptions{Monitoring: true, Store: deploy.StoreEtcd,
			EtcdEndpoints: []string{"h1:2379"}}, monKinds},
		{"off", deploy.ManifestOptions{}, nil},
		{"off External", deploy.ManifestOptions{Mode: kube.ModeExternal}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, docs := manifestsYAML(t, tc.o)
			var got []string
			byKind := map[string]map[string]any{}
			for _, d := range docs {
				k := d["kind"].(string)
				byKind[k] = d
				// kubectl apply keeps the object in an annotation, 256 KiB
				// at most.
				if n := len(mustJSON(t, d)); n > 256<<10 {
					t.Errorf("%s: %d bytes, too large for kubectl apply", k, n)
				}
				if slices.Contains(monKinds, k) {
					got = append(got, k)
					if d["apiVersion"] != "monitoring.coreos.com/v1" && k != "ConfigMap" {
						t.Errorf("%s: apiVersion %v", k, d["apiVersion"])
					}
					if ns, _, _ := unstructured.NestedString(d, "metadata", "namespace"); ns != "ipsecca" {
						t.Errorf("%s in namespace %q", k, ns)
					}
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("monitoring objects %v, want %v", got, tc.want)
			}
			var sidecar *corev1.Container
			var svc *corev1.Service
			for _, o := range objs {
				switch o := o.(type) {
				case *appsv1.DaemonSet:
					sidecar = &o.Spec.Template.Spec.Containers[0]
				case *corev1.Service:
					svc = o
				}
			}
			if sidecar != nil {
				listen := argValue(sidecar.Args, flagArg(flagnames.MetricsListen))
				wantListen := ""
				if tc.o.Monitoring {
					wantListen = fmt.Sprintf("0.0.0.0:%d", deploy.DefaultSidecarMetrics)
				}
				if listen != wantListen {
					t.Errorf("sidecar --metrics-listen %q, want %q", listen, wantListen)
				}
				if tc.o.Monitoring != (len(sidecar.Ports) == 1 && sidecar.Ports[0].Name == "metrics" &&
					sidecar.Ports[0].ContainerPort == deploy.DefaultSidecarMetrics) {
					t.Errorf("sidecar ports %+v", sidecar.Ports)
				}
			}
			if !tc.o.Monitoring {
				return
			}
			// The ServiceMonitor selects the CA's Service and names its port.
			sm := byKind["ServiceMonitor"]
			sel, _, _ := unstructured.NestedStringMap(sm, "spec", "selector", "matchLabels")
			for k, v := range sel {
				if svc.Labels[k] != v {
					t.Errorf("the ServiceMonitor selects %s=%s; the Service has %v", k, v, svc.Labels)
				}
			}
			eps, _, _ := unstructured.NestedSlice(sm, "spec", "endpoints")
			if len(eps) != 1 || eps[0].(map[string]any)["port"] != "metrics" ||
				!slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "metrics" }) {
				t.Errorf("ServiceMonitor endpoints %v; Service ports %+v", eps, svc.Spec.Ports)
			}
			if !strings.Contains(fmt.Sprint(eps), "replacement:"+deploy.JobCA) {
				t.Errorf("the ServiceMonitor does not name the job %s: %v", deploy.JobCA, eps)
			}
			if pm := byKind["PodMonitor"]; pm != nil {
				sel, _, _ := unstructured.NestedStringMap(pm, "spec", "selector", "matchLabels")
				if sel["app.kubernetes.io/component"] != "sidecar" {
					t.Errorf("the PodMonitor selects %v", sel)
				}
				eps, _, _ := unstructured.NestedSlice(pm, "spec", "podMetricsEndpoints")
				if len(eps) != 1 || eps[0].(map[string]any)["port"] != "metrics" ||
					!strings.Contains(fmt.Sprint(eps), "replacement:"+deploy.JobSidecar) {
					t.Errorf("PodMonitor endpoints %v", eps)
				}
			}
			// The PrometheusRule holds the shipped rule file, unchanged.
			var want map[string]any
			if err := yaml.Unmarshal(deploy.RulesYAML, &want); err != nil {
				t.Fatal(err)
			}
			spec, _, _ := unstructured.NestedMap(byKind["PrometheusRule"], "spec")
			if a, b := mustJSON(t, spec), mustJSON(t, want); a != b {
				t.Errorf("the PrometheusRule's spec differs from the rule file:\n%s\n%s", a, b)
			}
			cm := byKind["ConfigMap"]
			if l, _, _ := unstructured.NestedStringMap(cm, "metadata", "labels"); l["grafana_dashboard"] != "1" {
				t.Errorf("dashboard ConfigMap labels %v", l)
			}
			if j, _, _ := unstructured.NestedString(cm, "data", deploy.DashboardKey); j != string(
				deploy.DashboardJSON,
			) {
				t.Error("the ConfigMap does not hold the dashboard")
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
