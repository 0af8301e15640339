package caddysse

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// A refusal carries only its own header fields: when a limit refuses a
// stream after the upstream answered (a client that is not an EventSource,
// admitted when the response turns out to be a stream), the 503 or 429
// keeps none of the upstream's fields, Set-Cookie above all, and keeps what
// was set before sse ran (the header directive, Caddy's Server). Issue 14,
// item 6.
func TestRefusalDropsUpstreamHeader(t *testing.T) {
	upstream := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		streamHead(w, "Set-Cookie", "session=upstream", "X-Upstream", "yes", "Etag", `"1"`)
		if send(w, "data: open\n\n") != nil {
			return
		}
		<-r.Context().Done()
	})
	c := startCaddy(t, upstream, `
http://127.0.0.1:{{.HTTP}} {
	header X-Site kept
	handle /503/* {
		sse {
			limit 1
		}
		reverse_proxy {{.Upstream}}
	}
	handle /429/* {
		sse {
			limit 1
			refuse_status 429
		}
		reverse_proxy {{.Upstream}}
	}
}
`)
	client := limClient()
	for _, tc := range []struct {
		path   string
		status int
	}{
		{"/503/", http.StatusServiceUnavailable},
		{"/429/", http.StatusTooManyRequests},
	} {
		t.Run(tc.path, func(t *testing.T) {
			held, _ := limOpen(t, client, c.BaseURL(), limReq{path: tc.path + "?id=held"})
			if held.StatusCode != http.StatusOK || held.Header.Get("Set-Cookie") == "" {
				t.Fatalf("first stream: status %d, Set-Cookie %q: want an admitted stream with the upstream's fields",
					held.StatusCode, held.Header.Get("Set-Cookie"))
			}
			res, _ := limOpen(t, client, c.BaseURL(), limReq{path: tc.path + "?id=over"})
			if res.StatusCode != tc.status {
				t.Fatalf("status = %d, want %d", res.StatusCode, tc.status)
			}
			for _, name := range []string{"Set-Cookie", "X-Upstream", "Etag", "Content-Type"} {
				if v := res.Header.Values(name); len(v) != 0 {
					if name == "Content-Type" && v[0] != "text/event-stream" {
						continue // Caddy's own error response may set one
					}
					t.Errorf("refusal carries the upstream's %s: %q", name, v)
				}
			}
			for _, name := range []string{"X-Site", "Retry-After", "Server"} {
				if res.Header.Get(name) == "" {
					t.Errorf("refusal lacks %s (header: %v)", name, res.Header)
				}
			}
		})
	}
}

// The answer that tells an EventSource to come back after an upstream
// failure (200, retry:) carries none of the fields the handlers inside sse
// set before they failed, and keeps those set before sse. Issue 14, item 6.
func TestRetryAnswerDropsInnerHeader(t *testing.T) {
	h, _ := limHandler(t, &Handler{})
	req := httptest.NewRequest(http.MethodGet, "http://example.test/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	rec := httptest.NewRecorder()
	rec.Header().Set("X-Site", "kept")
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), rec, nil)
	err := h.ServeHTTP(rec, req, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Set-Cookie", "session=inner")
		w.Header().Set("X-Inner", "yes")
		return caddyhttp.Error(http.StatusBadGateway, errors.New("upstream down"))
	}))
	if err != nil {
		t.Fatalf("ServeHTTP = %v, want the retry answer", err)
	}
	if rec.Code != http.StatusOK || !stream.IsEventStream(rec.Header().Get("Content-Type")) {
		t.Fatalf("status %d, Content-Type %q: not the retry answer", rec.Code, rec.Header().Get("Content-Type"))
	}
	for _, name := range []string{"Set-Cookie", "X-Inner"} {
		if v := rec.Header().Values(name); len(v) != 0 {
			t.Errorf("retry answer carries %s: %q", name, v)
		}
	}
	if rec.Header().Get("X-Site") != "kept" {
		t.Errorf("retry answer lost X-Site, set before sse (header: %v)", rec.Header())
	}
}
