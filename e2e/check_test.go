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
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/check"
)

// checkUpstream serves two streams: /events, eight events 300 ms apart
// with a comment of its own in the middle, then the end; and /quiet,
// three events 300 ms apart, 5 s of silence, one more event, the end.
func checkUpstream(w http.ResponseWriter, r *http.Request) {
	streamHead(w)
	quietAfter, n := 0, 8
	if strings.HasSuffix(r.URL.Path, "/quiet") {
		quietAfter, n = 3, 4
	}
	for i := 1; i <= n; i++ {
		gap := 300 * time.Millisecond
		if i == quietAfter+1 && quietAfter > 0 {
			gap = 5 * time.Second
		}
		if i > 1 && !quiet(r, gap) {
			return
		}
		if _, err := send(w, event{ID: fmt.Sprint(i), Data: "event"}.encode()); err != nil {
			return
		}
		if i == 4 && quietAfter == 0 {
			if !quiet(r, 150*time.Millisecond) {
				return
			}
			if _, err := send(w, ": ping\n"); err != nil {
				return
			}
		}
	}
}

// runCheck runs `caddy sse check <args> --json` with the built binary and
// returns the report and the exit status.
func runCheck(t *testing.T, args ...string) (*check.Report, int) {
	t.Helper()
	cmd := exec.Command(caddyBin, append(append([]string{"sse", "check"}, args...), "--json")...)
	cmd.Env = append(cmd.Environ(), "HOME="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	status := 0
	if exit, ok := errors.AsType[*exec.ExitError](err); ok {
		status = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("running caddy sse check: %v", err)
	}
	var rep check.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("caddy sse check %v: exit %d, output is not one JSON object (%v):\n%s\nstderr:\n%s", args, status, err, stdout.Bytes(), stderr.Bytes())
	}
	t.Logf("caddy sse check %v: exit %d\n%s", args, status, stdout.Bytes())
	return &rep, status
}

func problemKinds(rep *check.Report) []string {
	kinds := []string{}
	for _, p := range rep.Problems {
		kinds = append(kinds, p.Kind)
	}
	return kinds
}

// TestCheck runs `caddy sse check` from the built binary against a direct
// upstream, stock Caddy and Caddy with sse, alone and behind Debian's
// nginx with its proxy defaults, over HTTP/1.1, HTTP/2 and HTTP/3. Each
// finding (buffered, cut, compressed, hop_by_hop, no_heartbeat) is shown
// against the real hop that causes it, and the same path with sse in
// Caddy is healthy: the findings come from the path, not from the check.
func TestCheck(t *testing.T) {
	up := startUpstream(t, checkUpstream)
	c := startCaddy(t, up, `
http://127.0.0.1:{{.HTTP}} {
	handle /raw/* {
		reverse_proxy {{.Upstream}}
	}
	handle /gzip/* {
		encode gzip
		reverse_proxy {{.Upstream}}
	}
	handle /sse-gzip/* {
		encode gzip
		sse {
			heartbeat 500ms
		}
		reverse_proxy {{.Upstream}}
	}
	handle {
		sse {
			heartbeat 500ms
		}
		reverse_proxy {{.Upstream}}
	}
}
https://localhost:{{.HTTPS}} {
	tls internal
	@notReady not path /ready
	header @notReady Keep-Alive "timeout=5"
	handle /ready {
		respond "ok"
	}
	handle /raw/* {
		reverse_proxy {{.Upstream}} {
			header_down Proxy-Connection "keep-alive"
			header_down Upgrade "h2c"
		}
	}
	handle {
		sse {
			heartbeat 500ms
		}
		reverse_proxy {{.Upstream}} {
			header_down Proxy-Connection "keep-alive"
			header_down Upgrade "h2c"
		}
	}
}`)
	n := startNginx(t, fmt.Sprintf("127.0.0.1:%d", c.HTTP)) // proxy_read_timeout 3s
	waitH3(t, &http.Client{Transport: h3Transport(t, 0)}, c.TLSURL()+"/ready")

	for _, tc := range []struct {
		name   string
		args   []string
		want   []string // problem kinds
		end    string
		events int // at least
	}{
		{"Direct", []string{"http://" + up + "/events"}, nil, check.EndServer, 8},
		{"NginxStockBuffers", []string{n.URL() + "/h10/raw/events"}, []string{check.KindBuffered}, check.EndServer, 8},
		{"NginxStockCutsQuiet", []string{n.URL() + "/h10/raw/quiet", "--for", "15s"}, []string{check.KindBuffered, check.KindCut}, check.EndCut, 0},
		{"NginxSSE", []string{n.URL() + "/h10/events"}, nil, check.EndServer, 8},
		{"NginxSSEQuiet", []string{n.URL() + "/h10/quiet", "--for", "15s", "--idle", "2s"}, nil, check.EndServer, 4},
		{"EncodeStock", []string{c.BaseURL() + "/gzip/events"}, []string{check.KindCompressed}, check.EndServer, 8},
		{"EncodeSSE", []string{c.BaseURL() + "/sse-gzip/events"}, nil, check.EndServer, 8},
		{"HopByHopHTTP2Stock", []string{c.TLSURL() + "/raw/events", "--http", "2", "--insecure"}, []string{check.KindHopByHop}, check.EndServer, 8},
		{"HopByHopHTTP2SSE", []string{c.TLSURL() + "/events", "--http", "2", "--insecure"}, nil, check.EndServer, 8},
		{"HopByHopHTTP3Stock", []string{c.TLSURL() + "/raw/events", "--http", "3", "--insecure"}, []string{check.KindHopByHop}, check.EndNone, 0},
		{"HTTP3SSE", []string{c.TLSURL() + "/events", "--http", "3", "--insecure"}, nil, check.EndServer, 8},
		{"QuietStock", []string{c.BaseURL() + "/raw/quiet", "--idle", "2s"}, []string{check.KindNoHeartbeat}, check.EndServer, 4},
		{"QuietSSE", []string{c.BaseURL() + "/quiet", "--idle", "2s"}, nil, check.EndServer, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // the streams take seconds each
			rep, status := runCheck(t, tc.args...)
			wantStatus := 0
			if len(tc.want) > 0 {
				wantStatus = 1
			}
			if got := problemKinds(rep); !slices.Equal(got, append([]string{}, tc.want...)) || status != wantStatus {
				t.Errorf("problems %v, exit %d; want %v, exit %d", got, status, tc.want, wantStatus)
			}
			if rep.End != tc.end || rep.Events < tc.events {
				t.Errorf("end %q, %d events; want %q, at least %d", rep.End, rep.Events, tc.end, tc.events)
			}
			checkFindings(t, tc.name, rep)
		})
	}

	t.Run("Unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + l.Addr().String() + "/events"
		l.Close()
		cmd := exec.Command(caddyBin, "sse", "check", url, "--json")
		cmd.Env = append(cmd.Environ(), "HOME="+t.TempDir())
		out, err := cmd.Output()
		exit, ok := errors.AsType[*exec.ExitError](err)
		var v struct{ URL, Error string }
		if !ok || exit.ExitCode() != 2 || json.Unmarshal(out, &v) != nil || !strings.Contains(v.Error, "connection refused") {
			t.Errorf("unreachable URL: %v, output %q; want exit 2 and the error in JSON", err, out)
		}
	})
}

