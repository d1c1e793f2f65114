package ingest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netpulse/netpulse/lib/natsutil/securetest"
)

const chSecret = "ch-s3cret-pw"

func writeFile(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// clickhouse.password_file and clickhouse.tls.*: refused settings name the
// keys, never the password.
func TestClickHouseSecretsValidation(t *testing.T) {
	pwFile := writeFile(t, chSecret+"\n")
	notPEM := writeFile(t, chSecret)
	tests := []struct {
		name   string
		mutate func(*ClickHouseConfig)
		want   []string
	}{
		{"password and password_file", func(c *ClickHouseConfig) { c.Password, c.PasswordFile = chSecret, pwFile }, []string{"clickhouse.password", "clickhouse.password_file"}},
		{"missing password_file", func(c *ClickHouseConfig) { c.PasswordFile = "/nonexistent/pw" }, []string{"clickhouse.password_file", "/nonexistent/pw"}},
		{"empty password_file", func(c *ClickHouseConfig) { c.PasswordFile = writeFile(t, "") }, []string{"clickhouse.password_file", "empty"}},
		{"tls keys without enabled", func(c *ClickHouseConfig) { c.TLS.CAFile = notPEM }, []string{"clickhouse.tls.enabled"}},
		{"ca not PEM", func(c *ClickHouseConfig) { c.TLS = ClickHouseTLS{Enabled: true, CAFile: notPEM} }, []string{"clickhouse.tls.ca_file", notPEM}},
		{"cert without key", func(c *ClickHouseConfig) { c.TLS = ClickHouseTLS{Enabled: true, CertFile: notPEM} }, []string{"clickhouse.tls.cert_file", "clickhouse.tls.key_file"}},
		{"cert and key not PEM", func(c *ClickHouseConfig) { c.TLS = ClickHouseTLS{Enabled: true, CertFile: notPEM, KeyFile: pwFile} },
			[]string{"clickhouse.tls.cert_file", "clickhouse.tls.key_file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c.ClickHouse)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if strings.Contains(err.Error(), chSecret) {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

func TestClickHouseOptions(t *testing.T) {
	c := DefaultConfig()
	c.ClickHouse.Username, c.ClickHouse.PasswordFile = "netpulse_sink", writeFile(t, chSecret+"\r\n")
	o, err := c.ClickHouse.Options()
	if err != nil {
		t.Fatal(err)
	}
	if o.Auth.Password != chSecret || o.Auth.Username != "netpulse_sink" || o.TLS != nil {
		t.Errorf("options %+v", o.Auth)
	}
	ca := securetest.NewCA(t)
	cert, key := ca.Client(t, "sink")
	c.ClickHouse.TLS = ClickHouseTLS{Enabled: true, CAFile: ca.CertFile, CertFile: cert, KeyFile: key, ServerName: "ch.example"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if o, err = c.ClickHouse.Options(); err != nil {
		t.Fatal(err)
	}
	if o.TLS == nil || o.TLS.RootCAs == nil || len(o.TLS.Certificates) != 1 || o.TLS.ServerName != "ch.example" {
		t.Errorf("TLS config %+v", o.TLS)
	}
}
