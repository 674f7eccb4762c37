// Package buildinfo says which build of ipsecca is running: the module
// version and the VCS revision Go stamped into the binary. The CLI prints
// it (ipsecca version), the CA exports it (ipsecca_build_info) and reports
// it in its status, so replicas of mixed versions are visible. It also says
// whether the process runs in FIPS 140-3 mode.
package buildinfo

import (
	"crypto/fips140"
	"runtime"
	"runtime/debug"
	"sync"
)

// Info describes one build.
type Info struct {
	Version   string `json:"version"`            // module version, "(devel)" for a source build
	Revision  string `json:"revision,omitempty"` // VCS revision, with "-dirty" when modified
	Time      string `json:"time,omitempty"`     // VCS commit time (RFC 3339)
	GoVersion string `json:"goVersion"`
	// FIPS140 is the process's FIPS 140-3 mode: "off", "on" (the Go
	// Cryptographic Module in FIPS mode) or "only" (also refusing every
	// algorithm that is not approved): GODEBUG=fips140, whose default a
	// GOFIPS140 build sets to on.
	FIPS140 string `json:"fips140"`
	// FIPS140Module is the module's version when FIPS mode is on: the frozen
	// one a GOFIPS140 build carries (v1.0.0 is the CMVP-validated one), else
	// "latest" (the module of the Go toolchain, not validated as such).
	FIPS140Module string `json:"fips140Module,omitempty"`
}

// FIPS140Mode returns the process's FIPS 140-3 mode: off, on or only.
func FIPS140Mode() string {
	switch {
	case fips140.Enforced():
		return "only"
	case fips140.Enabled():
		return "on"
	}
	return "off"
}

// String is the one-line form: "v1.2.3 (abc123, go1.26)", with ", FIPS
// 140-3 mode on, module v1.0.0" before the ")" when that mode is on.
func (i Info) String() string {
	s := i.Version + " ("
	if i.Revision != "" {
		s += i.Revision + ", "
	}
	s += i.GoVersion
	if i.FIPS140 != "" && i.FIPS140 != "off" {
		s += ", FIPS 140-3 mode " + i.FIPS140 + ", module " + i.FIPS140Module
	}
	return s + ")"
}

// Get returns the running binary's build information.
var Get = sync.OnceValue(func() Info {
	info := Info{Version: "(devel)", GoVersion: runtime.Version(), FIPS140: FIPS140Mode()}
	if info.FIPS140 != "off" {
		info.FIPS140Module = fips140.Version()
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	if v := bi.Main.Version; v != "" {
		info.Version = v
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && info.Revision != "" {
		info.Revision += "-dirty"
	}
	return info
})
