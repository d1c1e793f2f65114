package e2e

import "syscall"

const (
	interruptSignal = syscall.SIGINT
	killSignal      = syscall.SIGKILL
)
