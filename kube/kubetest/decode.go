package kubetest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/ipsecca/ipsecca/kube/deploy"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

// DecodeStrict decodes a YAML stream with the Kubernetes scheme; an
// unknown or duplicate field is an error.
func DecodeStrict(stream []byte) ([]runtime.Object, error) {
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var out []runtime.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(out)+1, err)
		}
		out = append(out, obj)
	}
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, l := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.Bytes()
}

// ApplyManifests prints the manifests, decodes them strictly and creates
// every object on the API server (strict field validation there too).
func ApplyManifests(t *testing.T, srv *Server, o deploy.ManifestOptions) []runtime.Object {
	t.Helper()
	objs, err := deploy.Manifests(o)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := deploy.WriteYAML(&buf, objs); err != nil {
		t.Fatal(err)
	}
	decoded, err := DecodeStrict(buf.Bytes())
	if err != nil {
		t.Fatalf("strict decoding of the printed manifests: %v\n%s", err, buf.String())
	}
	if len(decoded) != len(objs) {
		t.Fatalf("printed %d objects, decoded %d", len(objs), len(decoded))
	}
	Create(t, srv, decoded)
	return decoded
}
