package tracer

import (
	"fmt"

	"golang.org/x/sys/unix"
)

const tracefsPath = "/sys/kernel/tracing"

// ensureTracefs mounts tracefs when neither of its usual places has it:
// attaching a tracepoint needs its id from there, and minimal hosts and
// containers often boot without it. It must run before the first
// link.Tracepoint, which caches a failed lookup for the process's life.
// It returns where tracefs is, so that missing tracepoints can be told
// from other attach failures.
func ensureTracefs() (string, error) {
	if p, ok := mountedTracefs(); ok {
		return p, nil
	}
	if err := unix.Mount("tracefs", tracefsPath, "tracefs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return "", fmt.Errorf("tracer: tracefs is not mounted and mounting it on %s failed (needs root or CAP_SYS_ADMIN; or run `mount -t tracefs tracefs %s` first): %w",
			tracefsPath, tracefsPath, err)
	}
	return tracefsPath, nil
}

// TracefsMounted reports whether tracefs is already mounted at one of its
// usual places, so that Open will not have to mount it (which needs
// CAP_SYS_ADMIN). Its mount point need not be readable: statfs only looks
// the path up.
func TracefsMounted() bool {
	_, ok := mountedTracefs()
	return ok
}

func mountedTracefs() (string, bool) {
	for _, p := range []string{tracefsPath, "/sys/kernel/debug/tracing"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && (st.Type == unix.TRACEFS_MAGIC || st.Type == unix.DEBUGFS_MAGIC) {
			return p, true
		}
	}
	return "", false
}
