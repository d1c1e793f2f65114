package sockdiag

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Owner is the process holding a socket open.
type Owner struct {
	PID  uint32 // thread-group id
	Comm string
	// CgroupID is the inode number of the process's cgroup v2 directory:
	// the value bpf_get_current_cgroup_id() returns in its context (a test
	// checks this with a BPF program). 0 when unknown.
	CgroupID uint64
	// Procs is the number of processes holding the socket (more than one
	// after fork or SCM_RIGHTS).
	Procs uint32
}

// OwnerStats says how complete an Owners scan was.
type OwnerStats struct {
	Processes int // processes whose descriptor tables were read
	Sockets   int // distinct socket inodes found
	Shared    int // sockets held by more than one process
	// Processes left out: exited during the scan, or not ours to read
	// (scanning others' descriptors needs root, or CAP_DAC_READ_SEARCH to
	// list them and CAP_SYS_PTRACE to read them).
	Vanished int
	Denied   int
	// Failed: processes left out for any other error (the first one is in
	// FirstError).
	Failed     int
	FirstError error
	// NoCgroup counts owners whose cgroup id is unknown (no cgroup v2 line,
	// or no cgroup2 mount was found).
	NoCgroup int
}

// OwnerScanner maps socket inodes to their owning processes by reading
// /proc/<pid>/fd, like `ss -p`. Its buffers are reused from scan to scan;
// it is not safe for concurrent use. The zero value is ready to use.
type OwnerScanner struct {
	// procRoot is where procfs is mounted; "/proc" when empty. Only tests
	// set the two roots, to fake trees.
	procRoot string
	// cgroupRoot is where the cgroup v2 hierarchy is mounted; when empty,
	// /sys/fs/cgroup or, on hybrid hosts, /sys/fs/cgroup/unified.
	// /proc/<pid>/cgroup paths are relative to it (and to the reader's
	// cgroup namespace: run the probe in the host's).
	cgroupRoot string

	root string // the cgroup2 mount in use during a scan

	dirBuf   []byte // getdents of /proc
	fdBuf    []byte // getdents of /proc/<pid>/fd
	fileBuf  []byte // comm and cgroup files
	link     []byte // readlink target
	name     []byte // NUL-terminated path relative to procRoot
	cgroupID map[string]uint64
	// inodes of the process being scanned: a process holding one socket
	// twice (dup) counts once in Procs.
	mine map[uint64]struct{}
	// want, during ScanInodes: the inodes to find, nil for all.
	want map[uint64]struct{}
}

// Owners scans every process with a fresh OwnerScanner.
func Owners() (map[uint64]Owner, OwnerStats, error) {
	var s OwnerScanner
	owners := make(map[uint64]Owner)
	st, err := s.Scan(owners)
	return owners, st, err
}

// Scan clears dst and fills it with an entry for every socket inode some
// process holds.
//
// When several processes hold one socket, the lowest pid owns it. That is
// deterministic whatever order /proc lists processes in, and in the usual
// case, a server forking workers that inherit its listening socket, it
// names the long-lived parent rather than one worker among many that come
// and go; comm and cgroup are mostly the same anyway. A socket only a worker
// holds (an accepted connection) is owned by that worker. Procs says how
// many processes share it.
//
// Threads are not scanned on their own: /proc lists only thread-group
// leaders and threads share their leader's descriptor table. Processes that
// exit during the scan or whose descriptors may not be read are counted in
// the stats and left out; only failing to read /proc itself is an error.
func (s *OwnerScanner) Scan(dst map[uint64]Owner) (OwnerStats, error) {
	var st OwnerStats
	s.init()
	procRoot := s.procRoot
	if procRoot == "" {
		procRoot = "/proc"
	}
	procFd, err := unix.Open(procRoot, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return st, fmt.Errorf("sockdiag: open %s: %w", procRoot, err)
	}
	defer unix.Close(procFd)
	cgroupOK := s.resolveCgroupRoot()
	clear(s.cgroupID) // a cgroup path can be removed and made again with a new inode
	clear(dst)

	for {
		n, err := unix.Getdents(procFd, s.dirBuf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return st, fmt.Errorf("sockdiag: read %s: %w", procRoot, err)
		}
		if n == 0 {
			break
		}
		for rest := s.dirBuf[:n]; len(rest) > 0; {
			var name []byte
			name, rest = nextDirent(rest)
			pid, ok := parsePID(name)
			if !ok {
				continue
			}
			s.scanProcess(procFd, pid, dst, &st, cgroupOK)
		}
		if s.want != nil && len(dst) == len(s.want) {
			break // all found
		}
	}
	st.Sockets = len(dst)
	for _, o := range dst {
		if o.Procs > 1 {
			st.Shared++
		}
		if o.CgroupID == 0 {
			st.NoCgroup++
		}
	}
	return st, nil
}

