package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// tcpCounters are the host's TCP segment counters since boot.
type tcpCounters struct {
	OutSegs, RetransSegs uint64
}

// readTCPCounters reads OutSegs and RetransSegs from /proc/net/snmp (the
// "Tcp:" header line names the columns of the "Tcp:" line after it).
func readTCPCounters(path string) (tcpCounters, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return tcpCounters{}, err
	}
	return parseTCPCounters(data)
}

func parseTCPCounters(data []byte) (tcpCounters, error) {
	var header []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "Tcp:" {
			continue
		}
		if header == nil {
			header = fields
			continue
		}
		if len(fields) != len(header) {
			return tcpCounters{}, fmt.Errorf("snmp: Tcp lines have %d and %d columns", len(header), len(fields))
		}
		var c tcpCounters
		found := 0
		for i, name := range header {
			var dst *uint64
			switch name {
			case "OutSegs":
				dst = &c.OutSegs
			case "RetransSegs":
				dst = &c.RetransSegs
			default:
				continue
			}
			v, err := strconv.ParseUint(fields[i], 10, 64)
			if err != nil {
				return tcpCounters{}, fmt.Errorf("snmp: Tcp %s: %w", name, err)
			}
			*dst = v
			found++
		}
		if found != 2 {
			return tcpCounters{}, fmt.Errorf("snmp: Tcp lines lack OutSegs or RetransSegs")
		}
		return c, nil
	}
	return tcpCounters{}, fmt.Errorf("snmp: no Tcp lines")
}
