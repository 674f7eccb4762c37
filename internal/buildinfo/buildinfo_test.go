package buildinfo

import (
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestGet(t *testing.T) {
	info := Get()
	if info.GoVersion != runtime.Version() {
		t.Errorf("GoVersion = %q, want %q", info.GoVersion, runtime.Version())
	}
	if info.Version == "" {
		t.Error("Version is empty")
	}
	suffix := runtime.Version() + ")"
	if info.FIPS140 != "off" {
		suffix = runtime.Version() + ", FIPS 140-3 mode " + info.FIPS140 + ", module " + info.FIPS140Module + ")"
	}
	if s := info.String(); !strings.HasPrefix(s, info.Version+" (") || !strings.HasSuffix(s, suffix) {
		t.Errorf("String() = %q, want the suffix %q", s, suffix)
	}
}

// TestFIPS140Mode: the mode reported is the one GODEBUG asked for (make
// fips-test runs this with fips140=only on a GOFIPS140=v1.0.0 build).
func TestFIPS140Mode(t *testing.T) {
	want := "off"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GOFIPS140" && s.Value != "off" {
				want = "on" // a GOFIPS140 build's default
			}
		}
	}
	for _, kv := range strings.Split(os.Getenv("GODEBUG"), ",") {
		if v, ok := strings.CutPrefix(kv, "fips140="); ok {
			want = v
		}
	}
	info := Get()
	if info.FIPS140 != want || FIPS140Mode() != want {
		t.Errorf("FIPS140 = %q, FIPS140Mode() = %q, want %q (GODEBUG=%q)", info.FIPS140, FIPS140Mode(), want,
			os.Getenv("GODEBUG"))
	}
	if (info.FIPS140Module != "") != (want != "off") {
		t.Errorf("FIPS140Module = %q in mode %q", info.FIPS140Module, want)
	}
}