// ScanInodes is Scan for the given socket inodes only: dst holds no more
// entries than want, however many sockets the host has. It stops once all
// are found; /proc lists processes by ascending pid, so the owner found
// first is the lowest pid, as with Scan (Procs may then count fewer
// holders).
func (s *OwnerScanner) ScanInodes(dst map[uint64]Owner, want map[uint64]struct{}) (OwnerStats, error) {
	if len(want) == 0 {
		clear(dst)
		return OwnerStats{}, nil
	}
	s.want = want
	defer func() { s.want = nil }()
	return s.Scan(dst)
}

func (s *OwnerScanner) init() {
	if s.dirBuf == nil {
		s.dirBuf = make([]byte, 32<<10)
		s.fdBuf = make([]byte, 32<<10)
		s.fileBuf = make([]byte, 8<<10)
		s.link = make([]byte, 256)
		s.name = make([]byte, 0, 64)
		s.cgroupID = make(map[string]uint64)
		s.mine = make(map[uint64]struct{})
	}
}

// scanProcess adds the sockets of process pid to dst.
func (s *OwnerScanner) scanProcess(procFd int, pid uint32, dst map[uint64]Owner, st *OwnerStats, cgroupOK bool) {
	fdDir, err := openat(procFd, s.procPath(pid, "fd"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		st.count(err)
		return
	}
	defer unix.Close(fdDir)

	var self Owner // this process as an owner, read once it owns something
	loaded := false
	clear(s.mine)
	for {
		n, err := unix.Getdents(fdDir, s.fdBuf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// The process exited or exec'd to something we may not read.
			st.count(err)
			return
		}
		if n == 0 {
			break
		}
		for rest := s.fdBuf[:n]; len(rest) > 0; {
			var name []byte
			name, rest = nextDirent(rest)
			if len(name) == 0 || name[0] == '.' {
				continue
			}
			// name is NUL-terminated in fdBuf: readlinkat can use it in place.
			l, err := readlinkat(fdDir, name[:len(name)+1], s.link)
			if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
				// Reading a link is a ptrace access check (CAP_SYS_PTRACE
				// for another user's process), even where listing the
				// directory was allowed: count the process, do not drop it
				// silently.
				st.Denied++
				return
			}
			if err != nil {
				continue // closed since getdents
			}
			inode, ok := socketInode(s.link[:l])
			if !ok {
				continue
			}
			if s.want != nil {
				if _, ok := s.want[inode]; !ok {
					continue
				}
			}
			if _, dup := s.mine[inode]; dup {
				continue
			}
			s.mine[inode] = struct{}{}
			o, seen := dst[inode]
			if seen && o.PID <= pid {
				o.Procs++
				dst[inode] = o
				continue
			}
			if !loaded {
				self = s.readOwner(procFd, pid, cgroupOK)
				loaded = true
			}
			procs := o.Procs + 1
			o = self
			o.Procs = procs
			dst[inode] = o
		}
	}
	st.Processes++
}

func (st *OwnerStats) count(err error) {
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ESRCH):
		st.Vanished++
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		st.Denied++
	default:
		st.Failed++
		if st.FirstError == nil {
			st.FirstError = err
		}
	}
}

// readOwner reads comm and the cgroup v2 id of pid. A process that exits
// meanwhile gets an empty comm and cgroup id 0.
func (s *OwnerScanner) readOwner(procFd int, pid uint32, cgroupOK bool) Owner {
	o := Owner{PID: pid}
	if b, err := s.readFile(procFd, s.procPath(pid, "comm")); err == nil {
		o.Comm = string(bytes.TrimSuffix(b, []byte{'\n'}))
	}
	if !cgroupOK {
		return o
	}
	b, err := s.readFile(procFd, s.procPath(pid, "cgroup"))
	if err != nil {
		return o
	}
	path, ok := unifiedCgroupPath(b)
	if !ok {
		return o
	}
	if id, ok := s.cgroupID[string(path)]; ok {
		o.CgroupID = id
		return o
	}
	var stat unix.Stat_t
	if err := unix.Stat(s.root+string(path), &stat); err == nil {
		o.CgroupID = stat.Ino
		s.cgroupID[string(path)] = stat.Ino
	}
	return o
}

