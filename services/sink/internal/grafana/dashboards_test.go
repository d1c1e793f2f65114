// Package grafana tests the Grafana dashboards and provisioning files in
// deploy/grafana/: every dashboard decodes strictly, every ClickHouse panel's
// SQL, expanded as the grafana-clickhouse-datasource plugin expands it, runs
// on a real ClickHouse against the sink's schema and returns rows, and every
// Prometheus panel names only series README.md documents.
package grafana

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/netpulse/netpulse/lib/testutil/chtest"
	"github.com/netpulse/netpulse/lib/testutil/repofile"
)

var srv *chtest.Server

func TestMain(m *testing.M) { chtest.Main(m, &srv) }

const (
	typeClickHouse = "grafana-clickhouse-datasource"
	typePrometheus = "prometheus"

	dashboardsDir   = "deploy/grafana/dashboards"
	datasourcesFile = "deploy/grafana/provisioning/datasources/netpulse.yaml"
	providersFile   = "deploy/grafana/provisioning/dashboards/netpulse.yaml"
)

// The parts of Grafana's dashboard model the dashboards use. Decoding
// disallows unknown fields, so a misspelt key (rawSQL, legendFromat) fails.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	Description   string `json:"description"`
	Tags          []string
	Timezone      string `json:"timezone"`
	Editable      bool   `json:"editable"`
	GraphTooltip  int    `json:"graphTooltip"`
	SchemaVersion int    `json:"schemaVersion"`
	Version       int    `json:"version"`
	Refresh       string `json:"refresh"`
	Time          struct{ From, To string }
	Templating    struct{ List []variable }
	Annotations   json.RawMessage `json:"annotations"`
	Links         json.RawMessage `json:"links"`
	Panels        []panel         `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string         `json:"name"`
	Label      string         `json:"label"`
	Type       string         `json:"type"`
	Datasource *datasourceRef `json:"datasource"`
	Definition string         `json:"definition"`
	Query      struct {
		RefID      string `json:"refId"`
		EditorType string `json:"editorType"`
		QueryType  string `json:"queryType"`
		RawSQL     string `json:"rawSql"`
	} `json:"query"`
	Multi       bool            `json:"multi"`
	IncludeAll  bool            `json:"includeAll"`
	Current     json.RawMessage `json:"current"`
	Options     json.RawMessage `json:"options"`
	Refresh     int             `json:"refresh"`
	Sort        int             `json:"sort"`
	Hide        int             `json:"hide"`
	Regex       string          `json:"regex"`
	SkipURLSync bool            `json:"skipUrlSync"`
}

type panel struct {
	ID              int    `json:"id"`
	Type            string `json:"type"`
	Title           string `json:"title"`
	Description     string `json:"description"`
	GridPos         struct{ X, Y, W, H int }
	Datasource      *datasourceRef  `json:"datasource"`
	Targets         []target        `json:"targets"`
	FieldConfig     json.RawMessage `json:"fieldConfig"`
	Options         json.RawMessage `json:"options"`
	Transformations json.RawMessage `json:"transformations"`
}

// target is a panel query of either data source: rawSql, format, editorType
// and queryType for ClickHouse; expr, legendFormat, range, instant for
// Prometheus.
type target struct {
	Datasource *datasourceRef `json:"datasource"`
	RefID      string         `json:"refId"`

	EditorType string `json:"editorType"`
	QueryType  string `json:"queryType"`
	Format     any    `json:"format"` // ClickHouse: 0 time series, 1 table; Prometheus: "table"
	RawSQL     string `json:"rawSql"`

	Expr         string `json:"expr"`
	LegendFormat string `json:"legendFormat"`
	Range        bool   `json:"range"`
	Instant      bool   `json:"instant"`
}

// chFormat is the plugin's format of a ClickHouse target: 0 time series, 1 table.
func (t target) chFormat() (int, bool) {
	f, ok := t.Format.(float64)
	if !ok || (f != 0 && f != 1) {
		return 0, false
	}
	return int(f), true
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("data after the dashboard object")
	}
	return nil
}

// loadedDashboard is one dashboard file, decoded.
type loadedDashboard struct {
	file string
	dashboard
}

func loadDashboards(t *testing.T) []loadedDashboard {
	t.Helper()
	dir, err := repofile.Find(dashboardsDir)
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no dashboards in %s", dir)
	}
	var out []loadedDashboard
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := decodeStrict(data, &d); err != nil {
			t.Fatalf("%s: %v", filepath.Base(f), err)
		}
		out = append(out, loadedDashboard{file: filepath.Base(f), dashboard: d})
	}
	return out
}

// provisioned is what the provisioning files say.
type provisioned struct {
	uidOfType map[string]string // data source type → uid
}

func loadProvisioning(t *testing.T) provisioned {
	t.Helper()
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name           string            `yaml:"name"`
			UID            string            `yaml:"uid"`
			Type           string            `yaml:"type"`
			Access         string            `yaml:"access"`
			URL            string            `yaml:"url"`
			Editable       bool              `yaml:"editable"`
			JSONData       map[string]any    `yaml:"jsonData"`
			SecureJSONData map[string]string `yaml:"secureJsonData"`
		} `yaml:"datasources"`
	}
	readYAML(t, datasourcesFile, &ds)
	if ds.APIVersion != 1 {
		t.Errorf("%s: apiVersion %d, want 1", datasourcesFile, ds.APIVersion)
	}
	p := provisioned{uidOfType: map[string]string{}}
	for _, d := range ds.Datasources {
		if d.Name == "" || d.UID == "" {
			t.Errorf("%s: data source %+v lacks a name or uid", datasourcesFile, d)
		}
		if _, dup := p.uidOfType[d.Type]; dup {
			t.Errorf("%s: two data sources of type %s", datasourcesFile, d.Type)
		}
		p.uidOfType[d.Type] = d.UID
		switch d.Type {
		case typeClickHouse:
			// The plugin's jsonData keys (pkg/plugin/settings.go): host (4.x)
			// or server (3.x), port, protocol, secure, username,
			// defaultDatabase; the password in secureJsonData.
			want := map[string]any{"protocol": "native", "username": "netpulse_analyst", "defaultDatabase": "netpulse", "port": 9000, "secure": false}
			for k, v := range want {
				if d.JSONData[k] != v {
					t.Errorf("%s: ClickHouse jsonData.%s = %v, want %v", datasourcesFile, k, d.JSONData[k], v)
				}
			}
			for _, k := range []string{"host", "server"} {
				if s, _ := d.JSONData[k].(string); !strings.HasPrefix(s, "$") {
					t.Errorf("%s: ClickHouse jsonData.%s = %v, want an environment variable", datasourcesFile, k, d.JSONData[k])
				}
			}
			if pw := d.SecureJSONData["password"]; !regexp.MustCompile(`^\$[A-Z_]+$`).MatchString(pw) {
				t.Errorf("%s: ClickHouse secureJsonData.password = %q, want $VARIABLE (the form Grafana expands once)", datasourcesFile, pw)
			}
		case typePrometheus:
			if !strings.HasPrefix(d.URL, "$") || d.Access != "proxy" {
				t.Errorf("%s: Prometheus url %q access %q, want an environment variable and proxy", datasourcesFile, d.URL, d.Access)
			}
		default:
			t.Errorf("%s: data source %s of type %s, which no dashboard uses", datasourcesFile, d.Name, d.Type)
		}
	}

	var prov struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name                  string `yaml:"name"`
			Folder                string `yaml:"folder"`
			Type                  string `yaml:"type"`
			DisableDeletion       bool   `yaml:"disableDeletion"`
			AllowUIUpdates        bool   `yaml:"allowUiUpdates"`
			UpdateIntervalSeconds int    `yaml:"updateIntervalSeconds"`
			Options               struct {
				Path                      string `yaml:"path"`
				FoldersFromFilesStructure bool   `yaml:"foldersFromFilesStructure"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, providersFile, &prov)
	if prov.APIVersion != 1 || len(prov.Providers) != 1 {
		t.Fatalf("%s: apiVersion %d with %d providers, want 1 and 1", providersFile, prov.APIVersion, len(prov.Providers))
	}
	if pr := prov.Providers[0]; pr.Type != "file" || pr.Name == "" || pr.Options.Path == "" {
		t.Errorf("%s: provider %+v: want a named file provider with options.path", providersFile, pr)
	}
	return p
}

