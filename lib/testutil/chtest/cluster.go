package chtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/netpulse/netpulse/lib/testutil/priv"
	"github.com/netpulse/netpulse/lib/testutil/repofile"
)

// ErrZooKeeperNotInstalled means this machine cannot run ZooKeeper (no
// Java or no jars of Debian's zookeeper package).
var ErrZooKeeperNotInstalled = errors.New("no ZooKeeper installed (deploy/deps.sh installs Debian's zookeeper package)")

const (
	zkStartScript = "deploy/zookeeper/start.sh"
	// ClusterName is the cluster's name in remote_servers: what ON CLUSTER
	// and Distributed tables take.
	ClusterName = "netpulse"
)

// Cluster is a ClickHouse cluster of real servers on loopback: one ZooKeeper
// and one server per replica, each with its own directory, started by the
// project's start scripts. A node can be killed -9 and started again.
type Cluster struct {
	Name      string // in remote_servers; ClusterName
	Nodes     []*Node
	ZooKeeper string // host:port of its ZooKeeper
	zk        *zooKeeper
}

// Node is one ClickHouse server of a Cluster.
type Node struct {
	Shard, Replica int    // from 1
	Name           string // its {replica} macro: s<shard>r<replica>
	Addr           string // native protocol, host:port
	srv            *Server
	script         string
	dir            string
	port           int
	opts           Options
}

// StartCluster runs a cluster with one shard per argument, of that many
// replicas (StartCluster(t, 1, 2): shard 1 with one replica, shard 2 with
// two), and waits until every node answers, sees ZooKeeper and lists the
// whole cluster in system.clusters. Everything stops when t ends. Without
// ClickHouse or ZooKeeper installed t skips (see priv.Skip).
func StartCluster(t testing.TB, shards ...int) *Cluster {
	t.Helper()
	if len(shards) == 0 {
		t.Fatal("chtest.StartCluster: no shards")
	}
	for i, n := range shards {
		if n < 1 {
			t.Fatalf("chtest.StartCluster: shard %d has %d replicas", i+1, n)
		}
	}
	chScript, err := repofile.Find(startScript)
	if err != nil {
		t.Fatal(err)
	}
	zkScript, err := repofile.Find(zkStartScript)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	for try := 1; ; try++ {
		c, err := startCluster(filepath.Join(base, strconv.Itoa(try)), chScript, zkScript, shards)
		switch {
		case err == nil:
			t.Cleanup(func() {
				if err := c.stop(); err != nil {
					t.Error(err)
				}
			})
			return c
		case errors.Is(err, ErrNotInstalled), errors.Is(err, ErrZooKeeperNotInstalled):
			priv.Skip(t, err.Error())
		case !errors.Is(err, errPortTaken) || try == startTries:
			t.Fatal(err)
		}
	}
}

