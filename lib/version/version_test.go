package version

import (
	"runtime"
	"testing"
)

func TestGet(t *testing.T) {
	Version, Commit = "v1.2.3", "0123456789abcdef0123456789abcdef01234567"
	defer func() { Version, Commit = "", "" }()
	in := Get()
	if in.Version != "v1.2.3" || in.Commit != Commit || in.GoVersion != runtime.Version() {
		t.Fatalf("Get() = %+v", in)
	}
	if got, want := in.String(), "v1.2.3 (commit "+Commit+", "+runtime.Version()+")"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	Version, Commit = "", ""
	if in := Get(); in.Version == "" || in.Commit == "" {
		t.Errorf("without link-time values Get() = %+v, want devel/unknown at worst", in)
	}
}
