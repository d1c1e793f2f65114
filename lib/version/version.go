// Package version says which build of netpulse is running: the module
// version and VCS commit the Go toolchain stamped into the binary, or
// what the build set with -ldflags "-X ...version.Version=v1.2.3".
package version

import (
	"runtime"
	"runtime/debug"
)

// Version and Commit are set at link time (make build: -ldflags
// "-X ...version.Version=... -X ...version.Commit=..."); empty means "ask
// the build info", which go build fills only outside a workspace.
var Version, Commit string

// Info is what a binary knows of its build.
type Info struct {
	Version   string // v1.2.3, or "devel"
	Commit    string // VCS revision, "unknown" when not built from a checkout
	Modified  bool   // built from a checkout with uncommitted changes
	GoVersion string
}

// Get reads the running binary's build information.
func Get() Info {
	in := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		if in.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			in.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if in.Commit == "" {
					in.Commit = s.Value
				}
			case "vcs.modified":
				in.Modified = in.Modified || s.Value == "true"
			}
		}
	}
	if in.Version == "" {
		in.Version = "devel"
	}
	if in.Commit == "" {
		in.Commit = "unknown"
	}
	return in
}

// String is the one line --version prints.
func (in Info) String() string {
	commit := in.Commit
	if in.Modified {
		commit += "+modified"
	}
	return in.Version + " (commit " + commit + ", " + in.GoVersion + ")"
}
