package caddysse

// Tests of what an operator sees of sse in production: the admin API's
// /sse/streams and /sse/zones, and the fields sse adds to Caddy's access
// log. Issue 14.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// With three sites (two servers), limits and a dead upstream, the admin
// API shows exactly the open streams, each with its server, host, path,
// client, protocol, start, byte and heartbeat counts, zone and frame; and
// the zones' counters by key as log_key shows them, without the anonymous
// stream that an empty key leaves uncounted (its zone is null). The access log line of every
// ended stream says how it ended; that of every refusal says why, with
// the upstream's error for a dead upstream, at error level though its
// status is 200. Every metric of the dead-upstream site names its server.
// When the streams end, both endpoints are empty again. Issue 14, items
// 1, 2, 3 and 5.
func TestAdminAndAccessLog(t *testing.T) {
	u := startLimUpstream(t)
	dead := limClosedAddr(t)
	logPath := filepath.Join(t.TempDir(), "access.log")
	otherPort := freePort(t)
	accessLog := fmt.Sprintf("log {\n\t\toutput file %s\n\t\tformat json\n\t}", logPath)
	c := startCaddy(t, u.addr, fmt.Sprintf(`
http://a.test:{{.HTTP}} {
	%[1]s
	sse {
		limit 2
	}
	reverse_proxy {{.Upstream}}
}
http://b.test:{{.HTTP}} {
	%[1]s
	sse {
		limit 1 per {http.request.header.Authorization}
		zone tenants
	}
	reverse_proxy {{.Upstream}}
}
http://c.test:%[2]d {
	%[1]s
	sse
	reverse_proxy %[3]s
}
`, accessLog, otherPort, dead))
	client := limClient()
	base := c.BaseURL()
	started := time.Now().Add(-time.Second)
	// the Caddyfile names servers srv0, srv1 in an order of its own: find
	// which listens on which port
	var servers map[string]struct{ Listen []string }
	adminGet(t, c, "/config/apps/http/servers", &servers)
	var srvAB, srvC string
	for name, s := range servers {
		if strings.HasSuffix(strings.Join(s.Listen, " "), fmt.Sprintf(":%d", otherPort)) {
			srvC = name
		} else {
			srvAB = name
		}
	}
	zoneA := srvAB + "#1"
	// the metrics are process-wide and servers' names recur across tests
	// (and runs, with -count): what this test checks is how they move
	metricsBefore := scrapeMetrics(t, c)

	// open: a.test twice (its limit is 2), b.test once per token and once
	// without one (not counted: its key is empty)
	open := map[string]func(){}
	var a1 <-chan chunk
	for _, rq := range []limReq{
		{path: "/a1?id=a1", host: "a.test", eventSource: true},
		{path: "/a2?id=a2", host: "a.test", eventSource: true},
		{path: "/b1?id=b1", host: "b.test", eventSource: true, header: []string{"Authorization", "Bearer alice"}},
		{path: "/b2?id=b2", host: "b.test", eventSource: true},
	} {
		res, cancel := limOpen(t, client, base, rq)
		ch := limCheckStream(t, res)
		if rq.path == "/a1?id=a1" {
			a1 = ch
		}
		open[rq.path] = cancel
	}
	// refused: a.test over its limit (EventSource: 200 + retry), b.test's
	// token again (fetch: 503), c.test's upstream is dead (200 + retry)
	res, _ := limOpen(t, client, base, limReq{path: "/a3?id=a3", host: "a.test", eventSource: true})
	limCheckRetryAnswer(t, res, defaultRetry)
	res, _ = limOpen(t, client, base, limReq{path: "/b3?id=b3", host: "b.test", header: []string{"Authorization", "Bearer alice"}})
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("b.test over its limit: status %d, want 503", res.StatusCode)
	}
	res, _ = limOpen(t, client, fmt.Sprintf("http://127.0.0.1:%d", otherPort), limReq{path: "/c1", host: "c.test", eventSource: true})
	limCheckRetryAnswer(t, res, defaultRetry)

	t.Run("streams", func(t *testing.T) {
		var got []streamStatus
		adminGet(t, c, "/sse/streams", &got)
		sort.Slice(got, func(i, j int) bool { return got[i].Path < got[j].Path })
		zoneB := "tenants"
		want := []streamStatus{
			{Path: "/a1", Host: "a.test", Zone: &zoneA},
			{Path: "/a2", Host: "a.test", Zone: &zoneA},
			{Path: "/b1", Host: "b.test", Zone: &zoneB},
			{Path: "/b2", Host: "b.test"}, // not counted: no Authorization
		}
		if len(got) != len(want) {
			t.Fatalf("/sse/streams has %d streams, want %d: %+v", len(got), len(want), got)
		}
		for i, w := range want {
			g := got[i]
			at, err := time.Parse(time.RFC3339, g.Started)
			switch {
			case g.Path != w.Path || g.Host != w.Host || (g.Zone == nil) != (w.Zone == nil) || g.Zone != nil && *g.Zone != *w.Zone:
				t.Errorf("stream %d: path %q host %q zone %s, want %q %q %s", i, g.Path, g.Host, zoneString(g.Zone), w.Path, w.Host, zoneString(w.Zone))
			case g.Server != srvAB || g.ClientIP != "127.0.0.1" || g.Proto != "HTTP/1.1" || g.Method != http.MethodGet || g.Frame != "line":
				t.Errorf("stream %s: server %q client_ip %q proto %q method %q frame %q, want %s 127.0.0.1 HTTP/1.1 GET line",
					g.Path, g.Server, g.ClientIP, g.Proto, g.Method, g.Frame, srvAB)
			case err != nil || at.Before(started) || at.After(time.Now()):
				t.Errorf("stream %s: started %q (%v), want an RFC 3339 time during the test", g.Path, g.Started, err)
			case g.Bytes != int64(len("data: open\n\n")) || g.Heartbeats != 0:
				t.Errorf("stream %s: bytes %d heartbeats %d, want %d and 0", g.Path, g.Bytes, g.Heartbeats, len("data: open\n\n"))
			}
		}
	})

	t.Run("zones", func(t *testing.T) {
		var got map[string]map[string]int
		adminGet(t, c, "/sse/zones", &got)
		want := map[string]map[string]int{
			zoneA:     {"a.test": 2},
			"tenants": {"Bearer alice": 1},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("/sse/zones = %v, want %v", got, want)
		}
	})

	t.Run("metrics name the server", func(t *testing.T) {
		m := scrapeMetrics(t, c)
		moved := func(name string, labels ...string) float64 {
			return m.value(t, name, labels...) - metricsBefore.value(t, name, labels...)
		}
		if v := moved(mRefused, "server", srvC, "reason", "upstream"); v != 1 {
			t.Errorf("refusals for the dead upstream of server %s rose by %v, want 1", srvC, v)
		}
		if v := moved(mOpen, "server", srvAB); v != 4 {
			t.Errorf("open streams of server %s rose by %v, want 4", srvAB, v)
		}
	})

	// end them: one by its upstream, the rest by their clients
	u.end("a1")
	limCheckEOF(t, a1)
	for path, cancel := range open {
		if path != "/a1?id=a1" {
			cancel()
		}
	}
	limWaitFor(t, "the admin API to show no stream", func() bool {
		var streams []streamStatus
		var zones map[string]map[string]int
		adminGet(t, c, "/sse/streams", &streams)
		adminGet(t, c, "/sse/zones", &zones)
		return len(streams) == 0 && len(zones) == 0
	})

	t.Run("access log", func(t *testing.T) {
		var lines map[string]map[string]any
		limWaitFor(t, "7 access log lines", func() bool {
			lines = accessLogByPath(t, logPath)
			return len(lines) == 7
		})
		for path, want := range map[string]map[string]any{
			"/a1": {"status": 200.0, "sse_end": "upstream", "sse_heartbeats": 0.0, "sse_frame": "line", "sse_zone": zoneA},
			"/a2": {"status": 200.0, "sse_end": "client", "sse_heartbeats": 0.0, "sse_frame": "line", "sse_zone": zoneA},
			"/b2": {"status": 200.0, "sse_end": "client", "sse_zone": nil},
			"/a3": {"status": 200.0, "sse_refused": "limit", "sse_zone": zoneA, "sse_limit": 2.0, "sse_per": "{http.request.host}", "level": "info"},
			"/b3": {"status": 503.0, "sse_refused": "limit", "sse_zone": "tenants", "sse_limit": 1.0, "sse_per": "{http.request.header.Authorization}"},
			"/c1": {"status": 200.0, "sse_refused": "upstream", "sse_upstream_status": 502.0, "level": "error"},
		} {
			line := lines[path]
			for k, v := range want {
				if line[k] != v {
					t.Errorf("access log of %s: %s = %v, want %v (line %v)", path, k, line[k], v, line)
				}
			}
			if _, ok := line["sse_key"]; ok {
				t.Errorf("access log of %s has sse_key without log_key", path)
			}
		}
		if msg, _ := lines["/c1"]["sse_upstream_error"].(string); !strings.Contains(msg, "connection refused") {
			t.Errorf("access log of /c1: sse_upstream_error = %q, want the dial error", msg)
		}
		for _, path := range []string{"/a3", "/b3", "/c1"} {
			if _, ok := lines[path]["sse_end"]; ok {
				t.Errorf("access log of refused %s has sse_end", path)
			}
		}
	})
}