// resolveCgroupRoot picks the cgroup v2 mount: cgroupRoot when set, else
// the first cgroup2 mount of systemd's unified (/sys/fs/cgroup) or hybrid
// (/sys/fs/cgroup/unified) layout. Only on cgroup2 are directory inode
// numbers cgroup ids.
func (s *OwnerScanner) resolveCgroupRoot() bool {
	candidates := []string{s.cgroupRoot}
	if s.cgroupRoot == "" {
		candidates = []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}
	}
	for _, root := range candidates {
		var fs unix.Statfs_t
		if unix.Statfs(root, &fs) == nil && fs.Type == unix.CGROUP2_SUPER_MAGIC {
			s.root = root
			return true
		}
	}
	s.root = ""
	return false
}

// unifiedCgroupPath finds the cgroup v2 line ("0::/path") of a
// /proc/<pid>/cgroup file.
func unifiedCgroupPath(b []byte) ([]byte, bool) {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if p, ok := bytes.CutPrefix(line, []byte("0::")); ok && len(p) > 0 && p[0] == '/' {
			return p, true
		}
	}
	return nil, false
}

// socketInode parses a descriptor's link target "socket:[12345]".
func socketInode(link []byte) (uint64, bool) {
	p, ok := bytes.CutPrefix(link, []byte("socket:["))
	if !ok || len(p) < 2 || p[len(p)-1] != ']' {
		return 0, false
	}
	var ino uint64
	for _, c := range p[:len(p)-1] {
		if c < '0' || c > '9' || ino > (1<<64-1)/10-1 {
			return 0, false
		}
		ino = ino*10 + uint64(c-'0')
	}
	return ino, true
}

func parsePID(name []byte) (uint32, bool) {
	if len(name) == 0 || len(name) > 10 {
		return 0, false
	}
	var pid uint64
	for _, c := range name {
		if c < '0' || c > '9' {
			return 0, false
		}
		pid = pid*10 + uint64(c-'0')
	}
	if pid == 0 || pid > 1<<32-1 {
		return 0, false
	}
	return uint32(pid), true
}

// procPath returns "<pid>/<file>" NUL-terminated, in a reused buffer.
func (s *OwnerScanner) procPath(pid uint32, file string) []byte {
	s.name = strconv.AppendUint(s.name[:0], uint64(pid), 10)
	s.name = append(s.name, '/')
	s.name = append(s.name, file...)
	return append(s.name, 0)
}

// readFile reads a small file relative to dirfd into fileBuf.
func (s *OwnerScanner) readFile(dirfd int, name []byte) ([]byte, error) {
	fd, err := openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	n := 0
	for n < len(s.fileBuf) {
		m, err := unix.Read(fd, s.fileBuf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return s.fileBuf[:n], nil
}

// nextDirent splits the first struct linux_dirent64 off b and returns its
// name, which is followed by a NUL in b. A record that does not fit ends
// the walk.
func nextDirent(b []byte) (name, rest []byte) {
	const nameOff = 19 // d_ino 8, d_off 8, d_reclen 2, d_type 1
	if len(b) < nameOff {
		return nil, nil
	}
	reclen := int(binary.NativeEndian.Uint16(b[16:18]))
	if reclen <= nameOff || reclen > len(b) {
		return nil, nil
	}
	rec := b[nameOff:reclen]
	if i := bytes.IndexByte(rec, 0); i >= 0 {
		return rec[:i], b[reclen:]
	}
	return nil, b[reclen:]
}

// openat and readlinkat take NUL-terminated names from reused buffers: the
// unix package's string versions allocate a copy per call, once per
// descriptor of every process.
func openat(dirfd int, name []byte, flags int) (int, error) {
	fd, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])), uintptr(flags), 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

func readlinkat(dirfd int, name, buf []byte) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_READLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