// startCluster starts the cluster under base, or stops what it started and
// says why not.
func startCluster(base, chScript, zkScript string, shards []int) (c *Cluster, err error) {
	replicas := 0
	for _, n := range shards {
		replicas += n
	}
	// All at once so that they differ: every server's config names them all.
	ports, err := freePortsN(1 + 2*replicas)
	if err != nil {
		return nil, err
	}
	c = &Cluster{Name: ClusterName}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	if c.zk, err = startZooKeeper(zkScript, filepath.Join(base, "zookeeper"), ports[0]); err != nil {
		return c, err
	}
	c.ZooKeeper = c.zk.addr

	var layout []string // NETPULSE_CH_SHARDS
	next := 1
	for s, n := range shards {
		var reps []string
		for r := range n {
			nd := &Node{Shard: s + 1, Replica: r + 1, script: chScript, port: ports[next]}
			nd.Name = fmt.Sprintf("s%dr%d", nd.Shard, nd.Replica)
			nd.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(nd.port))
			nd.dir = filepath.Join(base, nd.Name)
			nd.opts.env = []string{
				"NETPULSE_CH_SHARD=" + strconv.Itoa(nd.Shard),
				"NETPULSE_CH_REPLICA=" + nd.Name,
				"NETPULSE_CH_INTERSERVER_PORT=" + strconv.Itoa(ports[next+1]),
			}
			next += 2
			reps = append(reps, nd.Addr)
			c.Nodes = append(c.Nodes, nd)
		}
		layout = append(layout, strings.Join(reps, ","))
	}
	common := []string{
		"NETPULSE_CH_CLUSTER=" + c.Name,
		"NETPULSE_CH_SHARDS=" + strings.Join(layout, " "),
		"NETPULSE_CH_ZOOKEEPER=" + c.ZooKeeper,
	}
	for _, nd := range c.Nodes {
		nd.opts.env = append(nd.opts.env, common...)
	}

	// In parallel: each server takes a second or two to start.
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, nd := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = nd.start()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	for _, nd := range c.Nodes {
		if err := nd.waitCluster(c.Name, replicas); err != nil {
			return c, err
		}
	}
	return c, nil
}

// Node returns the node of shard and replica (from 1), nil if none.
func (c *Cluster) Node(shard, replica int) *Node {
	for _, nd := range c.Nodes {
		if nd.Shard == shard && nd.Replica == replica {
			return nd
		}
	}
	return nil
}

// Addrs lists every node's native address, in shard then replica order.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, nd := range c.Nodes {
		addrs[i] = nd.Addr
	}
	return addrs
}

// stop ends every server, then ZooKeeper (which they would otherwise keep
// trying to reach while shutting down).
func (c *Cluster) stop() error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, nd := range c.Nodes {
		if nd.srv == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = nd.srv.stop()
		}()
	}
	wg.Wait()
	if c.zk != nil {
		errs = append(errs, c.zk.stop())
	}
	return errors.Join(errs...)
}

func (nd *Node) start() error {
	if err := os.MkdirAll(nd.dir, 0o755); err != nil {
		return fmt.Errorf("%s: %w", nd.Name, err)
	}
	srv, err := startOn(nd.script, nd.dir, nd.port, 0, nd.opts)
	if err != nil {
		return fmt.Errorf("%s: %w", nd.Name, err)
	}
	nd.srv = srv
	return nil
}

// Kill ends the node's server with SIGKILL, as a crash does, and waits for
// it; its data stays for Start.
func (nd *Node) Kill() {
	if nd.srv != nil {
		nd.srv.kill()
	}
}

// Start starts a killed node again, on the same directory and port, and
// waits until it answers.
func (nd *Node) Start() error {
	if nd.srv != nil {
		select {
		case <-nd.srv.exited:
		default:
			return fmt.Errorf("%s is running", nd.Name)
		}
	}
	return nd.start()
}

// Conn opens an admin connection (user default, database default) to the
// node, closed when t ends.
func (nd *Node) Conn(t testing.TB) driver.Conn {
	t.Helper()
	if nd.srv == nil {
		t.Fatalf("chtest: %s never started", nd.Name)
	}
	return nd.srv.Conn(t, "")
}

// Log is the tail of the node's server output and error log.
func (nd *Node) Log() string {
	if nd.srv == nil {
		return ""
	}
	return nd.srv.logTail()
}

