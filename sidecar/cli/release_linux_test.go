package cli

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// rssFileKiB is this process's resident file-backed memory.
func rssFileKiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// The binary's pages that start-up touched leave the process's resident
// memory (the test binary links the sidecar: several MiB of them).
func TestReleaseStartupPages(t *testing.T) {
	before := rssFileKiB(t)
	releaseStartupPages()
	after := rssFileKiB(t)
	t.Logf("RssFile %d KiB before, %d KiB after", before, after)
	if after > before/2 {
		t.Errorf("RssFile %d KiB after releasing, %d KiB before: want less than half", after, before)
	}
}
