// Package grafana checks istio/grafana/gatehouse.json the way Grafana's own Go SDK
// (grafana-foundation-sdk, generated from Grafana's schemas) reads a dashboard: strictly, every
// panel's options by its panel type and every query by its datasource type. Which metrics the
// queries name is checked against Envoy's own exposition in wasm-test/e2e/metrics.test.mjs.
package grafana

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

var file = filepath.Join("..", "..", "..", "istio", "grafana", "gatehouse.json")

// orNil: the SDK (v0.0.22) returns its error list typed even when it is empty, and its own
// readers of nested parts then drop what they read (a panel, its options, its queries). So the
// test runs the SDK's strict readers of each part itself: the dashboard, each panel, its options
// by its panel type and each query as a Prometheus query.
func orNil(err error) error {
	if be, ok := err.(cog.BuildErrors); ok && len(be) == 0 {
		return nil
	}
	return err
}

type read struct {
	dashboard *dashboard.Dashboard
	panels    []*dashboard.Panel
	options   []any
	queries   [][]*prometheus.Dataquery
}

func load(raw []byte) (*read, error) {
	plugins.RegisterDefaultPlugins()
	out := &read{dashboard: &dashboard.Dashboard{}}
	if err := orNil(out.dashboard.UnmarshalJSONStrict(raw)); err != nil {
		return nil, err
	}
	var top struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, err
	}
	for i, rp := range top.Panels {
		p := &dashboard.Panel{}
		if err := orNil(p.UnmarshalJSONStrict(rp)); err != nil {
			return nil, fmt.Errorf("panels[%d]: %w", i, err)
		}
		var parts struct {
			Options json.RawMessage   `json:"options"`
			Targets []json.RawMessage `json:"targets"`
		}
		if err := json.Unmarshal(rp, &parts); err != nil {
			return nil, err
		}
		// The panel types the dashboard uses, each with its own options schema.
		var options interface{ UnmarshalJSONStrict([]byte) error }
		switch p.Type {
		case "stat":
			options = &stat.Options{}
		case "timeseries":
			options = &timeseries.Options{}
		default:
			return nil, fmt.Errorf("panels[%d]: panel type %q: add its options schema to this test", i, p.Type)
		}
		if err := orNil(options.UnmarshalJSONStrict(parts.Options)); err != nil {
			return nil, fmt.Errorf("panels[%d].options: %w", i, err)
		}
		var queries []*prometheus.Dataquery
		for j, rt := range parts.Targets {
			q := &prometheus.Dataquery{}
			if err := orNil(q.UnmarshalJSONStrict(rt)); err != nil {
				return nil, fmt.Errorf("panels[%d].targets[%d]: %w", i, j, err)
			}
			queries = append(queries, q)
		}
		out.panels = append(out.panels, p)
		out.options = append(out.options, options)
		out.queries = append(out.queries, queries)
	}
	return out, nil
}

func TestDashboardLoadsStrictly(t *testing.T) {
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	r, err := load(raw)
	if err != nil {
		t.Fatalf("%s does not load: %v", file, err)
	}
	d := r.dashboard
	if d.Uid == nil || *d.Uid != "gatehouse" || d.Title == nil || *d.Title != "gatehouse" {
		t.Errorf("uid/title: %v %v", d.Uid, d.Title)
	}
	if len(r.panels) < 8 {
		t.Errorf("%d panels", len(r.panels))
	}
	for i, p := range r.panels {
		if r.options[i] == nil {
			t.Errorf("panel %q (%s): no options", deref(p.Title), p.Type)
		}
		if len(r.queries[i]) == 0 {
			t.Errorf("panel %q has no queries", deref(p.Title))
		}
		for _, q := range r.queries[i] {
			if !strings.Contains(q.Expr, "gatehouse_") {
				t.Errorf("panel %q: query %q names no gatehouse metric", deref(p.Title), q.Expr)
			}
		}
	}
}

// The check refuses what Grafana's schema does not have: it is not a plain JSON parse.
func TestDashboardCheckRefusesUnknownFields(t *testing.T) {
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{
		{`"gridPos"`, `"gridPosition"`},       // a panel field
		{`"legendFormat"`, `"legendFmt"`},     // a Prometheus query field
		{`"reduceOptions"`, `"reduceOption"`}, // a stat panel option
		{`"graphTooltip"`, `"graphTooltips"`}, // a dashboard field
	} {
		bad := strings.Replace(string(raw), c[0], c[1], 1)
		if bad == string(raw) {
			t.Fatalf("%s matched nothing: update the test", c[0])
		}
		if _, err := load([]byte(bad)); err == nil {
			t.Errorf("a dashboard with %s instead of %s loaded", c[1], c[0])
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
