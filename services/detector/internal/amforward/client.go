package amforward

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/netpulse/netpulse/lib/alert"
)

// postable is an alert as Alertmanager's API v2 takes it (PostableAlert).
type postable struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// toPostable is a as Alertmanager gets it at now: a firing alert ends at
// now+lease unless it is sent again (so one whose detectors all died
// resolves by itself, as Prometheus does it), a resolved one when it ended.
// The routing labels are set from the alert's own fields, so alerts stored
// before they were labels route too.
func toPostable(a *alert.Alert, now time.Time, lease time.Duration) postable {
	p := postable{
		Labels:       alert.Labels(a.Detector, a.Severity, a.Host, a.Labels),
		Annotations:  a.Annotations,
		StartsAt:     a.StartsAt,
		EndsAt:       now.Add(lease),
		GeneratorURL: a.GeneratorURL,
	}
	if a.Status == alert.Resolved && a.EndsAt != nil {
		p.EndsAt = *a.EndsAt
	}
	return p
}

// errRejected is an Alertmanager's 400: it refused the alerts as invalid
// (it refuses the whole request for one bad alert).
var errRejected = errors.New("alertmanager rejected the alerts")

// client posts to one Alertmanager.
type client struct {
	url      string // .../api/v2/alerts
	name     string // the URL as configured, for metrics and logs
	http     *http.Client
	user     string
	password string
}

// alertsPath is API v2's endpoint, below the Alertmanager's URL (which may
// hold a route prefix).
const alertsPath = "/api/v2/alerts"

func newClient(base string, hc *http.Client, user, password string) *client {
	return &client{url: strings.TrimRight(base, "/") + alertsPath, name: base, http: hc, user: user, password: password}
}

// post sends body (a JSON array of postable); an error wraps errRejected
// when the Alertmanager refused the alerts themselves.
func (c *client) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, resp.Body) // so the connection is reused
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode == http.StatusBadRequest:
		return fmt.Errorf("%w: %s: %s", errRejected, resp.Status, bytes.TrimSpace(msg))
	}
	return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
}

// encode writes alerts as the request body into buf.
func encode(buf *bytes.Buffer, alerts []postable) ([]byte, error) {
	buf.Reset()
	if err := json.NewEncoder(buf).Encode(alerts); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
