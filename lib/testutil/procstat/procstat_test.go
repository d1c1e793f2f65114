package procstat

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// This process's CPU time as /proc tells it agrees with getrusage's, to
// the clock tick, after burning some.
func TestCPUOfThisProcess(t *testing.T) {
	for x, start := 0, time.Now(); time.Since(start) < 50*time.Millisecond; x++ {
		_ = x * x
	}
	got, err := CPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	want := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if got < 40*time.Millisecond || got > want+20*time.Millisecond || got < want-20*time.Millisecond {
		t.Errorf("CPU = %s, getrusage says %s", got, want)
	}
	if _, err := CPU(-1); err == nil {
		t.Error("no error for pid -1")
	}
}
