// Package chtest runs a real ClickHouse server for a package's tests.
//
// One server per test package, started from TestMain by the project's own
// deploy/clickhouse/start.sh (so the tests also prove the script and its
// config template), on a free loopback port with every file in a temp dir.
// Each test gets its own database:
//
//	var srv *chtest.Server
//
//	func TestMain(m *testing.M) { chtest.Main(m, &srv) }
//
//	func TestX(t *testing.T) {
//		db := srv.NewDatabase(t)
//		conn := srv.Conn(t, db)
//		...
//	}
//
// StartCluster runs a whole cluster for one test instead: a ZooKeeper and a
// server per replica (cluster.go).
//
// Without a ClickHouse binary the tests skip with that reason (see
// priv.Skip: under NETPULSE_REQUIRE_PRIVILEGED=1 they fail instead).
package chtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/netpulse/netpulse/lib/testutil/priv"
	"github.com/netpulse/netpulse/lib/testutil/repofile"
)

// ErrNotInstalled means this machine has no ClickHouse server binary.
var ErrNotInstalled = errors.New("no ClickHouse server installed (deploy/clickhouse/install.sh installs one)")

const (
	startScript = "deploy/clickhouse/start.sh"
	// Exit statuses of start.sh.
	exitUsage        = 64
	exitNotInstalled = 69

	readyTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
	startTries   = 3 // a picked free port can be taken before the server binds it
)

// Server is a running ClickHouse server, or the reason there is none.
type Server struct {
	addr       string
	secureAddr string // with Options.TLS
	opts       Options
	dir        string
	cmd        *exec.Cmd
	exited     chan struct{} // closed when cmd has been waited for
	admin      driver.Conn   // creates and drops the tests' databases

	unavailable string // why tests using this server skip
}

