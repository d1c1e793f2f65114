package detect

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type typedConfig struct{ Limit int }

func (c *typedConfig) Validate() error {
	if c.Limit < 1 {
		return errors.New("limit: must be ≥ 1")
	}
	return nil
}

type typedDetector struct{ limit int }

func (typedDetector) Observe(Input)                  {}
func (typedDetector) Evaluate(time.Time) []Condition { return nil }

// Typed hands the constructor the plugin's own config, validated, and
// refuses any other.
func TestTyped(t *testing.T) {
	mk := Typed(func(c typedConfig, host string) *typedDetector { return &typedDetector{limit: c.Limit} })
	d, err := mk(&typedConfig{Limit: 7}, "h")
	if err != nil || d.(*typedDetector).limit != 7 {
		t.Fatalf("got %v, %v; want limit 7", d, err)
	}
	if _, err := mk(&typedConfig{}, "h"); err == nil || !strings.HasPrefix(err.Error(), "limit:") {
		t.Errorf("an invalid config: %v", err)
	}
	if _, err := mk(&struct{}{}, "h"); err == nil || !strings.Contains(err.Error(), "want *detect.typedConfig") {
		t.Errorf("another config type: %v", err)
	}
}
