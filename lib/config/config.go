// Package config loads a service's configuration with koanf, in this order of
// precedence (last wins):
//
//  1. the defaults compiled into the service (the Go struct it passes in),
//  2. a YAML file: --config FILE, else config/<service>.yaml when it exists,
//  3. environment variables NETPULSE_<KEY> (dots become underscores:
//     nats.url -> NETPULSE_NATS_URL),
//  4. flags --<key>=value (e.g. --nats.url=nats://10.0.0.1:4222).
//
// Unknown keys in a file or a flag and values that do not parse stop the
// service with an error that names the key. An unknown NETPULSE_* variable is
// only reported: the environment is shared by all services, and a key of one
// is unknown to the others.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/structs"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// EnvPrefix starts every environment variable that sets a key.
const EnvPrefix = "NETPULSE_"

// envNotKeys are NETPULSE_* variables that are not configuration keys.
var envNotKeys = map[string]bool{
	"NETPULSE_REQUIRE_PRIVILEGED": true,
	"NETPULSE_CONFIG":             true,
}

// Validator is implemented by configs that check their values after loading.
type Validator interface {
	Validate() error
}

// ErrHelp is returned by Load when --help was asked for; the usage has been
// written to the Loader's Output.
var ErrHelp = errors.New("help requested")

// Loader describes where one service's configuration comes from.
type Loader struct {
	// Service names the default file config/<Service>.yaml and the usage text.
	Service string
	// Args are the command-line arguments without the program name.
	Args []string
	// Environ is the environment as "KEY=value" (os.Environ()).
	Environ []string
	// Output receives the usage text on --help.
	Output io.Writer
	// Warn receives non-fatal findings (unknown NETPULSE_* variables).
	Warn func(msg string)
}

// Load fills dst, a pointer to a struct with `koanf` tags whose current
// values are the defaults. It returns the file that was read, if any.
func (l Loader) Load(dst any) (string, error) {
	k := koanf.New(".")
	if err := k.Load(structs.Provider(dst, "koanf"), nil); err != nil {
		return "", fmt.Errorf("config defaults: %w", err)
	}
	known := make(map[string]bool)
	for _, key := range k.Keys() {
		known[key] = true
	}

	flags, setFlags, cfgFile, err := l.parseFlags(k)
	if err != nil {
		return "", err
	}

	if cfgFile == "" {
		cfgFile = envValue(l.Environ, "NETPULSE_CONFIG")
	}
	if cfgFile == "" {
		def := filepath.Join("config", l.Service+".yaml")
		if _, err := os.Stat(def); err == nil {
			cfgFile = def
		}
	}
	if cfgFile != "" {
		fk := koanf.New(".")
		if err := fk.Load(file.Provider(cfgFile), yaml.Parser()); err != nil {
			return "", fmt.Errorf("config file %s: %w", cfgFile, err)
		}
		if err := checkKnown(known, fk.Keys(), "in "+cfgFile); err != nil {
			return "", err
		}
		if err := k.Merge(fk); err != nil {
			return "", fmt.Errorf("config file %s: %w", cfgFile, err)
		}
	}

	envKeys := make(map[string]string, len(known))
	for key := range known {
		envKeys[EnvName(key)] = key
	}
	envVals := make(map[string]any)
	for _, kv := range l.Environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) || envNotKeys[name] {
			continue
		}
		key, ok := envKeys[name]
		if !ok {
			if l.Warn != nil {
				l.Warn(fmt.Sprintf("ignoring environment variable %s: not a key of netpulse-%s", name, l.Service))
			}
			continue
		}
		envVals[key] = val
	}
	if err := k.Load(confmap.Provider(envVals, "."), nil); err != nil {
		return "", fmt.Errorf("config from environment: %w", err)
	}

	flagVals := make(map[string]any)
	for _, key := range setFlags {
		v, _ := flags.GetString(key)
		flagVals[key] = v
	}
	if err := k.Load(confmap.Provider(flagVals, "."), nil); err != nil {
		return "", fmt.Errorf("config from flags: %w", err)
	}

	if err := k.UnmarshalWithConf("", dst, koanf.UnmarshalConf{
		Tag: "koanf",
		DecoderConfig: &mapstructure.DecoderConfig{
			DecodeHook: mapstructure.ComposeDecodeHookFunc(
				mapstructure.StringToTimeDurationHookFunc(),
				mapstructure.StringToSliceHookFunc(","),
			),
			WeaklyTypedInput: true,
			ErrorUnused:      true,
		},
	}); err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	if v, ok := dst.(Validator); ok {
		if err := v.Validate(); err != nil {
			return "", fmt.Errorf("config: %w", err)
		}
	}
	return cfgFile, nil
}

// parseFlags defines --config and one string flag per key, parses l.Args and
// returns the keys set on the command line.
func (l Loader) parseFlags(k *koanf.Koanf) (*pflag.FlagSet, []string, string, error) {
	fs := pflag.NewFlagSet("netpulse-"+l.Service, pflag.ContinueOnError)
	out := l.Output
	if out == nil {
		out = os.Stderr
	}
	fs.SetOutput(out)
	cfgFile := fs.String("config", "", "YAML configuration file (default config/"+l.Service+".yaml when present)")
	keys := k.Keys()
	sort.Strings(keys)
	for _, key := range keys {
		fs.String(key, "", fmt.Sprintf("(env %s, default %v)", EnvName(key), k.Get(key)))
	}
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage of netpulse-%s:\n%s", l.Service, fs.FlagUsages())
	}
	if err := fs.Parse(l.Args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, nil, "", ErrHelp
		}
		return nil, nil, "", fmt.Errorf("flags: %w", err)
	}
	if fs.NArg() > 0 {
		return nil, nil, "", fmt.Errorf("unexpected argument %q (keys are set as --key=value)", fs.Arg(0))
	}
	var set []string
	fs.Visit(func(f *pflag.Flag) {
		if f.Name != "config" {
			set = append(set, f.Name)
		}
	})
	return fs, set, *cfgFile, nil
}

// EnvName is the environment variable that sets key.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func envValue(environ []string, name string) string {
	for _, kv := range environ {
		if n, v, ok := strings.Cut(kv, "="); ok && n == name {
			return v
		}
	}
	return ""
}

func checkKnown(known map[string]bool, keys []string, where string) error {
	var unknown []string
	for _, key := range keys {
		if !known[key] {
			unknown = append(unknown, key)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return fmt.Errorf("unknown configuration key %q %s", strings.Join(unknown, `", "`), where)
}
