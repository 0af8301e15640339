// Copyright 2026 The caddy-sse Authors
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The Grafana dashboard in dashboards/caddy-sse.json works against a real
// Prometheus: Debian's prometheus scrapes a Caddy whose streams are open,
// refused (by a limit, and for a dead upstream), ended and beating, and
// every query of every panel, with the dashboard's variables filled in as
// Grafana would, returns series with a value that is not zero. A query
// naming a metric or label that does not exist returns nothing, and fails
// the test. Issue 14, item 4.
func TestDashboardQueries(t *testing.T) {
	prom := requireTool(t, "prometheus", "/usr/bin/prometheus")
	panels := loadDashboard(t, filepath.Join("..", "dashboards", "caddy-sse.json"))

	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		streamHead(w)
		if _, err := send(w, "data: hello\n\n"); err != nil {
			return
		}
		if strings.HasSuffix(r.URL.Path, "/end") {
			return
		}
		<-r.Context().Done()
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	c := startCaddy(t, up, fmt.Sprintf(`
http://127.0.0.1:{{.HTTP}} {
	handle /limited/* {
		sse {
			heartbeat 200ms
			limit 2
		}
		reverse_proxy {{.Upstream}}
	}
	handle /dead/* {
		sse
		reverse_proxy %s
	}
	handle {
		sse {
			heartbeat 200ms
		}
		reverse_proxy {{.Upstream}}
	}
}
`, dead))
	p := startPrometheus(t, prom, fmt.Sprintf("localhost:%d", c.Admin))
	waitFor(t, "Prometheus to scrape Caddy", 30*time.Second, func() bool {
		res, err := p.query(`up{job="caddy"} == 1`)
		return err == nil && len(res) == 1
	})

	// traffic after the first scrape, so every rate has something to show
	client := h1Client()
	es := []string{"Accept", "text/event-stream"}
	for range 2 {
		res, _ := openStream(t, client, c.BaseURL()+"/limited/hold", es...) // fills the limit of 2
		readChunks(res.Body)
	}
	for _, path := range []string{"/limited/over", "/dead/x"} { // refused
		res, _ := openStream(t, client, c.BaseURL()+path, es...)
		io.Copy(io.Discard, res.Body)
	}
	for range 3 { // ended by the upstream
		res, _ := openStream(t, client, c.BaseURL()+"/any/end", es...)
		io.Copy(io.Discard, res.Body)
	}
	res, cancel := openStream(t, client, c.BaseURL()+"/any/hold", es...) // ended by the client
	newSSEReader(res.Body).next(1, 10*time.Second)
	cancel()

	for _, pn := range panels {
		for _, tg := range pn.Targets {
			expr := grafanaExpr(t, tg.Expr)
			t.Run(pn.Title+"/"+tg.RefID, func(t *testing.T) {
				var last []promSample
				var lastErr error
				waitFor(t, fmt.Sprintf("data for %s", expr), 30*time.Second, func() bool {
					last, lastErr = p.query(expr)
					for _, s := range last {
						if v, err := strconv.ParseFloat(s.Value[1].(string), 64); err == nil && v != 0 && !math.IsNaN(v) {
							return true
						}
					}
					return false
				})
				if lastErr != nil || len(last) == 0 {
					t.Errorf("%s: %v, %v", expr, last, lastErr)
				}
			})
		}
	}
}

// dashPanel is what the test reads of a Grafana panel.
type dashPanel struct {
	Title   string
	Targets []struct {
		Expr  string
		RefID string `json:"refId"`
	}
}

// loadDashboard reads a Grafana dashboard and checks that it has panels,
// each with a query, on the dashboard's Prometheus datasource variable.
func loadDashboard(t testing.TB, path string) []dashPanel {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels     []dashPanel
		Templating struct {
			List []struct{ Name, Type, Query any }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[fmt.Sprint(v.Name)+"/"+fmt.Sprint(v.Type)] = true
	}
	if !vars["datasource/datasource"] || !vars["server/query"] {
		t.Errorf("%s: want a datasource variable and a server query variable, have %v", path, vars)
	}
	if len(d.Panels) == 0 {
		t.Fatalf("%s has no panels", path)
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
	return d.Panels
}

// grafanaExpr fills in the variables Grafana would: every server, and a
// rate interval long enough to hold the test's traffic however slowly the
// queries run.
func grafanaExpr(t testing.TB, expr string) string {
	t.Helper()
	out := strings.NewReplacer(
		"$__rate_interval", "5m",
		"$server", ".*",
	).Replace(expr)
	if strings.Contains(out, "$") {
		t.Fatalf("query %q has a variable the test does not fill in", expr)
	}
	return out
}

// promProc is a Prometheus server run by a test.
type promProc struct {
	base string // http://127.0.0.1:<port>
}

// promSample is one series of an instant query's result.
type promSample struct {
	Metric map[string]string
	Value  [2]any // time, value as a string
}

// startPrometheus runs prometheus with a temporary config that scrapes
// target's /metrics every second, and temporary storage, until the test
// ends.
func startPrometheus(t testing.TB, bin, target string) *promProc {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: caddy
    static_configs:
      - targets: [%q]
`, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "prometheus.log")
	exited := startDaemon(t, "prometheus", exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port),
	), logPath)
	p := &promProc{base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	waitFor(t, "prometheus to be ready", 30*time.Second, func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("prometheus exited: %s", tail(b, 4000))
		default:
		}
		res, err := http.Get(p.base + "/-/ready")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
	return p
}

// query runs an instant query and returns its vector.
func (p *promProc) query(expr string) ([]promSample, error) {
	res, err := http.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var body struct {
		Status string
		Error  string
		Data   struct {
			ResultType string
			Result     []promSample
		}
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		return nil, err
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", expr, body.Error)
	}
	if body.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %s, want vector", expr, body.Data.ResultType)
	}
	return body.Data.Result, nil
}
