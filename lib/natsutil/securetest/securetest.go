// Package securetest runs what the tests of the secured transport need: a
// test certificate authority with server and client certificates made with
// crypto/x509 (no fixed files), and a real nats-server process started from
// the shipped deploy/nats configuration — TLS required, client certificates
// verified, the accounts of deploy/nats/accounts.sh with one user per role —
// on a free loopback port with everything in a temp dir.
package securetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/testutil/freeport"
	"github.com/netpulse/netpulse/lib/testutil/natstest"
	"github.com/netpulse/netpulse/lib/testutil/repofile"
)

var placeholder = regexp.MustCompile(`@[A-Z_]+@`)

// TraceEnv, when set to a path prefix, makes StartNATS trace every
// protocol line and keep the server's log in <prefix>-<test name>: what
// each user published and subscribed to, for reviewing the permissions of
// deploy/nats/accounts.sh against what the services really do.
const TraceEnv = "SECURETEST_NATS_TRACE"

// CA is a test certificate authority; its certificate is in CertFile.
type CA struct {
	cert     *x509.Certificate
	key      *rsa.PrivateKey
	dir      string
	CertFile string
}

// NewCA makes a CA whose files live in a temp dir of t. RSA keys: the
// OpenSSL of ClickHouse 18.16 takes them.
func NewCA(t testing.TB) *CA {
	t.Helper()
	dir := t.TempDir()
	key := rsaKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "netpulse test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{cert: cert, key: key, dir: dir, CertFile: filepath.Join(dir, "ca.pem")}
	writePEM(t, ca.CertFile, "CERTIFICATE", der)
	return ca
}

// Server issues a server certificate for 127.0.0.1, ::1 and localhost;
// it returns the certificate and key files.
func (ca *CA) Server(t testing.TB, name string) (certFile, keyFile string) {
	t.Helper()
	return ca.issue(t, name, x509.ExtKeyUsageServerAuth)
}

// Client issues a client certificate.
func (ca *CA) Client(t testing.TB, name string) (certFile, keyFile string) {
	t.Helper()
	return ca.issue(t, name, x509.ExtKeyUsageClientAuth)
}

func (ca *CA) issue(t testing.TB, name string, usage x509.ExtKeyUsage) (string, string) {
	t.Helper()
	key := rsaKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(ca.dir, name+".pem")
	keyFile := filepath.Join(ca.dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))
	return certFile, keyFile
}

func rsaKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writePEM(t testing.TB, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Secret is a random secret for a test; WriteSecret puts one in a file.
func Secret(t testing.TB) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "s3cr3t-" + hex.EncodeToString(b)
}

