package agent

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"github.com/netpulse/netpulse/lib/eventpb"
	"github.com/netpulse/netpulse/services/probe/internal/endpoints"
	"github.com/netpulse/netpulse/services/probe/internal/sockdiag"
)

// maxClosers bounds the remote endpoints whose closing process and
// TIME_WAIT entries the probe remembers between snapshots.
const maxClosers = 1 << 16

// portSettings are the sysctls that bound TIME_WAIT, FIN_WAIT2 and the
// ephemeral ports, as a snapshot reports them.
type portSettings struct {
	low, high, finTimeout, maxTwBuckets, twReuse uint32
}

// procSysIPv4 is where readPortSettings reads (a test points it elsewhere).
var procSysIPv4 = "/proc/sys/net/ipv4/"

// readPortSettings reads the settings of the probe's network namespace;
// a value it cannot read stays 0 and is named in err.
func readPortSettings() (portSettings, error) {
	var s portSettings
	var errs []error
	read := func(name string, dst ...*uint32) {
		b, err := os.ReadFile(procSysIPv4 + name)
		if err != nil {
			errs = append(errs, err)
			return
		}
		f := bytes.Fields(b)
		if len(f) != len(dst) {
			errs = append(errs, fmt.Errorf("%s: %d values, want %d", name, len(f), len(dst)))
			return
		}
		for i, d := range dst {
			v, err := strconv.ParseUint(string(f[i]), 10, 32)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				return
			}
			*d = uint32(v)
		}
	}
	read("ip_local_port_range", &s.low, &s.high)
	read("tcp_fin_timeout", &s.finTimeout)
	read("tcp_max_tw_buckets", &s.maxTwBuckets)
	read("tcp_tw_reuse", &s.twReuse)
	if len(errs) > 0 {
		return s, fmt.Errorf("reading port settings: %v", errs)
	}
	return s, nil
}

func (s portSettings) fill(dst *eventpb.Snapshot) {
	dst.PortRangeLow, dst.PortRangeHigh = s.low, s.high
	dst.FinTimeoutS, dst.MaxTwBuckets, dst.TwReuse = s.finTimeout, s.maxTwBuckets, s.twReuse
}

// readEndpoints dumps the kernel's TIME_WAIT and FIN_WAIT2 sockets into
// the tracker's groups, through the resyncer's dumper. p.mu is not held.
func (p *Probe) readEndpoints(finTimeoutS uint32) error {
	r := &p.rs
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dumper == nil {
		d, err := sockdiag.NewDumper()
		if err != nil {
			return err
		}
		r.dumper = d
	}
	err := p.endpoints.ReadKernel(r.dumper.DumpFunc, finTimeoutS)
	if err != nil {
		_ = r.dumper.Close() // reopened by the next dump
	}
	return err
}

var _ endpoints.Dump = (*sockdiag.Dumper)(nil).DumpFunc
