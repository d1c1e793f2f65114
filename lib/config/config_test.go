package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type sample struct {
	NATS  NATS `koanf:"nats"`
	Batch struct {
		MaxBytes      int           `koanf:"max_bytes"`
		FlushInterval time.Duration `koanf:"flush_interval"`
	} `koanf:"batch"`
	Name string `koanf:"name"`
}

func (s *sample) Validate() error {
	if s.Batch.MaxBytes < 1 {
		return fmt.Errorf("batch.max_bytes: must be positive, got %d", s.Batch.MaxBytes)
	}
	return s.NATS.Validate()
}

func defaults() *sample {
	s := &sample{NATS: DefaultNATS(), Name: "dflt"}
	s.Batch.MaxBytes = 100
	s.Batch.FlushInterval = time.Second
	return s
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadPrecedence(t *testing.T) {
	file := writeFile(t, "batch:\n  max_bytes: 200\n  flush_interval: 50ms\nname: fromfile\n")
	tests := []struct {
		name      string
		args      []string
		env       []string
		wantBytes int
		wantFlush time.Duration
		wantName  string
		wantURL   string
	}{
		{name: "defaults only", wantBytes: 100, wantFlush: time.Second, wantName: "dflt", wantURL: "nats://127.0.0.1:4222"},
		{name: "file", args: []string{"--config", file}, wantBytes: 200, wantFlush: 50 * time.Millisecond, wantName: "fromfile", wantURL: "nats://127.0.0.1:4222"},
		{name: "env beats file", args: []string{"--config", file}, env: []string{"NETPULSE_BATCH_MAX_BYTES=300", "NETPULSE_NATS_URL=nats://10.1.1.1:4222"},
			wantBytes: 300, wantFlush: 50 * time.Millisecond, wantName: "fromfile", wantURL: "nats://10.1.1.1:4222"},
		{name: "flag beats env", args: []string{"--config", file, "--batch.max_bytes=400", "--name", "flag"}, env: []string{"NETPULSE_BATCH_MAX_BYTES=300"},
			wantBytes: 400, wantFlush: 50 * time.Millisecond, wantName: "flag", wantURL: "nats://127.0.0.1:4222"},
		{name: "config file from env", env: []string{"NETPULSE_CONFIG=" + file}, wantBytes: 200, wantFlush: 50 * time.Millisecond, wantName: "fromfile", wantURL: "nats://127.0.0.1:4222"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := defaults()
			if _, err := (Loader{Service: "none", Args: tt.args, Environ: tt.env}).Load(got); err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got.Batch.MaxBytes != tt.wantBytes || got.Batch.FlushInterval != tt.wantFlush || got.Name != tt.wantName || got.NATS.URL != tt.wantURL {
				t.Errorf("got max_bytes=%d flush=%s name=%q url=%q, want %d %s %q %q",
					got.Batch.MaxBytes, got.Batch.FlushInterval, got.Name, got.NATS.URL, tt.wantBytes, tt.wantFlush, tt.wantName, tt.wantURL)
			}
		})
	}
}

func TestLoadErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		args    []string
		env     []string
		wantErr string
	}{
		{name: "unknown key in file", file: "batch:\n  max_bites: 3\n", wantErr: `"batch.max_bites"`},
		{name: "unknown flag", args: []string{"--batch.max_bites=3"}, wantErr: "batch.max_bites"},
		{name: "value does not parse", args: []string{"--batch.max_bytes=lots"}, wantErr: "max_bytes"},
		{name: "duration does not parse", env: []string{"NETPULSE_BATCH_FLUSH_INTERVAL=soon"}, wantErr: "flush_interval"},
		{name: "invalid value", args: []string{"--batch.max_bytes=-1"}, wantErr: "batch.max_bytes: must be positive"},
		{name: "invalid url", env: []string{"NETPULSE_NATS_URL=::nope"}, wantErr: "nats.url"},
		{name: "stray argument", args: []string{"extra"}, wantErr: `unexpected argument "extra"`},
		{name: "missing config file", args: []string{"--config", "/nonexistent/x.yaml"}, wantErr: "/nonexistent/x.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append([]string{"--config", writeFile(t, tt.file)}, args...)
			}
			_, err := Loader{Service: "none", Args: args, Environ: tt.env, Output: io.Discard}.Load(defaults())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestUnknownEnvIsReportedNotFatal(t *testing.T) {
	var warned []string
	_, err := Loader{Service: "none", Environ: []string{"NETPULSE_BATCH_MAX_BITES=1", "NETPULSE_REQUIRE_PRIVILEGED=1", "HOME=/root"},
		Warn: func(m string) { warned = append(warned, m) }}.Load(defaults())
	if err != nil {
		t.Fatal(err)
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "NETPULSE_BATCH_MAX_BITES") {
		t.Fatalf("warnings %q, want exactly one naming NETPULSE_BATCH_MAX_BITES", warned)
	}
}

func TestHelp(t *testing.T) {
	var out strings.Builder
	_, err := Loader{Service: "none", Args: []string{"--help"}, Output: &out}.Load(defaults())
	if !errors.Is(err, ErrHelp) {
		t.Fatalf("err %v, want ErrHelp", err)
	}
	for _, want := range []string{"--batch.max_bytes", "NETPULSE_BATCH_MAX_BYTES", "--config"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
}
