package chtest

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var srv *Server

func TestMain(m *testing.M) { Main(m, &srv) }

func TestServerAnswers(t *testing.T) {
	conn := srv.Conn(t, "")
	var version string
	if err := conn.QueryRow(context.Background(), "SELECT version()").Scan(&version); err != nil {
		t.Fatalf("SELECT version(): %v", err)
	}
	if version == "" {
		t.Fatal("SELECT version() returned an empty string")
	}
	t.Logf("ClickHouse %s on %s", version, srv.Addr())
}

// The server runs from the config start.sh rendered: its data lives in the
// temp dir and it answers on loopback only.
func TestServerUsesRenderedConfig(t *testing.T) {
	db := srv.NewDatabase(t)
	conn := srv.Conn(t, db)
	ctx := context.Background()
	if err := conn.Exec(ctx, "CREATE TABLE t (x UInt8) ENGINE = MergeTree ORDER BY x"); err != nil {
		t.Fatal(err)
	}
	var path string
	if err := conn.QueryRow(ctx, "SELECT data_path FROM system.tables WHERE database = ? AND name = 't'", db).Scan(&path); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(path, srv.dir+"/data/") {
		t.Errorf("data_path = %q, want it under %s/data/", path, srv.dir)
	}

	_, port, _ := net.SplitHostPort(srv.Addr())
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ip, ok := a.(*net.IPNet)
		if !ok || ip.IP.IsLoopback() || ip.IP.IsLinkLocalUnicast() {
			continue
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip.IP.String(), port), time.Second)
		if err == nil {
			c.Close()
			t.Errorf("server answers on %s, want loopback only", ip.IP)
		}
	}
}

func TestNewDatabaseIsIsolatedAndDropped(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) {
		name = srv.NewDatabase(t)
		conn := srv.Conn(t, name)
		ctx := context.Background()
		if err := conn.Exec(ctx, "CREATE TABLE t (x UInt8) ENGINE = Memory"); err != nil {
			t.Fatalf("create table in %s: %v", name, err)
		}
		var db string
		if err := conn.QueryRow(ctx, "SELECT currentDatabase()").Scan(&db); err != nil {
			t.Fatal(err)
		}
		if db != name {
			t.Fatalf("currentDatabase() = %q, want %q", db, name)
		}
	})
	conn := srv.Conn(t, "")
	var n uint64
	err := conn.QueryRow(context.Background(), "SELECT count() FROM system.databases WHERE name = ?", name).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database %s still exists after its test ended", name)
	}
}

func TestUnavailableServerSkips(t *testing.T) {
	s := &Server{unavailable: ErrNotInstalled.Error()}
	if s.Addr() != "" {
		t.Fatalf("Addr() of an unavailable server = %q, want \"\"", s.Addr())
	}
	var skipped bool
	t.Run("inner", func(t *testing.T) {
		t.Setenv("NETPULSE_REQUIRE_PRIVILEGED", "")
		defer func() { skipped = t.Skipped() }()
		s.Require(t)
	})
	if !skipped {
		t.Fatal("Require on an unavailable server did not skip")
	}
}

func TestLastLines(t *testing.T) {
	got := string(lastLines([]byte("a\nb\nc\n"), 2))
	if got != "b\nc" {
		t.Fatalf("lastLines = %q, want %q", got, "b\nc")
	}
	for in, want := range map[string]string{"only": "only", "": "", "\n\n": "", "x\ny": "x\ny"} {
		if got := string(lastLines([]byte(in), 3)); got != want {
			t.Errorf("lastLines(%q, 3) = %q, want %q", in, got, want)
		}
	}
	if got := string(lastLines([]byte("a\nb\nc\nd"), 1)); got != "d" {
		t.Errorf("lastLines(a..d, 1) = %q, want %q", got, "d")
	}
}

// fakeScript stands in for start.sh to drive start's failure paths.
func fakeScript(t *testing.T, body string) (script, dir string) {
	t.Helper()
	dir = t.TempDir()
	script = filepath.Join(t.TempDir(), "start.sh")
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, dir
}

func TestStartFailures(t *testing.T) {
	tests := []struct {
		name, script string
		check        func(error) bool
		want         string
	}{
		{
			name:   "not installed",
			script: "echo 'start.sh: no ClickHouse server binary' >&2; exit 69",
			check:  func(err error) bool { return errors.Is(err, ErrNotInstalled) },
			want:   "no ClickHouse server binary",
		},
		{
			name:   "port taken",
			script: `mkdir -p "$1/log"; echo '<Error> Application: Net Exception: Address already in use: 127.0.0.1:1' > "$1/log/clickhouse-server.err.log"; exit 70`,
			check:  func(err error) bool { return errors.Is(err, errPortTaken) },
		},
		{
			name:   "crash reports the log tail",
			script: `mkdir -p "$1/log"; echo 'Code: 999 something broke' > "$1/log/clickhouse-server.err.log"; exit 70`,
			check:  func(err error) bool { return !errors.Is(err, ErrNotInstalled) && !errors.Is(err, errPortTaken) },
			want:   "Code: 999 something broke",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			script, dir := fakeScript(t, tt.script)
			s, err := start(script, dir, Options{})
			if err == nil {
				s.Close()
				t.Fatal("start succeeded, want an error")
			}
			if !tt.check(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("start error = %v", err)
			}
		})
	}
}

func TestCloseWithoutServer(t *testing.T) {
	var nilServer *Server
	for _, s := range []*Server{nilServer, {unavailable: "x"}} {
		if err := s.Close(); err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
	}
}