// WriteSecret writes secret (and a newline, as echo does) to a 0600 file
// in a temp dir of t.
func WriteSecret(t testing.TB, name, secret string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// Role names a user of deploy/nats/accounts.sh.
type Role string

// The roles of the shipped accounts.
const (
	Detector Role = "detector"
	Sink     Role = "sink"
	Viewer   Role = "viewer"
)

// Probe is the role of the probe of host.
func Probe(host string) Role { return Role("probe-" + host) }

// User is the NATS user name of role r.
func (r Role) User() string { return "netpulse-" + string(r) }

// NATS is a running nats-server from the shipped configuration.
type NATS struct {
	// URL is the server's client URL, tls://127.0.0.1:<port>.
	URL string
	// CA signs the server's certificate and the clients'.
	CA *CA
	// Passwords of the roles that log in with a password (detector, sink,
	// viewer), and the files that hold them.
	Passwords     map[Role]string
	PasswordFiles map[Role]string
	// NkeySeedFiles of the probes (they log in with an nkey).
	NkeySeedFiles map[Role]string
	// Conf is the rendered server configuration; Accounts what
	// accounts.sh printed.
	Conf, Accounts string

	clientCert, clientKey string
	cmd                   *exec.Cmd
	done                  chan struct{}
	log                   string
}

// StartNATS renders deploy/nats/server.conf.tmpl and runs
// deploy/nats/accounts.sh for a probe of each of hosts (nkeys), the
// detector, the sink and the viewer (bcrypt-hashed passwords), requires
// client certificates (verify: true) and starts the server; it is killed
// when t ends.
func StartNATS(t testing.TB, hosts ...string) *NATS {
	t.Helper()
	dir := t.TempDir()
	n := &NATS{CA: NewCA(t), Passwords: map[Role]string{}, PasswordFiles: map[Role]string{}, NkeySeedFiles: map[Role]string{}}
	certFile, keyFile := n.CA.Server(t, "nats-server")
	n.clientCert, n.clientKey = n.CA.Client(t, "netpulse-client")

	args := []string{RepoFile(t, "deploy/nats/accounts.sh")}
	for _, r := range []Role{Detector, Sink, Viewer} {
		pw := Secret(t)
		n.Passwords[r] = pw
		n.PasswordFiles[r] = WriteSecret(t, string(r)+".password", pw)
		hash, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, "--"+string(r), "password:"+string(hash))
	}
	for _, h := range hosts {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := kp.Seed()
		pub, _ := kp.PublicKey()
		f := filepath.Join(t.TempDir(), "probe.nk")
		if err := os.WriteFile(f, append(seed, '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
		n.NkeySeedFiles[Probe(h)] = f
		args = append(args, "--probe", h+"=nkey:"+pub)
	}
	out, err := exec.Command("bash", args...).Output()
	if err != nil {
		t.Fatalf("accounts.sh: %v\n%s", err, stderrOf(err))
	}
	n.Accounts = string(out)
	if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), out, 0o600); err != nil {
		t.Fatal(err)
	}
	tmpl, err := os.ReadFile(RepoFile(t, "deploy/nats/server.conf.tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	bin := natstest.Binary(t)
	for try := 1; ; try++ {
		port := freeport.Get(t)
		conf := strings.NewReplacer(
			"@NAME@", "netpulse-secure-test",
			"@LISTEN@", "127.0.0.1:"+strconv.Itoa(port),
			"@CERT_FILE@", certFile, "@KEY_FILE@", keyFile, "@CA_FILE@", n.CA.CertFile,
			"@STORE_DIR@", filepath.Join(dir, "js"),
			"verify: false", "verify: true",
		).Replace(string(tmpl))
		if os.Getenv(TraceEnv) != "" {
			conf = "trace: true\n" + conf
		}
		if placeholder.MatchString(conf) {
			t.Fatalf("server.conf.tmpl: a placeholder is left:\n%s", conf)
		}
		n.Conf = conf
		confFile := filepath.Join(dir, "server.conf")
		if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		n.URL = fmt.Sprintf("tls://127.0.0.1:%d", port)
		n.log = filepath.Join(dir, fmt.Sprintf("nats-%d.log", try))
		err := n.start(bin, confFile)
		if err == nil {
			break
		}
		if try == 3 || !strings.Contains(n.Log(), "address already in use") {
			t.Fatalf("nats-server: %v\n%s", err, n.Log())
		}
	}
	t.Cleanup(n.kill)
	if f := os.Getenv(TraceEnv); f != "" {
		t.Cleanup(func() { _ = os.WriteFile(f+"-"+strings.ReplaceAll(t.Name(), "/", "_"), []byte(n.Log()), 0o644) })
	}
	return n
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

func (n *NATS) start(bin, conf string) error {
	logf, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(n.done) }()
	// Ready when a client of the viewer role gets an answer from JetStream.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last error
	for {
		select {
		case <-n.done:
			return fmt.Errorf("nats-server exited")
		case <-ctx.Done():
			n.kill()
			return fmt.Errorf("nats-server not ready: %v", last)
		case <-time.After(50 * time.Millisecond):
		}
		cfg := n.Config(Viewer)
		tc, err := cfg.TLS.Config()
		if err != nil {
			return err
		}
		nc, err := nats.Connect(n.URL, nats.Secure(tc), nats.UserInfo(Viewer.User(), n.Passwords[Viewer]),
			nats.CustomInboxPrefix(cfg.InboxPrefix), nats.Timeout(time.Second))
		if err != nil {
			last = err
			continue
		}
		_, err = nc.Request("$JS.API.INFO", nil, time.Second)
		nc.Close()
		if last = err; err == nil {
			return nil
		}
	}
}

func (n *NATS) kill() {
	if n.cmd == nil {
		return
	}
	select {
	case <-n.done:
	default:
		_ = n.cmd.Process.Signal(syscall.SIGKILL)
		<-n.done
	}
}

// Log is what the server wrote so far.
func (n *NATS) Log() string {
	b, _ := os.ReadFile(n.log)
	return string(b)
}

// Config is the nats section a service of role r uses: the server's URL,
// its CA, a client certificate, the role's credentials from files
// (password_file for the detector, sink and viewer, nkey_seed_file for a
// probe) and its own inbox prefix.
func (n *NATS) Config(r Role) config.NATS {
	c := config.DefaultNATS().WithURL(n.URL)
	c.TLS = config.TLS{CAFile: n.CA.CertFile, CertFile: n.clientCert, KeyFile: n.clientKey}
	c.InboxPrefix = "_INBOX." + r.User()
	if f, ok := n.NkeySeedFiles[r]; ok {
		c.NkeySeedFile = f
	} else {
		c.User, c.PasswordFile = r.User(), n.PasswordFiles[r]
	}
	return c
}

// RepoFile is the path of rel (e.g. "deploy/nats/accounts.sh") in the
// repository.
func RepoFile(t testing.TB, rel string) string {
	t.Helper()
	p, err := repofile.Find(rel)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Violations are the permission violations the server logged (publish,
// subscription, reply), one line each; the line names the client and,
// for a user with a name, the user.
func (n *NATS) Violations() []string {
	var out []string
	for _, l := range bytes.Split([]byte(n.Log()), []byte("\n")) {
		if bytes.Contains(l, []byte("Violation - ")) {
			out = append(out, string(l))
		}
	}
	return out
}
