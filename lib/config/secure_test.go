package config

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	secretPW    = "hunter2-pw-s3cret"
	secretToken = "tok-s3cret-42"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                "nats://127.0.0.1:4222",
		"nats://sink:" + secretPW + "@h:4222":  "nats://sink:xxxxx@h:4222",
		"tls://" + secretToken + "@h:4222":     "tls://xxxxx@h:4222",
		" nats://a:" + secretPW + "@h:4222 ":   "nats://a:xxxxx@h:4222",
		"nats://a:" + secretPW + "@h:notaport": "nats://xxxxx@h:notaport", // url.Parse refuses it
		"a:" + secretPW + "@h:4222":            "xxxxx@h:4222",
		"nats://a:b%zz" + secretPW + "@h":      "nats://xxxxx@h",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
	if got := RedactURLs("nats://a:" + secretPW + "@h1:1,nats://h2:2"); got != "nats://a:xxxxx@h1:1,nats://h2:2" {
		t.Errorf("RedactURLs = %q", got)
	}
}

func TestServers(t *testing.T) {
	n := DefaultNATS().WithURL(" nats://a:4222, nats://b:4222,,tls://c:4222 ")
	got := n.Servers()
	if strings.Join(got, "|") != "nats://a:4222|nats://b:4222|tls://c:4222" {
		t.Fatalf("Servers() = %q", got)
	}
	if err := n.Validate(); err != nil {
		t.Fatal(err)
	}
}

func secretFile(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestReadSecretFile(t *testing.T) {
	got, err := ReadSecretFile("k", secretFile(t, secretPW+"\r\n\n"))
	if err != nil || got != secretPW {
		t.Fatalf("got %q, %v", got, err)
	}
	got, err = ReadSecretFile("k", secretFile(t, " spaced "))
	if err != nil || got != " spaced " {
		t.Fatalf("only line ends are trimmed: got %q, %v", got, err)
	}
	for name, file := range map[string]string{"empty": secretFile(t, "\n"), "missing": "/nonexistent/pw", "a directory": t.TempDir()} {
		_, err := ReadSecretFile("nats.password_file", file)
		if err == nil || !strings.Contains(err.Error(), "nats.password_file") || !strings.Contains(err.Error(), file) {
			t.Errorf("%s: error %v, want one naming the key and the file", name, err)
		}
	}
}

// Every refused NATS setting names its keys and never shows a secret: not
// in a URL, not from a file.
func TestNATSValidateNamesKeysNeverSecrets(t *testing.T) {
	pwFile := secretFile(t, secretPW+"\n")
	tokenFile := secretFile(t, secretToken)
	notASeed := secretFile(t, "SUnotaseed"+secretPW+"\n")
	notCreds := secretFile(t, "-----BEGIN NATS USER JWT-----\n"+secretToken+"\n------END NATS USER JWT------\n")
	notPEM := secretFile(t, secretPW)
	base := func() NATS { return DefaultNATS() }
	tests := []struct {
		name   string
		mutate func(*NATS)
		want   []string
	}{
		{"url with a password and a bad port", func(n *NATS) { n.URL = "nats://sink:" + secretPW + "@127.0.0.1:port" }, []string{"nats.url", "nats://xxxxx@127.0.0.1:port"}},
		{"url with a token and a bad scheme", func(n *NATS) { n.URL = "http://" + secretToken + "@127.0.0.1:4222" }, []string{"nats.url", "xxxxx@"}},
		{"second url bad", func(n *NATS) { n.URL = "nats://a:4222,nats://b:" + secretPW + "@:" }, []string{"nats.url"}},
		{"empty url", func(n *NATS) { n.URL = " , " }, []string{"nats.url"}},
		{"password and password_file", func(n *NATS) { n.User, n.Password, n.PasswordFile = "u", secretPW, pwFile }, []string{"nats.password", "nats.password_file"}},
		{"token and token_file", func(n *NATS) { n.Token, n.TokenFile = secretToken, tokenFile }, []string{"nats.token", "nats.token_file"}},
		{"user without password", func(n *NATS) { n.User = "u" }, []string{"nats.user", "nats.password"}},
		{"password without user", func(n *NATS) { n.Password = secretPW }, []string{"nats.password", "nats.user"}},
		{"password_file without user", func(n *NATS) { n.PasswordFile = pwFile }, []string{"nats.password_file", "nats.user"}},
		{"two ways", func(n *NATS) { n.User, n.Password, n.Token = "u", secretPW, secretToken }, []string{"nats.user", "nats.token"}},
		{"url user info and a key", func(n *NATS) { n.URL = "nats://u:" + secretPW + "@h:4222"; n.TokenFile = tokenFile }, []string{"nats.url", "nats.token_file"}},
		{"creds and nkey", func(n *NATS) { n.CredsFile, n.NkeySeedFile = notCreds, notASeed }, []string{"nats.nkey_seed_file", "nats.creds_file"}},
		{"missing password_file", func(n *NATS) { n.User, n.PasswordFile = "u", "/nonexistent/pw" }, []string{"nats.password_file", "/nonexistent/pw"}},
		{"empty token_file", func(n *NATS) { n.TokenFile = secretFile(t, "") }, []string{"nats.token_file", "empty"}},
		{"not a seed", func(n *NATS) { n.NkeySeedFile = notASeed }, []string{"nats.nkey_seed_file", notASeed}},
		{"not a creds file", func(n *NATS) { n.CredsFile = notCreds }, []string{"nats.creds_file", notCreds}},
		{"seed instead of creds", func(n *NATS) { n.CredsFile = pwFile }, []string{"nats.creds_file"}},
		{"ca not PEM", func(n *NATS) { n.TLS.CAFile = notPEM }, []string{"nats.tls.ca_file", notPEM}},
		{"cert without key", func(n *NATS) { n.TLS.CertFile = notPEM }, []string{"nats.tls.cert_file", "nats.tls.key_file"}},
		{"cert and key not PEM", func(n *NATS) { n.TLS.CertFile, n.TLS.KeyFile = notPEM, pwFile }, []string{"nats.tls.cert_file", "nats.tls.key_file"}},
		{"missing ca", func(n *NATS) { n.TLS.CAFile = "/nonexistent/ca.pem" }, []string{"nats.tls.ca_file", "/nonexistent/ca.pem"}},
		{"inbox prefix", func(n *NATS) { n.InboxPrefix = "_INBOX.>" }, []string{"nats.inbox_prefix"}},
		{"inbox prefix dot", func(n *NATS) { n.InboxPrefix = "_INBOX.me." }, []string{"nats.inbox_prefix"}},
		{"timeout", func(n *NATS) { n.ConnectTimeout = 0 }, []string{"nats.connect_timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := base()
			tt.mutate(&n)
			err := n.Validate()
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			for _, s := range []string{secretPW, secretToken, "SUnotaseed"} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q shows a secret", err)
				}
			}
		})
	}
}

