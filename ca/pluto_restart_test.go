package ca

import (
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/store"
)

// Each node restarts pluto in its own slot of the retire phase, by name,
// revoked and forgotten nodes aside; outside that phase, or for a node the
// CA does not know, at once.
func TestPlutoRestartAt(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	phaseAt := now.Add(-time.Minute)
	retire := &store.Rollover{Phase: store.RolloverRetire, PhaseAt: phaseAt}
	nodes := []*store.NodeInfo{{Name: "node-c"}, {Name: "node-a"}, {Name: "node-b", Revoked: true},
		{Name: "node-d", ForgottenAt: now.Add(-time.Hour)}, {Name: "node-e"}}
	for _, tc := range []struct {
		name string
		ro   *store.Rollover
		node string
		want time.Time
	}{
		{"first by name", retire, "node-a", phaseAt},
		{"second (node-b is revoked)", retire, "node-c", phaseAt.Add(PlutoRestartSlot)},
		{"third (node-d is forgotten)", retire, "node-e", phaseAt.Add(2 * PlutoRestartSlot)},
		{"a node the CA does not know", retire, "node-x", now},
		{"no rollover", nil, "node-e", now},
		{"the issue phase", &store.Rollover{Phase: store.RolloverIssue, PhaseAt: phaseAt}, "node-e", now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := plutoRestartAt(tc.ro, nodes, tc.node, now); !got.Equal(tc.want) {
				t.Errorf("plutoRestartAt = %v, want %v", got, tc.want)
			}
		})
	}
}
