package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the services built once per test run.
var binDir string

// buildServices compiles the real binaries, as `make build` would.
func buildServices() (string, error) {
	dir, err := os.MkdirTemp("", "netpulse-e2e-bin-")
	if err != nil {
		return "", err
	}
	for _, svc := range []string{"probe", "sink", "detector"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "netpulse-"+svc), "github.com/netpulse/netpulse/services/"+svc+"/cmd/"+svc)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build %s: %v\n%s", svc, err, out)
		}
	}
	return dir, nil
}

// proc is one running service binary whose log lines the test can wait for.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu    sync.Mutex
	lines []string
	wake  chan struct{}
}

// start runs bin/netpulse-<svc> with args; its stderr goes to the test log
// (on failure) and is searchable with waitLog.
func start(t testing.TB, svc string, args ...string) *proc {
	t.Helper()
	// Metrics on a free port: tests run several instances of a service.
	args = append([]string{"--metrics.addr=127.0.0.1:0"}, args...)
	cmd := exec.Command(filepath.Join(binDir, "netpulse-"+svc), args...)
	cmd.Env = append(os.Environ(), "NETPULSE_CONFIG=/dev/null")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", svc, err)
	}
	p := &proc{t: t, name: svc, cmd: cmd, done: make(chan struct{}), wake: make(chan struct{})}
	go p.scan(stderr)
	t.Cleanup(func() { p.kill(syscall.SIGKILL) })
	return p
}

func (p *proc) scan(r io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.mu.Lock()
		p.lines = append(p.lines, sc.Text())
		close(p.wake)
		p.wake = make(chan struct{})
		p.mu.Unlock()
	}
	_ = p.cmd.Wait()
}

// waitLog waits for a log line containing substr.
func (p *proc) waitLog(ctx context.Context, substr string) {
	p.t.Helper()
	p.waitLine(ctx, substr, func(line string) bool { return strings.Contains(line, substr) })
}

// waitLine waits for a log line for which match is true.
func (p *proc) waitLine(ctx context.Context, what string, match func(string) bool) {
	p.t.Helper()
	for seen := 0; ; {
		p.mu.Lock()
		lines, wake := p.lines[seen:], p.wake
		p.mu.Unlock()
		for _, line := range lines {
			if match(line) {
				return
			}
		}
		seen += len(lines)
		select {
		case <-wake:
		case <-p.done:
			p.t.Fatalf("%s exited before logging %q:\n%s", p.name, what, p.log())
		case <-ctx.Done():
			p.t.Fatalf("%s did not log %q: %v\n%s", p.name, what, ctx.Err(), p.log())
		}
	}
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("%s did not stop within 30 s of SIGTERM:\n%s", p.name, p.log())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		p.t.Errorf("%s exited with %d:\n%s", p.name, code, p.log())
	}
}

func (p *proc) kill(sig syscall.Signal) {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(sig)
		<-p.done
	}
}
