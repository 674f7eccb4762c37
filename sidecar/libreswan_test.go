package sidecar

import (
	"strings"
	"testing"
)

// conns parses rendered conns into name -> key -> value.
func conns(t *testing.T, s string) map[string]map[string]string {
	out := map[string]map[string]string{}
	var cur map[string]string
	for _, line := range strings.Split(s, "\n") {
		switch {
		case strings.HasPrefix(line, "conn "):
			cur = map[string]string{}
			out[strings.TrimPrefix(line, "conn ")] = cur
		case strings.HasPrefix(line, "    ") && cur != nil:
			k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
			if !ok {
				t.Fatalf("bad line %q", line)
			}
			cur[k] = v
		}
	}
	return out
}

func TestRenderConns(t *testing.T) {
	for _, tc := range []struct {
		encap string
		want  string
	}{{"", ""}, {EncapAuto, ""}, {EncapAlways, "yes"}} {
		out, err := RenderConns(ConnConfig{Node: "node-a", Address: "198.18.0.1", Encapsulation: tc.encap,
			Peers: []Peer{{"node-c", "198.18.0.3"}, {"node-b", "198.18.0.2"}}})
		if err != nil {
			t.Fatal(err)
		}
		cs := conns(t, out)
		if len(cs) != 2 {
			t.Fatalf("%d conns, want 2:\n%s", len(cs), out)
		}
		c := cs["node-a-node-b"]
		want := map[string]string{"left": "198.18.0.1", "right": "198.18.0.2", "leftid": "@node-a", "rightid": "@node-b",
			"leftcert": "ovs_certkey_node-a", "rightca": "%same", "type": "transport", "ikev2": "insist",
			"ike": "aes_gcm256-sha2_256", "esp": "aes_gcm256"}
		for k, v := range want {
			if c[k] != v {
				t.Errorf("encap %q: %s=%q, want %q", tc.encap, k, c[k], v)
			}
		}
		if c["encapsulation"] != tc.want {
			t.Errorf("encap %q: encapsulation=%q, want %q", tc.encap, c["encapsulation"], tc.want)
		}
	}
}

func TestRenderConnsRejects(t *testing.T) {
	for name, c := range map[string]ConnConfig{
		"bad address":  {Node: "node-a", Address: "x", Peers: []Peer{{"node-b", "198.18.0.2"}}},
		"no peers":     {Node: "node-a", Address: "198.18.0.1"},
		"peer is self": {Node: "node-a", Address: "198.18.0.1", Peers: []Peer{{"node-a", "198.18.0.2"}}},
		"bad encap": {Node: "node-a", Address: "198.18.0.1", Peers: []Peer{{"node-b", "198.18.0.2"}},
			Encapsulation: "never"},
		"bad peer name": {Node: "node-a", Address: "198.18.0.1", Peers: []Peer{{"Node B", "198.18.0.2"}}},
		"bad peer addr": {Node: "node-a", Address: "198.18.0.1", Peers: []Peer{{"node-b", "nowhere"}}},
	} {
		if _, err := RenderConns(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPodMTU(t *testing.T) {
	if m, err := PodMTU(1500); err != nil || m != 1454 {
		t.Fatalf("PodMTU(1500) = %d, %v", m, err)
	}
	if m, err := PodMTU(9000); err != nil || m != 8954 {
		t.Fatalf("PodMTU(9000) = %d, %v", m, err)
	}
	if _, err := PodMTU(100); err == nil {
		t.Fatal("tiny MTU accepted")
	}
}
