package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ringmesh/ringmesh/internal/systest"
)

// scrape fetches url and parses it with Prometheus's own text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: not Prometheus text: %v", url, err)
	}
	return fams
}

// value is the sum of a family's samples whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	var sum float64
	found := false
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			match = match && labels[want[i]] == want[i+1]
		}
		if !match {
			continue
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum, found
}

// TestMetricsScrape: two node processes with --metrics-addr train; each
// serves /metrics with ringmesh's series (rounds applied, round and
// all-reduce durations, bytes per lane, busbw, members by state, private)
// and libp2p's own, all parsed by Prometheus's parser, with values that
// match what happened: the rounds both trainers applied, one alive peer.
func TestMetricsScrape(t *testing.T) {
	root := t.TempDir()
	dumpLogsOnFailure(t, root)
	ps := systest.Cluster(t, root, 2, "--min-members", "2", "--metrics-addr", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tr := &trainers{t: t, ctx: ctx, led: newLedger(), size: 1 << 16, steps: 20, killed: map[string]bool{}}
	for _, p := range ps {
		tr.start(p)
	}
	tr.wg.Wait()
	if n := tr.led.check(t); n != 20 {
		t.Fatalf("applied %d steps, want 20", n)
	}
	for _, p := range ps {
		st, err := systest.Status(p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		if st.MetricsAddr == "" || strings.HasSuffix(st.MetricsAddr, ":0") {
			t.Fatalf("%s: status metrics_addr %q; want the bound address", filepath.Base(p.Dir), st.MetricsAddr)
		}
		fams := scrape(t, "http://"+st.MetricsAddr+"/metrics")
		for _, c := range []struct {
			name   string
			labels []string
			check  func(float64) bool
			want   string
		}{
			{"ringmesh_rounds_applied_total", nil, func(v float64) bool { return v == 20 }, "20"},
			{"ringmesh_round_duration_seconds", nil, func(v float64) bool { return v == 20 }, "20 observations"},
			{"ringmesh_allreduce_attempts_total", []string{"result", "ok"}, func(v float64) bool { return v >= 20 }, ">= 20"},
			{"ringmesh_allreduce_duration_seconds", nil, func(v float64) bool { return v >= 20 }, ">= 20 observations"},
			{"ringmesh_allreduce_sent_bytes_total", []string{"lane", "0"}, func(v float64) bool { return v > 0 }, "> 0"},
			{"ringmesh_allreduce_received_bytes_total", nil, func(v float64) bool { return v >= 20*(1<<16)*4/2 }, ">= half the buffer per round"},
			{"ringmesh_allreduce_busbw_bytes_per_second", nil, func(v float64) bool { return v > 0 }, "> 0"},
			{"ringmesh_members", []string{"state", "alive"}, func(v float64) bool { return v == 2 }, "2 (both nodes, as status lists them)"},
			{"ringmesh_round_list_members", nil, func(v float64) bool { return v == 2 }, "2"},
			{"ringmesh_round_next_step", nil, func(v float64) bool { return v >= 20 }, ">= 20"},
			{"ringmesh_round_state", nil, func(v float64) bool { return v == 1 }, "1 (one state at a time)"},
			{"ringmesh_mesh_private", nil, func(v float64) bool { return v == 1 }, "1"},
			{"ringmesh_build_info", []string{"peer", p.ID}, func(v float64) bool { return v == 1 }, "1"},
			{"ringmesh_failures_detected_total", nil, func(v float64) bool { return v == 0 }, "0"},
		} {
			v, ok := value(fams, c.name, c.labels...)
			if !ok || !c.check(v) {
				t.Errorf("%s: %s%v = %v (present %v); want %s", filepath.Base(p.Dir), c.name, c.labels, v, ok, c.want)
			}
		}
		libp2p := 0
		for name := range fams {
			if strings.HasPrefix(name, "libp2p_") {
				libp2p++
			}
		}
		if libp2p == 0 {
			t.Errorf("%s: no libp2p_* series among %d families", filepath.Base(p.Dir), len(fams))
		}
		t.Logf("%s: %d families, %d of them libp2p's", filepath.Base(p.Dir), len(fams), libp2p)
		if testing.Verbose() {
			var names []string
			for name := range fams {
				names = append(names, name)
			}
			slices.Sort(names)
			t.Logf("families: %v", names)
		}
		checkDashboard(t, fams)
	}
}

// checkDashboard: every series the shipped Grafana dashboard queries is one
// a node exports (so a renamed metric cannot leave a panel empty).
func checkDashboard(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "ringmesh.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("deploy/grafana/ringmesh.json: %v", err)
	}
	series := regexp.MustCompile(`\b(ringmesh|libp2p)_[a-z0-9_]+`)
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range series.FindAllString(tg.Expr, -1) {
				n++
				fam := name
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if _, ok := fams[fam]; !ok {
						fam = strings.TrimSuffix(fam, suffix)
					}
				}
				if _, ok := fams[fam]; !ok {
					t.Errorf("dashboard panel %q queries %s, which the node does not export", p.Title, name)
				}
			}
		}
	}
	if n < 20 {
		t.Errorf("the dashboard queries %d series; it lost its panels", n)
	}
}
