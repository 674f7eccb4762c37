package ovsname

import "testing"

func TestHasPrefix(t *testing.T) {
	for s, want := range map[string]bool{
		"ovs_": true, "ovs_certkey_a": true, "OVS_a": true, "Ovs_x": true,
		"": false, "ovs": false, "ovs-a": false, "a_ovs_": false, "left_server": false, "ovſ_": false,
	} {
		if got := HasPrefix(s); got != want {
			t.Errorf("HasPrefix(%q) = %v, want %v", s, got, want)
		}
	}
}