// waitCluster waits until the node sees ZooKeeper and its system.clusters
// has all replicas of cluster.
func (nd *Node) waitCluster(cluster string, replicas int) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	var last error
	for {
		var n, zk uint64
		last = nd.srv.admin.QueryRow(ctx, "SELECT count() FROM system.clusters WHERE cluster = ?", cluster).Scan(&n)
		if last == nil && n != uint64(replicas) {
			last = fmt.Errorf("system.clusters lists %d replicas of %s, want %d", n, cluster, replicas)
		}
		if last == nil {
			// A session with ZooKeeper: replicated tables and ON CLUSTER work.
			last = nd.srv.admin.QueryRow(ctx, "SELECT count() FROM system.zookeeper WHERE path = '/'").Scan(&zk)
		}
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not in cluster %s after %v: %v%s", nd.Name, cluster, readyTimeout, last, nd.Log())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// zooKeeper is a ZooKeeper server run by deploy/zookeeper/start.sh.
type zooKeeper struct {
	addr   string
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
}

func startZooKeeper(script, dir string, port int) (*zooKeeper, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("zookeeper dir: %w", err)
	}
	out, err := os.OpenFile(filepath.Join(dir, "start.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("zookeeper output file: %w", err)
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command("bash", script, dir, strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = out, out
	z := &zooKeeper{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, cmd: cmd}
	if z.exited, err = startProcess(cmd); err != nil {
		return nil, fmt.Errorf("run %s: %w", script, err)
	}
	if err := z.waitReady(); err != nil {
		z.stop()
		return nil, err
	}
	return z, nil
}

// waitReady polls with ZooKeeper's srvr until it serves, exits or the
// deadline passes.
func (z *zooKeeper) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		if last = z.serving(); last == nil {
			return nil
		}
		select {
		case <-z.exited:
			return z.exitError()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("zookeeper on %s not ready after %v (last: %v)%s", z.addr, readyTimeout, last, z.logTail())
		}
	}
}

// serving asks srvr for the server's mode. Not ruok: that answers imok
// while the server still closes sessions' handshakes, and 18.16's DDL worker
// dies on a segfault when its first connection fails.
func (z *zooKeeper) serving() error {
	conn, err := net.DialTimeout("tcp", z.addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, "srvr"); err != nil {
		return err
	}
	reply, err := io.ReadAll(conn)
	if err != nil {
		return err
	}
	if !strings.Contains(string(reply), "\nMode: ") {
		return fmt.Errorf("srvr answered %q", reply)
	}
	return nil
}

var zkAddrInUse = regexp.MustCompile(`(?i)address already in use`)

func (z *zooKeeper) exitError() error {
	code := z.cmd.ProcessState.ExitCode()
	out, _ := os.ReadFile(filepath.Join(z.dir, "start.out"))
	switch {
	case code == exitNotInstalled:
		return fmt.Errorf("%w: %s", ErrZooKeeperNotInstalled, strings.TrimSpace(string(lastLines(out, 3))))
	case zkAddrInUse.Match(out):
		return fmt.Errorf("zookeeper on %s: %w%s", z.addr, errPortTaken, z.logTail())
	}
	return fmt.Errorf("zookeeper on %s exited with status %d before it was ready%s", z.addr, code, z.logTail())
}

func (z *zooKeeper) logTail() string {
	out, _ := os.ReadFile(filepath.Join(z.dir, "start.out"))
	return fmt.Sprintf("\n--- zookeeper start.out (tail) ---\n%s", lastLines(out, 20))
}

// stop ends ZooKeeper with SIGTERM (SIGKILL after stopTimeout). The JVM
// exits 143 on SIGTERM: that is a clean stop too.
func (z *zooKeeper) stop() error {
	select {
	case <-z.exited:
		return nil
	default:
	}
	z.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-z.exited:
	case <-time.After(stopTimeout):
		z.cmd.Process.Kill()
		<-z.exited
		return fmt.Errorf("zookeeper on %s ignored SIGTERM for %v; killed%s", z.addr, stopTimeout, z.logTail())
	}
	if code := z.cmd.ProcessState.ExitCode(); code != 0 && code != 143 {
		return fmt.Errorf("zookeeper on %s exited with status %d on SIGTERM%s", z.addr, code, z.logTail())
	}
	return nil
}

// freePortsN finds n distinct free loopback ports: each listener stays open
// until all are picked.
func freePortsN(n int) ([]int, error) {
	ports := make([]int, n)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}
