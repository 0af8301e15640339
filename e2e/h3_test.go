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
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// TestHTTP3OutlivesIdleTimeout streams over HTTP/3 (quic-go's client)
// through Caddy, with a hop-by-hop field set by the header directive, and
// an upstream that stays quiet for longer than the QUIC idle timeout. With
// heartbeats, the response has no header error and the stream survives:
// the events after the quiet stretch arrive. Without heartbeats, the same
// quiet stretch kills the connection with an idle timeout: the control.
//
// Caddy v2.11.9 sets no MaxIdleTimeout on its QUIC listener (listeners.go)
// and has no option for it, so the server's is quic-go's default, 30s.
// QUIC uses the smaller of the two peers' idle timeouts (RFC 9000 10.1),
// so the client's, lowered to 3s, sets it for the connection.
func TestHTTP3OutlivesIdleTimeout(t *testing.T) {
	const (
		idleTimeout = 3 * time.Second
		quietFor    = 8 * time.Second
	)
	var writes [2]writeLog // heartbeat on, off
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		k := 0
		if r.URL.Path == "/noheartbeat/events" {
			k = 1
		}
		streamHead(w)
		for i := 1; i <= 4; i++ {
			if i == 3 && !quiet(r, quietFor) {
				return
			}
			id := strconv.Itoa(i)
			at, err := send(w, event{ID: id, Data: "event " + id}.encode())
			if err != nil {
				return
			}
			writes[k].note(id, at)
		}
	})
	c := startCaddy(t, up, `
https://localhost:{{.HTTPS}} {
	tls internal
	@notReady not path /ready
	header @notReady Keep-Alive "timeout=5"
	encode gzip zstd
	handle /ready {
		respond "ok"
	}
	handle /raw/* {
		reverse_proxy {{.Upstream}}
	}
	handle /noheartbeat/* {
		sse {
			heartbeat off
		}
		reverse_proxy {{.Upstream}}
	}
	handle {
		sse {
			heartbeat 1s
		}
		reverse_proxy {{.Upstream}}
	}
}`)

	for _, tc := range []struct {
		name     string
		path     string
		k        int // index into writes
		survives bool
	}{
		{"Heartbeats", "/events", 0, true},
		{"NoHeartbeatsControl", "/noheartbeat/events", 1, false},
	} {
		// the cases' quiet stretches overlap
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr := h3Transport(t, idleTimeout)
			client := &http.Client{Transport: tr}
			waitH3(t, client, c.TLSURL()+"/ready")
			res, _ := openStream(t, client, c.TLSURL()+tc.path, "Accept", "text/event-stream")
			if res.ProtoMajor != 3 {
				t.Fatalf("response over %s, want HTTP/3", res.Proto)
			}
			if v := res.Header.Get("Keep-Alive"); v != "" {
				t.Errorf("response has Keep-Alive: %q over HTTP/3, want none", v)
			}
			r := newSSEReader(res.Body)
			if !r.next(2, 10*time.Second) {
				t.Fatalf("got %d events before the quiet stretch, want 2; end %v", len(r.events), r.end)
			}
			w2, _ := writes[tc.k].get("2")
			if tc.survives {
				if !r.next(4, quietFor+15*time.Second) {
					t.Fatalf("got %d events, want 4: the stream did not survive %v quiet with a %v idle timeout; end %v",
						len(r.events), quietFor, idleTimeout, r.end)
				}
				w3, _ := writes[tc.k].get("3")
				if n := r.commentsBetween(w2, w3); n < 4 {
					t.Errorf("got %d heartbeats in the %v quiet stretch, want >= 4", n, quietFor)
				}
				if end := r.waitEnd(10 * time.Second); !isCleanEnd(end) {
					t.Errorf("stream ended with %v, want a clean end", end)
				}
				return
			}
			end := r.waitEnd(quietFor + 15*time.Second)
			if end == nil || len(r.events) > 2 {
				t.Fatalf("stream without heartbeats survived the quiet stretch (%d events, end %v); the control shows nothing",
					len(r.events), end)
			}
			var idle *quic.IdleTimeoutError
			if !errors.As(end.err, &idle) {
				t.Errorf("stream ended with %v, want a QUIC idle timeout", end.err)
			}
			if after := end.at.Sub(w2); after > quietFor {
				t.Errorf("stream ended %v after the last event, want about %v", after, idleTimeout)
			}
		})
	}

	// control: without sse, the Keep-Alive field set by header reaches
	// quic-go's client, which rejects the whole response
	t.Run("HopByHopWithoutSSEControl", func(t *testing.T) {
		client := &http.Client{Transport: h3Transport(t, idleTimeout)}
		waitH3(t, client, c.TLSURL()+"/ready")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.TLSURL()+"/raw/events", nil)
		res, err := client.Do(req)
		if err == nil {
			res.Body.Close()
			t.Fatalf("without sse, got %s with Keep-Alive %q over HTTP/3; the control shows nothing",
				res.Status, res.Header.Get("Keep-Alive"))
		}
		if !strings.Contains(err.Error(), "keep-alive") {
			t.Errorf("without sse, error %v, want one about the keep-alive field", err)
		}
	})
}
