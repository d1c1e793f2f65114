// Package priv lets tests that need root or a kernel feature say so.
//
// Such a test skips with the reason when it cannot run, unless
// NETPULSE_REQUIRE_PRIVILEGED=1 (set by .ci/run): then the skip is a failure,
// so nothing goes silently untested in CI.
package priv

import (
	"os"
	"testing"
)

// RequireEnv is the environment variable that turns skips into failures.
const RequireEnv = "NETPULSE_REQUIRE_PRIVILEGED"

// Required reports whether skips must fail the run.
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// Skip skips t with reason, or fails it when privileged tests are required.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s is set but this test cannot run: %s", RequireEnv, reason)
	}
	t.Skip(reason)
}

// RequireRoot skips (or fails, see Skip) a test that needs root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root (loads eBPF programs)")
	}
}
