package chtest

import "syscall"

// A test binary that dies without running TestMain's Close (a panic, a
// timeout) takes its server with it. start.sh execs the server, so the
// signal reaches clickhouse-server itself.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