func readYAML(t *testing.T, rel string, v any) {
	t.Helper()
	path, err := repofile.Find(rel)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}

var panelTypes = []string{"timeseries", "table", "stat", "bargauge"}

// TestDashboardsWellFormed checks what Grafana and the plugins need of every
// panel, and that every data source a dashboard names is provisioned.
func TestDashboardsWellFormed(t *testing.T) {
	prov := loadProvisioning(t)
	uids := map[string]string{}
	for _, d := range loadDashboards(t) {
		t.Run(d.file, func(t *testing.T) {
			if d.UID == "" || d.Title == "" {
				t.Errorf("uid %q title %q: want both", d.UID, d.Title)
			}
			if other, dup := uids[d.UID]; dup {
				t.Errorf("uid %s is also %s's", d.UID, other)
			}
			uids[d.UID] = d.file
			if len(d.Panels) == 0 {
				t.Fatal("no panels")
			}
			checkRef := func(what string, ref *datasourceRef) {
				if ref == nil {
					t.Errorf("%s: no datasource", what)
					return
				}
				uid, ok := prov.uidOfType[ref.Type]
				switch {
				case ref.Type != typeClickHouse && ref.Type != typePrometheus:
					t.Errorf("%s: datasource type %q, want %s or %s", what, ref.Type, typeClickHouse, typePrometheus)
				case !ok || ref.UID != uid:
					t.Errorf("%s: datasource uid %q, want the provisioned %q", what, ref.UID, uid)
				}
			}
			vars := map[string]bool{}
			for _, v := range d.Templating.List {
				vars[v.Name] = true
				checkRef("variable "+v.Name, v.Datasource)
				if v.Type != "query" || v.Query.RawSQL == "" || v.Definition != v.Query.RawSQL {
					t.Errorf("variable %s: want a query variable whose definition is its rawSql", v.Name)
				}
			}
			ids := map[int]bool{}
			for _, p := range d.Panels {
				what := fmt.Sprintf("panel %d %q", p.ID, p.Title)
				if strings.TrimSpace(p.Title) == "" {
					t.Errorf("%s: no title", what)
				}
				if ids[p.ID] || p.ID <= 0 {
					t.Errorf("%s: id not unique and positive", what)
				}
				ids[p.ID] = true
				if !slices.Contains(panelTypes, p.Type) {
					t.Errorf("%s: type %q, want one of %v", what, p.Type, panelTypes)
				}
				if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
					t.Errorf("%s: gridPos %+v outside the 24 columns", what, g)
				}
				checkRef(what, p.Datasource)
				if len(p.Targets) == 0 {
					t.Errorf("%s: no targets", what)
				}
				refIDs := map[string]bool{}
				for _, tg := range p.Targets {
					if tg.RefID == "" || refIDs[tg.RefID] {
						t.Errorf("%s: refId %q empty or repeated", what, tg.RefID)
					}
					refIDs[tg.RefID] = true
					if p.Datasource == nil || tg.Datasource == nil || *tg.Datasource != *p.Datasource {
						t.Errorf("%s: target %s datasource %v, want the panel's %v", what, tg.RefID, tg.Datasource, p.Datasource)
						continue
					}
					switch p.Datasource.Type {
					case typeClickHouse:
						checkClickHouseTarget(t, what, p, tg, vars)
					case typePrometheus:
						checkPrometheusTarget(t, what, tg, vars)
					}
				}
			}
		})
	}
}

