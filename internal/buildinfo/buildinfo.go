// Package buildinfo says which build of ipsecca is running: the module
// version and the VCS revision Go stamped into the binary. The CLI prints
// it (ipsecca version), the CA exports it (ipsecca_build_info) and reports
// it in its status, so replicas of mixed versions are visible.
package buildinfo

import (
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
}

// String is the one-line form: "v1.2.3 (abc123, go1.26)".
func (i Info) String() string {
	s := i.Version + " ("
	if i.Revision != "" {
		s += i.Revision + ", "
	}
	return s + i.GoVersion + ")"
}

// Get returns the running binary's build information.
var Get = sync.OnceValue(func() Info {
	info := Info{Version: "(devel)", GoVersion: runtime.Version()}
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
