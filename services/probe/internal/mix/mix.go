// Package mix holds the one integer mixer the probe hashes with, so sock
// ids and socket-table keys come from the same, tested function.
package mix

// SplitMix64 is the finaliser of the SplitMix64 generator: a bijection
// that spreads every input bit over the output, so its results do not
// reveal the structure of the input (kernel addresses, ports chosen by
// others).
func SplitMix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133c111b
	return x ^ (x >> 31)
}
