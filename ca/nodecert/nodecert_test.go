package nodecert

import (
	"strings"
	"testing"
	"time"
)

func TestValidName(t *testing.T) {
	for s, ok := range map[string]bool{
		"node-a": true, "worker-0.example.com": true, "8c1f2a4e-0b7d-4a51-9a7e-3f0c2d1b5e69": true,
		"": false, "Node-A": false, "ovs_x": false, "-a": false, strings.Repeat("a", 65): false,
		strings.Repeat("a", 64) + ".b": false,
	} {
		if err := ValidName(s); (err == nil) != ok {
			t.Errorf("ValidName(%q) = %v, want valid %v", s, err, ok)
		}
	}
}

// A five-year certificate is due after four and a half years.
func TestRotateAfter(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	got := RotateAfter(nb, nb.AddDate(5, 0, 0))
	if y := got.Sub(nb).Hours() / 24 / 365.25; y < 4.49 || y > 4.51 {
		t.Errorf("RotateAfter = NotBefore + %.3f years, want 4.5", y)
	}
}
