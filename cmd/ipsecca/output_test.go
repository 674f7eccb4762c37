package main

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	"github.com/ipsecca/ipsecca/internal/clijson"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// -o json is what a script wants: PEM as text, 64-bit counters as
// numbers, every field even when empty, the API's JSON names; -o yaml
// the same data.
func TestPlainJSON(t *testing.T) {
	pemText := "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	list := &ipseccav1.ListCertificatesResponse{Certificates: []*ipseccav1.Certificate{{
		Serial: "0a", CertificatePem: []byte(pemText), NotAfter: timestamppb.New(timestamppb.Now().AsTime()),
	}}}
	for _, format := range []string{"json", "yaml"} {
		cmd := newRootCmd()
		var out strings.Builder
		cmd.SetOut(&out)
		if err := (&outputFlags{format: format}).data(cmd, list); err != nil {
			t.Fatal(err)
		}
		b := []byte(out.String())
		if format == "yaml" {
			var err error
			if b, err = yaml.YAMLToJSON(b); err != nil {
				t.Fatal(err)
			}
		}
		var v struct {
			Certificates []map[string]any `json:"certificates"`
		}
		if err := json.Unmarshal(b, &v); err != nil || len(v.Certificates) != 1 {
			t.Fatalf("-o %s: %v\n%s", format, err, out.String())
		}
		c := v.Certificates[0]
		if c["certificatePem"] != pemText || c["serial"] != "0a" || c["revokedAt"] != nil && c["revokedAt"] != "" {
			t.Errorf("-o %s: certificate %v", format, c)
		}
		if _, ok := c["supersededBy"]; !ok {
			t.Errorf("-o %s: empty fields left out: %v", format, c)
		}
		back := new(ipseccav1.ListCertificatesResponse)
		if err := clijson.Unmarshal(b, back); err != nil || !proto.Equal(back, list) {
			t.Errorf("-o %s does not read back: %v\n%v", format, err, back)
		}
	}
	cmd := newRootCmd()
	var out strings.Builder
	cmd.SetOut(&out)
	printJSON(cmd, &ipseccav1.VerifyAuditResponse{Ok: true, Records: 1 << 40})
	if !strings.Contains(out.String(), `"records": 1099511627776`) {
		t.Errorf("a uint64 is not a JSON number:\n%s", out.String())
	}
}
