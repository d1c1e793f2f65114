package mix

import "testing"

// Reference values of the SplitMix64 finaliser (as the copies in tracer
// and socktable computed them before they became this one).
func TestSplitMix64(t *testing.T) {
	for _, tc := range []struct{ in, want uint64 }{
		{0, 0x007bbd86334e33b2},
		{1, 0x7e5a1329a34739e8},
		{0xffffffffffffffff, 0x9d96daa930ae5a4d},
		{0xffff888012345678, 0xcc831043bf0727c8},
	} {
		if got := SplitMix64(tc.in); got != tc.want {
			t.Errorf("SplitMix64(%#x) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
}
