package ca

import (
	"context"
	"crypto/elliptic"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"strings"
	"testing"
)

func mustExt(t *testing.T, id asn1.ObjectIdentifier, v any) pkix.Extension {
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: id, Critical: true, Value: b}
}

// TestNodePolicy runs every denial reason of the chain, and the approvals.
func TestNodePolicy(t *testing.T) {
	type bc struct {
		IsCA bool `asn1:"optional"`
	}
	id := Identity{Node: "node-a", CN: "node-a"}
	uuid := "0f2c41c6-1b64-4f0e-9d5e-8a1f3e0c2b7a"
	cases := []struct {
		name   string
		csr    csrOpts
		id     Identity
		reason Reason
		class  error
	}{
		{"ecdsa p256 ok", csrOpts{cn: "node-a", dns: []string{"node-a"}}, id, "", nil},
		{"ecdsa p384 ok", csrOpts{cn: "node-a", key: mustECDSA(t, elliptic.P384())}, id, "", nil},
		{"rsa 2048 ok", csrOpts{cn: "node-a", key: mustRSA(t, 2048)}, id, "", nil},
		{
			"openshift subject ok (fields are not copied)",
			csrOpts{cn: "node-a", org: "ovnkubernetes", dns: []string{"node-a"}},
			id,
			"",
			nil,
		},
		{"uuid cn ok", csrOpts{cn: uuid, dns: []string{uuid}}, Identity{Node: "worker-1", CN: uuid}, "", nil},
		{"bad signature", csrOpts{cn: "node-a", tamper: true}, id, ReasonCSRSignature, ErrInvalidRequest},
		{"rsa 1024 weak", csrOpts{cn: "node-a", key: mustRSA(t, 1024)}, id, ReasonKeyWeak, ErrInvalidRequest},
		{
			"ed25519 unsupported",
			csrOpts{cn: "node-a", key: mustEd25519(t)},
			id,
			ReasonKeyUnsupported,
			ErrInvalidRequest,
		},
		{
			"p521 unsupported",
			csrOpts{cn: "node-a", key: mustECDSA(t, elliptic.P521())},
			id,
			ReasonKeyUnsupported,
			ErrInvalidRequest,
		},
		{
			"p224 unsupported",
			csrOpts{cn: "node-a", key: mustECDSA(t, elliptic.P224())},
			id,
			ReasonKeyUnsupported,
			ErrInvalidRequest,
		},
		{
			"CA=true",
			csrOpts{cn: "node-a", extra: []pkix.Extension{mustExt(t, oidBasicConstraints, bc{IsCA: true})}},
			id,
			ReasonCARequested,
			ErrInvalidRequest,
		},
		{
			"keyCertSign",
			csrOpts{
				cn:    "node-a",
				extra: []pkix.Extension{mustExt(t, oidKeyUsage, asn1.BitString{Bytes: []byte{0x04}, BitLength: 6})},
			},
			id,
			ReasonCARequested,
			ErrInvalidRequest,
		},
		{
			"ovs_ prefix",
			csrOpts{cn: "ovs_node-a"},
			Identity{Node: "node-a", CN: "ovs_node-a"},
			ReasonCNForbiddenOVS,
			ErrInvalidRequest,
		},
		{"OVS_ prefix any case", csrOpts{cn: "OvS_x"}, id, ReasonCNForbiddenOVS, ErrInvalidRequest},
		{"cn invalid chars", csrOpts{cn: "Node_A!"}, id, ReasonCNInvalid, ErrInvalidRequest},
		{"cn empty", csrOpts{cn: ""}, id, ReasonCNInvalid, ErrInvalidRequest},
		{"cn too long", csrOpts{cn: strings.Repeat("a", 65)}, id, ReasonCNInvalid, ErrInvalidRequest},
		{"cn of another node", csrOpts{cn: "node-b"}, id, ReasonCNNotCallersNode, ErrPermissionDenied},
		{
			"extra dns san",
			csrOpts{cn: "node-a", dns: []string{"node-a", "node-b"}},
			id,
			ReasonSANNotAllowed,
			ErrInvalidRequest,
		},
		{
			"ip san",
			csrOpts{cn: "node-a", ips: []net.IP{net.ParseIP("10.0.0.1")}},
			id,
			ReasonSANNotAllowed,
			ErrInvalidRequest,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			csr, err := ParseCSR(makeCSR(t, tc.csr))
			if err != nil {
				t.Fatal(err)
			}
			err = Evaluate(NodePolicy, &Request{CSR: csr, Identity: tc.id})
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("want approval, got %v", err)
				}
				return
			}
			var de *DenyError
			if !errors.As(err, &de) || de.Reason != tc.reason || !errors.Is(err, tc.class) {
				t.Fatalf("want %s (%v), got %v", tc.reason, tc.class, err)
			}
			if de.Detail == "" || !strings.HasPrefix(err.Error(), "ca: denied (") {
				t.Fatalf("denial without a readable message: %q", err)
			}
		})
	}
}

func TestParseCSR(t *testing.T) {
	cases := []struct {
		name   string
		in     []byte
		reason Reason
	}{
		{"garbage", []byte("not a csr"), ReasonCSRMalformed},
		{
			"wrong pem type",
			[]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
			ReasonCSRMalformed,
		},
		{"truncated", makeCSR(t, csrOpts{cn: "node-a"})[:100], ReasonCSRMalformed},
		{"too large", make([]byte, MaxCSRBytes+1), ReasonCSRTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCSR(tc.in)
			var de *DenyError
			if !errors.As(err, &de) || de.Reason != tc.reason {
				t.Fatalf("want %s, got %v", tc.reason, err)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	for name, ok := range map[string]bool{
		"node-a": true, "worker-1.example.com": true, "0f2c41c6-1b64-4f0e-9d5e-8a1f3e0c2b7a": true,
		"0F2C41C6-1B64-4F0E-9D5E-8A1F3E0C2B7A": true, "Node-A": false, "-a": false, "a-": false, "a..b": false,
		"ovs_a": false, "": false, strings.Repeat("a", 32) + "." + strings.Repeat("a", 31): true, strings.Repeat("a", 64): false, strings.Repeat("a", 65): false,
	} {
		if got := ValidName(name) == nil; got != ok {
			t.Errorf("ValidName(%q) ok=%v, want %v", name, got, ok)
		}
	}
}

func TestCreateTokenValidation(t *testing.T) {
	a, _, _ := newTestAuthority(t, KeyECDSAP256)
	ctx := context.Background()
	cases := []struct {
		node, cn string
		reason   Reason
	}{
		{"ovs_a", "", ReasonCNForbiddenOVS},
		{"node-a", "OVS_A", ReasonCNForbiddenOVS},
		{"Node A", "", ReasonNodeNameInvalid},
		{"node-a", "bad name", ReasonCNInvalid},
	}
	for _, tc := range cases {
		_, _, err := a.CreateToken(ctx, tc.node, tc.cn, 0, "test")
		var de *DenyError
		if !errors.As(err, &de) || de.Reason != tc.reason {
			t.Errorf("CreateToken(%q,%q): want %s, got %v", tc.node, tc.cn, tc.reason, err)
		}
	}
	if _, _, err := a.CreateToken(ctx, "node-a", "", MaxTokenTTL+1, "test"); err == nil {
		t.Error("token TTL over the maximum accepted")
	}
}
