package natstest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary is a real nats-server binary, built once per test process from the
// nats-server module the calling test's module requires.
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "netpulse-nats-server-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "nats-server")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("build nats-server: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// Cluster is a JetStream cluster of real nats-server processes on loopback,
// each with its own store in a temp folder: a node can be killed -9 and
// started again.
type Cluster struct {
	t     testing.TB
	Nodes []*Node
}

// Node is one server of a Cluster.
type Node struct {
	Name      string
	ClientURL string
	conf      string
	bin       string
	cmd       *exec.Cmd
	done      chan struct{}
	log       string
}

// StartCluster runs n nodes and waits until JetStream answers on every
// one; they are killed when t ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	clientPorts, routePorts := freePorts(t, n), freePorts(t, n)
	routes := make([]string, n)
	for i, p := range routePorts {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	c := &Cluster{t: t}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		conf := filepath.Join(dir, name+".conf")
		body := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
max_payload: 1MB
jetstream { store_dir: %q }
cluster {
  name: netpulse-test
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, name, clientPorts[i], filepath.Join(dir, name), routePorts[i], strings.Join(routes, ", "))
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		nd := &Node{Name: name, ClientURL: fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]), conf: conf, bin: bin,
			log: filepath.Join(dir, name+".log")}
		c.Nodes = append(c.Nodes, nd)
	}
	for _, nd := range c.Nodes {
		if err := nd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nd.Kill)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, nd := range c.Nodes {
		if err := nd.WaitJetStream(ctx); err != nil {
			t.Fatalf("%s: %v\n%s", nd.Name, err, nd.Log())
		}
	}
	return c
}

// URLs lists every node's client URL, comma-separated: what nats.url takes.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, nd := range c.Nodes {
		urls[i] = nd.ClientURL
	}
	return strings.Join(urls, ",")
}

// Node returns the node called name, nil if none.
func (c *Cluster) Node(name string) *Node {
	for _, nd := range c.Nodes {
		if nd.Name == name {
			return nd
		}
	}
	return nil
}

// StreamLeader is the node that leads stream now. A stream between
// leaders does not answer: each call gives up after 2 s.
func (c *Cluster) StreamLeader(ctx context.Context, stream string) (*Node, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	nc, err := nats.Connect(c.URLs(), nats.Timeout(time.Second))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	if info.Cluster == nil || c.Node(info.Cluster.Leader) == nil {
		return nil, fmt.Errorf("stream %s has no leader among the nodes (cluster info %+v)", stream, info.Cluster)
	}
	return c.Node(info.Cluster.Leader), nil
}

// Start runs the node's server process.
func (nd *Node) Start() error {
	logf, err := os.OpenFile(nd.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(nd.bin, "-c", nd.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A test binary killed by its timeout runs no cleanup: the server dies
	// with it instead of staying on as a stranger's traffic.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", nd.Name, err)
	}
	nd.cmd, nd.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(nd.done) }()
	return nil
}

// Kill stops the node with SIGKILL, as a crash does, and waits for it.
func (nd *Node) Kill() {
	if nd.cmd == nil {
		return
	}
	select {
	case <-nd.done:
	default:
		_ = nd.cmd.Process.Signal(syscall.SIGKILL)
		<-nd.done
	}
}

// WaitJetStream waits until the node answers JetStream requests (the
// cluster has a meta leader).
func (nd *Node) WaitJetStream(ctx context.Context) error {
	var last error
	for {
		select {
		case <-nd.done:
			return fmt.Errorf("nats-server exited")
		default:
		}
		if nc, err := nats.Connect(nd.ClientURL, nats.Timeout(time.Second)); err != nil {
			last = err
		} else {
			js, _ := jetstream.New(nc)
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, last = js.AccountInfo(actx)
			cancel()
			nc.Close()
			if last == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("JetStream not ready: %v (last error: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Log is what the node's server wrote so far.
func (nd *Node) Log() string {
	b, _ := os.ReadFile(nd.log)
	return string(b)
}

// freePorts finds n free loopback ports (the kernel's choice; closed again
// before the servers take them).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	var lns []net.Listener
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}
