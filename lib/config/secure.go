package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/nats-io/nkeys"
)

// Secrets (passwords, tokens, seeds) come from the configuration or from a
// file named by a *_file key. No error or log line ever holds one: errors
// name the key and the file, never what the file holds, and URLs are shown
// with their user info redacted (RedactURL).

// Redacted stands in for a secret in messages.
const Redacted = "xxxxx"

// userInfo matches the user info of a URL that url.Parse refused: the
// fallback of RedactURL must not show it either.
var userInfo = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*://)?[^/@]*@`)

// RedactURL is u with its secrets replaced by Redacted: the password of
// user:password@, and the whole user info when it is a lone token (NATS
// takes nats://TOKEN@host as a token). url.URL.Redacted keeps such a token.
func RedactURL(u string) string {
	p, err := url.Parse(strings.TrimSpace(u))
	if err != nil || p.Opaque != "" { // refused, or no "//" (a:pw@h parses as scheme a)
		return userInfo.ReplaceAllString(strings.TrimSpace(u), "${1}"+Redacted+"@")
	}
	if p.User == nil {
		return p.String()
	}
	if _, ok := p.User.Password(); ok {
		p.User = url.UserPassword(p.User.Username(), Redacted)
	} else {
		p.User = url.User(Redacted)
	}
	return p.String()
}

// RedactURLs is RedactURL of each entry of a comma-separated list.
func RedactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, u := range parts {
		parts[i] = RedactURL(u)
	}
	return strings.Join(parts, ",")
}

// ReadSecretFile reads the secret in file, named by key: its content with
// trailing line ends removed (echo adds one). A missing, unreadable or
// empty file is an error that names key and file and holds nothing read.
func ReadSecretFile(key, file string) (string, error) {
	data, err := readFile(key, file)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(data), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s: %s is empty", key, file)
	}
	return s, nil
}

// readFile reads file for key; the error names both, and only the kind of
// failure (os.PathError's message holds the path, not the content).
func readFile(key, file string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s: cannot read %s: %v", key, file, pe.Err)
		}
		return nil, fmt.Errorf("%s: cannot read %s", key, file)
	}
	return data, nil
}

// secret is the value of key, or the content of fileKey's file; both set
// is an error naming both.
func secret(key, value, fileKey, file string) (string, error) {
	switch {
	case value != "" && file != "":
		return "", fmt.Errorf("%s and %s: set one of them, not both", key, fileKey)
	case file != "":
		return ReadSecretFile(fileKey, file)
	}
	return value, nil
}

// TLS is the client side of a TLS connection: the CA that signs the
// server's certificate (empty: the system's roots), an optional client
// certificate and key (mutual TLS), and the name the server's certificate
// must hold (empty: the host of the address dialled).
type TLS struct {
	CAFile     string `koanf:"ca_file"`
	CertFile   string `koanf:"cert_file"`
	KeyFile    string `koanf:"key_file"`
	ServerName string `koanf:"server_name"`
}

// IsSet says whether any TLS setting is made.
func (t TLS) IsSet() bool { return t != TLS{} }

// ValidateKey checks the files, naming them under key (e.g. "nats.tls").
func (t TLS) ValidateKey(key string) error {
	_, err := t.ConfigKey(key)
	return err
}

// Config is the crypto/tls client configuration the settings describe.
func (t TLS) Config() (*tls.Config, error) { return t.ConfigKey("tls") }

// ConfigKey is Config with errors naming the settings under key.
func (t TLS) ConfigKey(key string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := readFile(key+".ca_file", t.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.ca_file: %s holds no PEM certificate", key, t.CAFile)
		}
		c.RootCAs = pool
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		return nil, fmt.Errorf("%s.cert_file and %s.key_file: a client certificate needs both", key, key)
	case t.CertFile != "":
		certPEM, err := readFile(key+".cert_file", t.CertFile)
		if err != nil {
			return nil, err
		}
		keyPEM, err := readFile(key+".key_file", t.KeyFile)
		if err != nil {
			return nil, err
		}
		// tls.X509KeyPair's errors say what is wrong, never what was read.
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("%s.cert_file and %s.key_file (%s, %s): %v", key, key, t.CertFile, t.KeyFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// checkNkeySeedFile checks that file holds a NATS user nkey seed (SU...),
// raw or decorated as nsc writes it.
func checkNkeySeedFile(key, file string) error {
	data, err := readFile(key, file)
	if err != nil {
		return err
	}
	defer wipe(data)
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		// nkeys' errors are fixed texts ("nkeys: invalid seed"), never the seed.
		return fmt.Errorf("%s: %s holds no NATS user nkey seed (SU...): %v", key, file, err)
	}
	kp.Wipe()
	return nil
}

// checkCredsFile checks that file is a NATS credentials file: a user JWT
// and its user nkey seed.
func checkCredsFile(key, file string) error {
	data, err := readFile(key, file)
	if err != nil {
		return err
	}
	defer wipe(data)
	jwt, err := nkeys.ParseDecoratedJWT(data)
	if parts := strings.Split(jwt, "."); err != nil || len(parts) != 3 || !strings.HasPrefix(jwt, "eyJ") {
		// ParseDecoratedJWT returns the whole file when it finds no JWT
		// block: never shown.
		return fmt.Errorf("%s: %s is not a NATS credentials file (no user JWT block)", key, file)
	}
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		return fmt.Errorf("%s: %s is not a NATS credentials file (no user nkey seed): %v", key, file, err)
	}
	kp.Wipe()
	return nil
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}
