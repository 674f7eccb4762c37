package deploy

import (
	"encoding/json"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// WriteYAML prints objects as one YAML stream ("---" between documents),
// ready for kubectl apply -f -. Every object must carry its TypeMeta.
// Empty status blocks and null creation timestamps, which only say
// "unset", are left out.
func WriteYAML(w io.Writer, objs []runtime.Object) error {
	items, err := printable(objs)
	if err != nil {
		return err
	}
	for _, u := range items {
		b, err := yaml.Marshal(u)
		if err != nil {
			return fmt.Errorf("kube: %s: %w", u["kind"], err)
		}
		if _, err := fmt.Fprintf(w, "---\n%s", b); err != nil {
			return err
		}
	}
	return nil
}

// WriteJSON writes objs as one JSON v1 List, as kubectl get -o json prints
// several objects (kubectl apply -f takes it).
func WriteJSON(w io.Writer, objs []runtime.Object) error {
	items, err := printable(objs)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
}

// printable converts objs to what the manifests print: no status (the
// cluster reports it) and no fields that only say "unset".
func printable(objs []runtime.Object) ([]map[string]any, error) {
	items := make([]map[string]any, 0, len(objs))
	for i, o := range objs {
		gvk := o.GetObjectKind().GroupVersionKind()
		if gvk.Kind == "" || gvk.Version == "" {
			return nil, fmt.Errorf("kube: object %d (%T) has no apiVersion/kind", i, o)
		}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return nil, fmt.Errorf("kube: %s: %w", gvk.Kind, err)
		}
		delete(u, "status")
		prune(u)
		items = append(items, u)
	}
	return items, nil
}

// prune drops "creationTimestamp: null" and the empty maps that only
// say "unset" (status, spec, metadata, resources, updateStrategy) anywhere.
func prune(v any) {
	switch t := v.(type) {
	case map[string]any:
		for k, c := range t {
			switch {
			case k == "creationTimestamp" && c == nil:
				delete(t, k)
				continue
			case k == "status":
				if m, ok := c.(map[string]any); ok && len(m) == 0 {
					delete(t, k)
					continue
				}
			}
			prune(c)
			if k == "metadata" || k == "resources" || k == "spec" || k == "updateStrategy" {
				if m, ok := c.(map[string]any); ok && len(m) == 0 {
					delete(t, k)
				}
			}
		}
	case []any:
		for _, c := range t {
			prune(c)
		}
	}
}