func checkClickHouseTarget(t *testing.T, what string, p panel, tg target, vars map[string]bool) {
	t.Helper()
	f, ok := tg.chFormat()
	switch {
	case tg.RawSQL == "" || tg.Expr != "":
		t.Errorf("%s: a ClickHouse target needs rawSql and no expr", what)
	case tg.EditorType != "sql" || tg.QueryType != "sql":
		t.Errorf("%s: editorType %q queryType %q, want sql and sql", what, tg.EditorType, tg.QueryType)
	case !ok:
		t.Errorf("%s: format %v, want 0 (time series) or 1 (table)", what, tg.Format)
	case (p.Type == "timeseries") != (f == 0):
		t.Errorf("%s: a %s panel with format %d", what, p.Type, f)
	}
	// The plugin strips comments before expanding macros; keep SQL free of them.
	if strings.Contains(tg.RawSQL, "--") || strings.Contains(tg.RawSQL, "/*") {
		t.Errorf("%s: SQL comment in rawSql", what)
	}
	for _, m := range regexp.MustCompile(`\$\{?(\w+)`).FindAllStringSubmatch(tg.RawSQL, -1) {
		if name := m[1]; !strings.HasPrefix(name, "__") && !vars[name] {
			t.Errorf("%s: $%s is no variable of the dashboard", what, name)
		}
	}
}

func checkPrometheusTarget(t *testing.T, what string, tg target, vars map[string]bool) {
	t.Helper()
	if tg.Expr == "" || tg.RawSQL != "" {
		t.Errorf("%s: a Prometheus target needs expr and no rawSql", what)
		return
	}
	if tg.Range == tg.Instant {
		t.Errorf("%s: range %v instant %v: want one of them", what, tg.Range, tg.Instant)
	}
	if err := checkPromQL(tg.Expr, tg.LegendFormat, readmeSeries(t), vars); err != nil {
		t.Errorf("%s: %s: %v", what, tg.Expr, err)
	}
}