func TestNATSValidSecrets(t *testing.T) {
	pwFile := secretFile(t, secretPW+"\n")
	for name, n := range map[string]NATS{
		"user and password_file": {User: "u", PasswordFile: pwFile},
		"user and password":      {User: "u", Password: secretPW},
		"token_file":             {TokenFile: pwFile},
		"url user info":          {URL: "nats://u:" + secretPW + "@h:4222"},
		"url token":              {URL: "tls://" + secretToken + "@h:4222"},
		"inbox prefix":           {InboxPrefix: "_INBOX.netpulse-probe-web-1"},
	} {
		cfg := DefaultNATS()
		if n.URL != "" {
			cfg.URL = n.URL
		}
		if n.InboxPrefix != "" {
			cfg.InboxPrefix = n.InboxPrefix
		}
		cfg.User, cfg.Password, cfg.PasswordFile, cfg.TokenFile = n.User, n.Password, n.PasswordFile, n.TokenFile
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	cfg := DefaultNATS()
	cfg.User, cfg.PasswordFile = "u", pwFile
	if pw, err := cfg.PasswordValue(); err != nil || pw != secretPW {
		t.Errorf("PasswordValue() = %q, %v", pw, err)
	}
	cfg = DefaultNATS()
	cfg.TokenFile = secretFile(t, secretToken+"\n")
	if tok, err := cfg.TokenValue(); err != nil || tok != secretToken {
		t.Errorf("TokenValue() = %q, %v", tok, err)
	}
}

// What the issue saw: a NATS URL with a password in the environment, not
// valid, was echoed in the error that stops the service.
func TestLoaderErrorRedactsURL(t *testing.T) {
	_, err := Loader{Service: "none", Output: io.Discard,
		Environ: []string{"NETPULSE_NATS_URL=nats://sink:" + secretPW + "@10.0.0.1:4222,nats://10.0.0.2:bad"}}.Load(defaults())
	if err == nil || !strings.Contains(err.Error(), "nats.url") || strings.Contains(err.Error(), secretPW) {
		t.Fatalf("error %v, want one naming nats.url without the password", err)
	}
	_, err = Loader{Service: "none", Output: io.Discard,
		Args: []string{"--nats.url=nats://sink:" + secretPW + "@10.0.0.1:x"}}.Load(defaults())
	if err == nil || strings.Contains(err.Error(), secretPW) || !strings.Contains(err.Error(), "nats://xxxxx@10.0.0.1:x") {
		t.Fatalf("error %v, want the URL redacted", err)
	}
	// A secret key set on the command line is not in --help's defaults.
	var out strings.Builder
	_, _ = Loader{Service: "none", Output: &out, Args: []string{"--nats.password=" + secretPW, "--help"}}.Load(defaults())
	if strings.Contains(out.String(), secretPW) || !strings.Contains(out.String(), "--nats.password_file") {
		t.Errorf("--help:\n%s", out.String())
	}
}
