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

package caddysse

// `caddy sse check`, run as Caddy runs it (the registered command, through
// cobra), against a real Caddy with sse in front of an upstream, and
// against the same upstream through stock Caddy.

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-sse/caddy-sse/internal/check"
)

// runSSECommand runs `caddy sse <args>` through the registered command and
// returns its output and exit status.
func runSSECommand(t *testing.T, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	reg, ok := caddycmd.Commands()["sse"]
	if !ok {
		t.Fatal("no sse command registered")
	}
	cmd := &cobra.Command{Use: "sse"}
	reg.CobraFunc(cmd)
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	cmd.SetContext(t.Context())
	err := cmd.Execute()
	switch {
	case err == nil:
		status = 0
	case errors.Is(err, errProblems):
		status = 1
	case err.Error() == "exiting with status 2": // caddycmd's exit error, which Main exits with
		status = 2
	default:
		t.Fatalf("caddy sse %v: unexpected error %v; stderr %s", args, err, errOut.String())
	}
	return out.String(), errOut.String(), status
}

// TestCheckCommand: with sse in front, a stream that goes quiet keeps
// its heartbeats and the check says healthy (exit 0); through stock
// Caddy, the same stream's silence without heartbeat is a problem (exit
// 1), in plain words and in JSON.
func TestCheckCommand(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		streamHead(w)
		for k := range 4 {
			gap := 100 * time.Millisecond
			if k == 3 {
				gap = 1500 * time.Millisecond // quiet
			}
			if k > 0 {
				select {
				case <-time.After(gap): // the upstream's pace
				case <-r.Context().Done():
					return
				}
			}
			if send(w, "data: event\n\n") != nil {
				return
			}
		}
	})
	c := startCaddy(t, up, `
http://127.0.0.1:{{.HTTP}} {
	handle /raw/* {
		reverse_proxy {{.Upstream}}
	}
	handle {
		sse {
			heartbeat 300ms
		}
		reverse_proxy {{.Upstream}}
	}
}`)
	t.Run("WithSSE", func(t *testing.T) {
		out, _, status := runSSECommand(t, "check", c.BaseURL()+"/events", "--idle", "1s", "--json")
		var rep check.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("--json output is not one JSON object: %v\n%s", err, out)
		}
		if status != 0 || len(rep.Problems) != 0 || rep.End != check.EndServer || rep.Events != 4 || rep.Heartbeats < 2 {
			t.Errorf("exit %d, problems %+v, end %q, %d events, %d heartbeats; want 0, none, server, 4, >= 2\n%s",
				status, rep.Problems, rep.End, rep.Events, rep.Heartbeats, out)
		}
		if !strings.Contains(out, `"problems": [],`) {
			t.Errorf("--json of a healthy stream: want \"problems\": [], got\n%s", out)
		}
		if rep.Fields["Incremental"] != "?1" || rep.Fields["X-Accel-Buffering"] != "no" {
			t.Errorf("fields %v, want sse's Incremental and X-Accel-Buffering", rep.Fields)
		}
		out, _, status = runSSECommand(t, "check", c.BaseURL()+"/events", "--idle", "1s")
		if status != 0 || !strings.Contains(out, "\nhealthy: ") || !strings.Contains(out, `heartbeats       comments (": heartbeat")`) {
			t.Errorf("plain output, exit %d:\n%s\nwant healthy, with the heartbeats", status, out)
		}
	})
	t.Run("WithoutSSE", func(t *testing.T) {
		out, _, status := runSSECommand(t, "check", c.BaseURL()+"/raw/events", "--idle", "1s", "--json")
		var rep check.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("--json output is not one JSON object: %v\n%s", err, out)
		}
		if status != 1 || len(rep.Problems) != 1 || rep.Problems[0].Kind != check.KindNoHeartbeat || rep.Heartbeats != 0 {
			t.Errorf("exit %d, problems %+v, %d heartbeats; want 1, no_heartbeat, 0", status, rep.Problems, rep.Heartbeats)
		}
		out, _, status = runSSECommand(t, "check", c.BaseURL()+"/raw/events", "--idle", "1s")
		if status != 1 || !strings.Contains(out, "\nproblem no_heartbeat: nothing arrived for 1.") || !strings.Contains(out, ". Fix: in Caddy, put sse on the route") {
			t.Errorf("plain output, exit %d:\n%s\nwant the no_heartbeat problem and its fix", status, out)
		}
	})
}

// TestCheckCommandCannotCheck: what cannot be checked at all exits 2,
// with the reason on stderr, or as {"error": …} with --json.
func TestCheckCommandCannotCheck(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String() + "/events"
	l.Close()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"refused", []string{"check", refused}, "connection refused"},
		{"no URL", []string{"check"}, "want one URL"},
		{"bad --for", []string{"check", refused, "--for", "soon"}, `--for "soon"`},
		{"bad --header", []string{"check", refused, "--header", "no colon"}, `--header "no colon"`},
		{"bad --http", []string{"check", refused, "--http", "1.0"}, "unknown HTTP version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, status := runSSECommand(t, tc.args...)
			if status != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("caddy sse %v: exit %d, stderr %q; want 2 and %q", tc.args, status, stderr, tc.want)
			}
		})
	}
	out, _, status := runSSECommand(t, "check", refused, "--json")
	var v struct{ URL, Error string }
	if err := json.Unmarshal([]byte(out), &v); err != nil || status != 2 || v.URL != refused || !strings.Contains(v.Error, "connection refused") {
		t.Errorf("--json: exit %d, output %q (%v); want 2 and {\"url\", \"error\"}", status, out, err)
	}
}