func zoneString(z *string) string {
	if z == nil {
		return "null"
	}
	return strconv.Quote(*z)
}

// adminGet decodes the JSON answer of a GET on Caddy's admin endpoint.
func adminGet(t testing.TB, c *testCaddy, path string, v any) {
	t.Helper()
	res, err := http.Get(fmt.Sprintf("http://localhost:%d%s", c.Admin, path))
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: status %d, Content-Type %q: %s", path, res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, b)
	}
}

// accessLogByPath reads a JSON access log and returns its lines by request
// path.
func accessLogByPath(t testing.TB, path string) map[string]map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, line := range strings.Split(string(b), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) != nil || e["msg"] != "handled request" {
			continue
		}
		req, _ := e["request"].(map[string]any)
		uri, _ := req["uri"].(string)
		p, _, _ := strings.Cut(uri, "?")
		out[p] = e
	}
	return out
}

// The admin endpoints answer GET only, as reverse_proxy's
// /reverse_proxy/upstreams does: anything else is a 405 from the admin API.
func TestAdminMethodNotAllowed(t *testing.T) {
	for _, tc := range []struct {
		path   string
		handle func(http.ResponseWriter, *http.Request) error
	}{
		{"/sse/streams", adminSSE{}.handleStreams},
		{"/sse/zones", adminSSE{}.handleZones},
	} {
		err := tc.handle(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, tc.path, nil))
		var ae caddy.APIError
		if !errors.As(err, &ae) || ae.HTTPStatus != http.StatusMethodNotAllowed {
			t.Errorf("POST %s = %v, want a 405 APIError", tc.path, err)
		}
	}
}