// checkFindings checks the facts behind each case's verdict.
func checkFindings(t *testing.T, name string, rep *check.Report) {
	t.Helper()
	switch name {
	case "Direct":
		if rep.Heartbeats != 1 || rep.Heartbeat == nil || rep.Heartbeat.Text != "ping" {
			t.Errorf("heartbeats %d (%+v), want the upstream's one \": ping\"", rep.Heartbeats, rep.Heartbeat)
		}
	case "NginxStockBuffers":
		if len(rep.Held) == 0 || rep.Held[0].Events < 3 {
			t.Errorf("held lumps %+v, want the events let go at once", rep.Held)
		}
	case "NginxStockCutsQuiet":
		// nginx holds the header and the events, sends the header alone
		// when proxy_read_timeout fires, and drops the events
		if rep.SilenceBeforeEndMS < 2500 || rep.SilenceBeforeEndMS > 5000 {
			t.Errorf("cut after %dms of silence, want about 3.6s (3 s proxy_read_timeout after the last event)", rep.SilenceBeforeEndMS)
		}
		if len(rep.Held) != 1 || rep.Held[0].AtMS < 2500 || rep.HeaderMS != rep.Held[0].AtMS {
			t.Errorf("held %+v, header at %dms; want the header held until the cut", rep.Held, rep.HeaderMS)
		}
	case "NginxSSEQuiet", "QuietSSE":
		if rep.Heartbeats < 4 || rep.Heartbeat == nil || rep.Heartbeat.Frame != "comment" {
			t.Errorf("heartbeats %d (%+v), want sse's comments through the 5 s silence", rep.Heartbeats, rep.Heartbeat)
		}
	case "EncodeStock":
		if rep.Fields["Content-Encoding"] != "gzip" {
			t.Errorf("Content-Encoding %q, want gzip", rep.Fields["Content-Encoding"])
		}
	case "HopByHopHTTP2Stock":
		if rep.Proto != "HTTP/2.0" || !slices.Contains(rep.HopByHop, "Keep-Alive") || !slices.Contains(rep.HopByHop, "Upgrade") {
			t.Errorf("over %s hop-by-hop fields %v, want Keep-Alive and Upgrade over HTTP/2.0", rep.Proto, rep.HopByHop)
		}
	case "HopByHopHTTP3Stock":
		// quic-go's client rejects the whole response
		if rep.Proto != "HTTP/3.0" || rep.Status != 0 || len(rep.HopByHop) != 1 || !strings.Contains(rep.EndError, "invalid header field name") {
			t.Errorf("over %s status %d, hop-by-hop %v, error %q; want the response rejected over HTTP/3.0", rep.Proto, rep.Status, rep.HopByHop, rep.EndError)
		}
	case "HopByHopHTTP2SSE", "HTTP3SSE":
		if want := map[string]string{"HopByHopHTTP2SSE": "HTTP/2.0", "HTTP3SSE": "HTTP/3.0"}[name]; rep.Proto != want || len(rep.HopByHop) != 0 {
			t.Errorf("over %s hop-by-hop fields %v, want none over %s", rep.Proto, rep.HopByHop, want)
		}
	}
}