// Main starts a server, stores it in *srv, runs the tests, stops the server
// and exits. Call it from TestMain. When no ClickHouse is installed *srv is a
// Server whose methods skip the calling test with that reason; any other
// start failure ends the run.
func Main(m *testing.M, srv **Server) {
	s, err := Start()
	switch {
	case errors.Is(err, ErrNotInstalled):
		s = &Server{unavailable: err.Error()}
	case err != nil:
		fmt.Fprintf(os.Stderr, "chtest: %v\n", err)
		os.Exit(1)
	}
	*srv = s
	code := m.Run()
	if err := s.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "chtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// Options add to a test server what Start leaves out.
type Options struct {
	// TLS opens the secure native port too, from
	// deploy/clickhouse/tls.xml.tmpl rendered into config.d/.
	TLS *TLS
	// UsersFiles are written into users.d/ (file name: content), users.xml
	// style: more users next to the passwordless default one.
	UsersFiles map[string]string

	env []string // for start.sh: a cluster server's NETPULSE_CH_* (see cluster.go)
}

// TLS is the server side of the secure native port.
type TLS struct {
	CertFile, KeyFile string
	// ClientCAFile, when set, makes clients present a certificate signed
	// by it (verificationMode strict); else any client may connect.
	ClientCAFile string
}

// Start runs a server in a new temp dir and waits until it answers a ping.
// The caller must Close it. The error wraps ErrNotInstalled when there is no
// ClickHouse binary.
func Start() (*Server, error) { return startWith(Options{}) }

// StartWith is Start with the secure port and users of opts. Without a
// ClickHouse binary it returns a Server that skips its callers, as Main
// does, rather than an error.
func StartWith(opts Options) (*Server, error) {
	s, err := startWith(opts)
	if errors.Is(err, ErrNotInstalled) {
		return &Server{unavailable: err.Error()}, nil
	}
	return s, err
}

func startWith(opts Options) (*Server, error) {
	script, err := repofile.Find(startScript)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "chtest-")
	if err != nil {
		return nil, fmt.Errorf("clickhouse temp dir: %w", err)
	}
	for try := 1; ; try++ {
		s, err := start(script, dir, opts)
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, errPortTaken) || try == startTries {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

var errPortTaken = errors.New("port taken")

func start(script, dir string, opts Options) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	securePort := 0
	if opts.TLS != nil {
		if securePort, err = freePort(); err != nil {
			return nil, err
		}
	}
	return startOn(script, dir, port, securePort, opts)
}

// startOn runs the server on dir and port (and securePort, with opts.TLS).
func startOn(script, dir string, port, securePort int, opts Options) (*Server, error) {
	if err := writeExtraConfig(script, dir, securePort, opts); err != nil {
		return nil, err
	}
	out, err := os.OpenFile(filepath.Join(dir, "start.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("clickhouse output file: %w", err)
	}
	defer out.Close() // the child has its own copy
	// A previous try's "address in use" must not decide this one.
	os.Remove(filepath.Join(dir, "log", "clickhouse-server.err.log"))

	cmd := exec.Command("bash", script, dir, strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = out, out
	if len(opts.env) > 0 {
		cmd.Env = append(os.Environ(), opts.env...)
	}
	s := &Server{
		addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		opts: opts,
		dir:  dir,
		cmd:  cmd,
	}
	if s.exited, err = startProcess(cmd); err != nil {
		return nil, fmt.Errorf("run %s: %w", script, err)
	}
	if securePort != 0 {
		s.secureAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(securePort))
	}
	if err := s.waitReady(); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// startProcess starts cmd so that it dies with the test process, and
// returns a channel closed once it has exited and been waited for.
func startProcess(cmd *exec.Cmd) (exited chan struct{}, err error) {
	cmd.SysProcAttr = sysProcAttr()
	exited = make(chan struct{})
	started := make(chan error)
	go func() {
		// Pdeathsig fires when the starting thread exits, not the process:
		// keep this goroutine on that thread until the child is gone.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(exited)
		err := cmd.Start()
		started <- err
		if err == nil {
			cmd.Wait()
		}
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return exited, nil
}

// writeExtraConfig writes what opts add: config.d/tls.xml from the
// template next to script, users.d/ files. start.sh leaves both alone, and
// the server merges them into config.xml and users.xml.
func writeExtraConfig(script, dir string, securePort int, opts Options) error {
	if opts.TLS != nil {
		tmpl, err := os.ReadFile(filepath.Join(filepath.Dir(script), "tls.xml.tmpl"))
		if err != nil {
			return fmt.Errorf("clickhouse TLS config: %w", err)
		}
		mode, ca := "none", opts.TLS.ClientCAFile
		if ca != "" {
			mode = "strict"
		}
		conf := strings.NewReplacer("@TCP_PORT_SECURE@", strconv.Itoa(securePort), "@CERT_FILE@", opts.TLS.CertFile,
			"@KEY_FILE@", opts.TLS.KeyFile, "@CA_FILE@", ca, "@VERIFICATION_MODE@", mode).Replace(string(tmpl))
		if err := writeUnder(dir, "config.d", "tls.xml", conf); err != nil {
			return err
		}
	}
	for name, content := range opts.UsersFiles {
		if err := writeUnder(dir, "users.d", name, content); err != nil {
			return err
		}
	}
	return nil
}

func writeUnder(dir, sub, name, content string) error {
	if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
		return fmt.Errorf("clickhouse %s: %w", sub, err)
	}
	if err := os.WriteFile(filepath.Join(dir, sub, name), []byte(content), 0o644); err != nil {
		return fmt.Errorf("clickhouse %s: %w", sub, err)
	}
	return nil
}

// waitReady polls with a ping until the server answers, exits or the
// deadline passes.
func (s *Server) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		conn, err := s.open("")
		if err == nil {
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			err = conn.Ping(pctx)
			pcancel()
			if err == nil {
				s.admin = conn
				return nil
			}
			conn.Close()
		}
		select {
		case <-s.exited:
			return s.exitError()
		case <-ctx.Done():
			return fmt.Errorf("clickhouse on %s not ready after %v (last ping: %v)%s", s.addr, readyTimeout, err, s.logTail())
		case <-tick.C:
		}
	}
}

var addrInUse = regexp.MustCompile(`(?i)address already in use`)

// exitError explains why the server process ended before it was ready.
func (s *Server) exitError() error {
	code := s.cmd.ProcessState.ExitCode()
	out, _ := os.ReadFile(filepath.Join(s.dir, "start.out"))
	msg := strings.TrimSpace(string(lastLines(out, 5)))
	switch code {
	case exitNotInstalled:
		return fmt.Errorf("%w: %s", ErrNotInstalled, msg)
	case exitUsage:
		return fmt.Errorf("clickhouse start.sh refused its arguments: %s", msg)
	}
	errLog, _ := os.ReadFile(filepath.Join(s.dir, "log", "clickhouse-server.err.log"))
	if addrInUse.Match(lastLines(errLog, 5)) {
		return fmt.Errorf("clickhouse on %s: %w%s", s.addr, errPortTaken, s.logTail())
	}
	return fmt.Errorf("clickhouse on %s exited with status %d before it was ready%s", s.addr, code, s.logTail())
}

// logTail is the end of the server's output and error log, for messages.
func (s *Server) logTail() string {
	var b strings.Builder
	for _, name := range []string{"start.out", "log/clickhouse-server.err.log"} {
		data, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil || len(data) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n--- %s (tail) ---\n%s", name, lastLines(data, 20))
	}
	return b.String()
}

func lastLines(data []byte, n int) []byte {
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	return bytes.Join(lines[max(0, len(lines)-n):], []byte("\n"))
}

// Addr is the server's native-protocol address (host:port); "" when there
// is no server.
func (s *Server) Addr() string {
	if s == nil {
		return ""
	}
	return s.addr
}

// SecureAddr is the secure native port's address (host:port); "" without
// Options.TLS or without a server.
func (s *Server) SecureAddr() string {
	if s == nil {
		return ""
	}
	return s.secureAddr
}

// Require skips (or fails, see priv.Skip) t when there is no server.
func (s *Server) Require(t testing.TB) {
	t.Helper()
	switch {
	case s == nil:
		t.Fatal("chtest: no server: call chtest.Main from TestMain")
	case s.unavailable != "":
		priv.Skip(t, s.unavailable)
	}
}

// Conn opens a native connection to database ("" = default), closed when t
// ends.
func (s *Server) Conn(t testing.TB, database string) driver.Conn {
	t.Helper()
	s.Require(t)
	conn, err := s.open(database)
	if err != nil {
		t.Fatalf("open clickhouse %s/%s: %v", s.addr, database, err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.Ping(context.Background()); err != nil {
		t.Fatalf("ping clickhouse %s/%s: %v", s.addr, database, err)
	}
	return conn
}

var dbSeq atomic.Uint64

// NewDatabase creates an empty database for t alone and drops it when t
// ends. The name is derived from the test's name.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	s.Require(t)
	name := fmt.Sprintf("t%d_%s", dbSeq.Add(1), nonIdent.ReplaceAllString(t.Name(), "_"))
	if len(name) > 60 {
		name = name[:60]
	}
	ctx := context.Background()
	if err := s.admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := s.admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return name
}

var nonIdent = regexp.MustCompile(`[^A-Za-z0-9_]+`)

// Close stops the server (SIGTERM, SIGKILL after a timeout) and removes its
// directory. Safe on a Server that never started.
func (s *Server) Close() error {
	if s == nil || s.cmd == nil {
		return nil
	}
	err := s.stop()
	if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
		err = fmt.Errorf("remove clickhouse dir: %w", rerr)
	}
	return err
}

// Stop stops the server but keeps its data, so that a test can see what
// its code does while ClickHouse is away, then Restart it.
func (s *Server) Stop() error { return s.stop() }

// Restart starts a stopped server again, on the same port and data.
func (s *Server) Restart() error {
	script, err := repofile.Find(startScript)
	if err != nil {
		return err
	}
	_, portStr, _ := net.SplitHostPort(s.addr)
	port, _ := strconv.Atoi(portStr)
	securePort := 0
	if s.secureAddr != "" {
		_, portStr, _ = net.SplitHostPort(s.secureAddr)
		securePort, _ = strconv.Atoi(portStr)
	}
	ns, err := startOn(script, s.dir, port, securePort, s.opts)
	if err != nil {
		return err
	}
	s.cmd, s.exited, s.admin = ns.cmd, ns.exited, ns.admin
	return nil
}

// kill ends the server with SIGKILL, as a crash does, and waits for it.
func (s *Server) kill() {
	if s.admin != nil {
		s.admin.Close()
		s.admin = nil
	}
	select {
	case <-s.exited:
	default:
		s.cmd.Process.Kill()
		<-s.exited
	}
}

func (s *Server) stop() error {
	if s.admin != nil {
		s.admin.Close()
		s.admin = nil
	}
	select {
	case <-s.exited:
		return nil // already gone; start reported why
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
		s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("clickhouse on %s ignored SIGTERM for %v; killed%s", s.addr, stopTimeout, s.logTail())
	}
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("clickhouse on %s exited with status %d on SIGTERM%s", s.addr, code, s.logTail())
	}
	return nil
}

func (s *Server) open(database string) (driver.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{
		Protocol:    clickhouse.Native, // HTTP fails on 18.16
		Addr:        []string{s.addr},
		Auth:        clickhouse.Auth{Database: database, Username: "default"},
		DialTimeout: 2 * time.Second,
	})
}

// freePort asks the kernel for a free loopback port. It is free only until
// someone else takes it, hence Start's retries.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
