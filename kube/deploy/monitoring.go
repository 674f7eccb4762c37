package deploy

import (
	_ "embed"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/ipsecca/ipsecca/kube"
)

// RulesYAML is the alerting rule file: a plain Prometheus rule file
// (rule_files:, promtool), and the spec of the PrometheusRule that
// --monitoring prints.
//
//go:embed monitoring/ipsecca-rules.yaml
var RulesYAML []byte

// DashboardJSON is the Grafana dashboard that --monitoring prints in a
// ConfigMap for Grafana's dashboard sidecar (label grafana_dashboard).
//
//go:embed monitoring/ipsecca-dashboard.json
var DashboardJSON []byte

// Monitoring names and ports.
const (
	// DefaultSidecarMetrics is the sidecars' metrics port on the host (the
	// sidecar runs in the host's network): --monitoring gives the sidecar
	// --metrics-listen on it.
	DefaultSidecarMetrics = 9449
	// JobCA and JobSidecar are the Prometheus job names the rules expect
	// (up{job=...}); the ServiceMonitor and PodMonitor set them.
	JobCA      = "ipsecca"
	JobSidecar = "ipsecca-sidecar"
	// NameDashboard is the dashboard's ConfigMap; DashboardKey its key.
	NameDashboard = "ipsecca-dashboard"
	DashboardKey  = "ipsecca.json"
	// ScrapeInterval is the monitors' scrape interval.
	ScrapeInterval = "30s"
)

// monitoringObjects are what --monitoring adds, as unstructured objects (no
// prometheus-operator Go module for four objects): a ServiceMonitor for
// the CA's metrics Service port, a PodMonitor for the sidecars' metrics
// port (Full only), the PrometheusRule holding RulesYAML and the Grafana
// dashboard's ConfigMap.
func monitoringObjects(o ManifestOptions, meta metaFunc, labels func(string) map[string]string) (
	[]runtime.Object, error,
) {
	var rules map[string]any
	if err := yaml.Unmarshal(RulesYAML, &rules); err != nil {
		return nil, fmt.Errorf("kube: the embedded rule file: %w", err)
	}
	if !json.Valid(DashboardJSON) {
		return nil, fmt.Errorf("kube: the embedded dashboard is not JSON")
	}
	ns := o.Namespace
	// job: the name the rules expect, whatever the operator's default.
	job := func(name string) []any {
		return []any{map[string]any{"targetLabel": "job", "replacement": name, "action": "replace"}}
	}
	selector := func(component string) map[string]any {
		m := map[string]any{}
		for k, v := range labels(component) {
			m[k] = v
		}
		return map[string]any{"matchLabels": m}
	}
	object := func(apiVersion, kind, name, component string, body map[string]any) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: body}
		u.SetAPIVersion(apiVersion)
		u.SetKind(kind)
		m := meta(name, ns, component)
		u.SetName(m.Name)
		u.SetNamespace(m.Namespace)
		u.SetLabels(m.Labels)
		return u
	}
	const monitoringV1 = "monitoring.coreos.com/v1"
	objs := []runtime.Object{
		object(monitoringV1, "ServiceMonitor", NameCA, "ca", map[string]any{"spec": map[string]any{
			"selector":          selector("ca"),
			"namespaceSelector": map[string]any{"matchNames": []any{ns}},
			"endpoints": []any{map[string]any{
				"port": "metrics", "path": "/metrics", "interval": ScrapeInterval, "relabelings": job(JobCA),
			}},
		}}),
	}
	if o.Mode == kube.ModeFull {
		// node: the pod's node, for sidecar metrics that carry no node label.
		sidecarRelabel := append(job(JobSidecar), map[string]any{
			"sourceLabels": []any{"__meta_kubernetes_pod_node_name"}, "targetLabel": "node", "action": "replace",
		})
		objs = append(objs, object(monitoringV1, "PodMonitor", NameSidecar, "sidecar", map[string]any{
			"spec": map[string]any{
				"selector":          selector("sidecar"),
				"namespaceSelector": map[string]any{"matchNames": []any{ns}},
				"podMetricsEndpoints": []any{map[string]any{
					"port": "metrics", "path": "/metrics", "interval": ScrapeInterval, "relabelings": sidecarRelabel,
					// The sidecar's own node label (on its certificate's
					// expiry) wins over the pod's; the same name anyway.
					"honorLabels": true,
				}},
			},
		}))
	}
	objs = append(objs,
		object(monitoringV1, "PrometheusRule", NameCA, "ca", map[string]any{"spec": rules}),
		object("v1", "ConfigMap", NameDashboard, "ca", map[string]any{
			"data": map[string]any{DashboardKey: string(DashboardJSON)},
		}),
	)
	// Grafana's dashboard sidecar loads ConfigMaps with this label.
	dash := objs[len(objs)-1].(*unstructured.Unstructured)
	l := dash.GetLabels()
	l["grafana_dashboard"] = "1"
	dash.SetLabels(l)
	return objs, nil
}
