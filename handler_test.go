package caddysse

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// A request is EventSource-style, and so gets the admission, the
// Accept-Encoding and the refusal treatment of a browser's EventSource,
// exactly when it is a GET whose Accept lists text/event-stream, in any
// position, casing or with parameters (issue 4, DESIGN.md section 2).
func TestIsEventSourceRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string
		accept []string
		want   bool
	}{
		{"browser EventSource", http.MethodGet, []string{"text/event-stream"}, true},
		{"listed among others", http.MethodGet, []string{"application/json, text/event-stream;q=0.9"}, true},
		{"odd casing and spaces", http.MethodGet, []string{"  Text/Event-Stream ; q=1"}, true},
		{"second header line", http.MethodGet, []string{"text/html", "text/event-stream"}, true},
		{"POST fetch client", http.MethodPost, []string{"text/event-stream"}, false},
		{"HEAD", http.MethodHead, []string{"text/event-stream"}, false},
		{"no Accept", http.MethodGet, nil, false},
		{"wildcard only", http.MethodGet, []string{"*/*"}, false},
		{"longer type", http.MethodGet, []string{"text/event-streams"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "/", nil)
			req.Header["Accept"] = tc.accept
			if got := isEventSourceRequest(req); got != tc.want {
				t.Errorf("isEventSourceRequest(%s, Accept %q) = %v, want %v", tc.method, tc.accept, got, tc.want)
			}
		})
	}
}

// An EventSource-style request reaches the handlers inside sse asking for
// identity, so the upstream does not compress the stream (issue 2, point
// 6); deleting the field would not do, because reverse_proxy's transport
// then asks for gzip itself. Other requests keep what the client sent.
func TestEventSourceRequestAsksForIdentity(t *testing.T) {
	h := fuzzHandler(t, `{}`)
	for _, tc := range []struct {
		name     string
		method   string
		accept   string
		wantSeen string
	}{
		{"EventSource GET", http.MethodGet, "text/event-stream", "identity"},
		{"fetch POST", http.MethodPost, "text/event-stream", "gzip, br"},
		{"plain GET", http.MethodGet, "text/html", "gzip, br"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "http://example.test/", nil)
			req.Header.Set("Accept", tc.accept)
			req.Header.Set("Accept-Encoding", "gzip, br")
			var seen string
			_, err := limServe(h, req, func(w http.ResponseWriter, r *http.Request) error {
				seen = r.Header.Get("Accept-Encoding")
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if seen != tc.wantSeen {
				t.Errorf("inner handler saw Accept-Encoding %q, want %q", seen, tc.wantSeen)
			}
		})
	}
}

// A 502, 503 or 504 from the handlers inside sse, before anything was
// written, reaches an EventSource-style client as 200 + retry:, which makes
// a browser reconnect instead of giving up for good; other clients, other
// statuses, and upstream_errors pass get the error as it is (issue 4).
func TestUpstreamFailureAnswer(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cfg        string
		method     string
		accept     string
		status     int
		wantRetry  bool
		wantStatus int // of the error returned, when no retry answer
	}{
		{"EventSource, 502", `{}`, http.MethodGet, "text/event-stream", 502, true, 0},
		{"EventSource, 503", `{}`, http.MethodGet, "text/event-stream", 503, true, 0},
		{"EventSource, 504", `{}`, http.MethodGet, "text/event-stream", 504, true, 0},
		{"EventSource, 500 stays", `{}`, http.MethodGet, "text/event-stream", 500, false, 500},
		{"EventSource, 404 stays", `{}`, http.MethodGet, "text/event-stream", 404, false, 404},
		{"fetch client, 502 stays", `{}`, http.MethodPost, "text/event-stream", 502, false, 502},
		{"plain GET, 502 stays", `{}`, http.MethodGet, "*/*", 502, false, 502},
		{"upstream_errors pass", `{"pass_upstream_errors": true}`, http.MethodGet, "text/event-stream", 502, false, 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := fuzzHandler(t, tc.cfg)
			req := httptest.NewRequest(tc.method, "http://example.test/", nil)
			req.Header.Set("Accept", tc.accept)
			upstreamErr := errors.New("dial tcp: connection refused")
			rec, err := limServe(h, req, func(w http.ResponseWriter, r *http.Request) error {
				return caddyhttp.Error(tc.status, upstreamErr)
			})
			if !tc.wantRetry {
				var he caddyhttp.HandlerError
				if !errors.As(err, &he) || he.StatusCode != tc.wantStatus || !errors.Is(err, upstreamErr) {
					t.Fatalf("ServeHTTP error = %v, want the inner %d error passed on", err, tc.wantStatus)
				}
				return
			}
			if err != nil {
				t.Fatalf("ServeHTTP error = %v, want the retry answer instead", err)
			}
			if rec.Code != http.StatusOK || !stream.IsEventStream(rec.Header().Get("Content-Type")) {
				t.Fatalf("answer %d %q, want 200 text/event-stream", rec.Code, rec.Header().Get("Content-Type"))
			}
			if body := rec.Body.String(); !strings.HasPrefix(body, "retry: ") || strings.Contains(body, "data:") {
				t.Errorf("body %q, want only a retry field", body)
			}
		})
	}
}
