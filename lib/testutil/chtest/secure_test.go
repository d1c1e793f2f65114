package chtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/netpulse/netpulse/lib/config"
	"github.com/netpulse/netpulse/lib/natsutil/securetest"
)

// The secure native port with strict client verification, and a user
// from users.d: a client with the CA, a client certificate and the
// password gets in; one without the certificate does not.
func TestSecurePortAndUsers(t *testing.T) {
	ca := securetest.NewCA(t)
	cert, key := ca.Server(t, "clickhouse")
	pw := securetest.Secret(t)
	sum := sha256.Sum256([]byte(pw))
	users := `<?xml version="1.0"?>
<yandex><users><tester>
  <password_sha256_hex>` + hex.EncodeToString(sum[:]) + `</password_sha256_hex>
  <networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota>
</tester></users></yandex>
`
	s, err := StartWith(Options{TLS: &TLS{CertFile: cert, KeyFile: key, ClientCAFile: ca.CertFile}, UsersFiles: map[string]string{"tester.xml": users}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Require(t)
	if s.SecureAddr() == "" || s.SecureAddr() == s.Addr() {
		t.Fatalf("secure address %q (plain %q)", s.SecureAddr(), s.Addr())
	}
	clientCert, clientKey := ca.Client(t, "sink")
	open := func(tc config.TLS, password string) error {
		c, err := tc.Config()
		if err != nil {
			t.Fatal(err)
		}
		conn, err := clickhouse.Open(&clickhouse.Options{Protocol: clickhouse.Native, Addr: []string{s.SecureAddr()},
			Auth: clickhouse.Auth{Username: "tester", Password: password}, TLS: c, DialTimeout: 2 * time.Second})
		if err != nil {
			return err
		}
		defer conn.Close()
		var one uint8
		return conn.QueryRow(context.Background(), "SELECT 1").Scan(&one)
	}
	if err := open(config.TLS{CAFile: ca.CertFile, CertFile: clientCert, KeyFile: clientKey}, pw); err != nil {
		t.Fatalf("TLS with a client certificate and the password: %v%s", err, s.logTail())
	}
	if err := open(config.TLS{CAFile: ca.CertFile}, pw); err == nil {
		t.Error("connected without a client certificate")
	}
	err = open(config.TLS{CAFile: ca.CertFile, CertFile: clientCert, KeyFile: clientKey}, "wrong")
	if err == nil || !strings.Contains(err.Error(), "tester") {
		t.Errorf("wrong password: %v", err)
	}
	// The plain port still answers the default user (the tests' admin).
	if err := s.admin.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}
