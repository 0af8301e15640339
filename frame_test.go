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

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// frameClients are requests as the clients of DESIGN.md section 8 send
// them: method and Accept.
var frameClients = []struct {
	name, method, accept string
	auto                 stream.Frame // the frame heartbeat_frame auto gives it
}{
	{"EventSource (browsers, eventsource)", http.MethodGet, "text/event-stream", stream.FrameLine},
	{"@microsoft/fetch-event-source", http.MethodPost, "text/event-stream", stream.FrameLine},
	{"openai", http.MethodPost, "application/json", stream.FrameBlank},
	{"@google/genai", http.MethodPost, "*/*", stream.FrameBlank},
	{"google.golang.org/genai", http.MethodPost, "", stream.FrameBlank},
	{"@anthropic-ai/sdk", http.MethodPost, "application/json", stream.FrameBlank},
	{"no Accept", http.MethodGet, "", stream.FrameBlank},
	{"Accept lists it among others", http.MethodPost, "application/json, text/event-stream", stream.FrameLine},
}

// With heartbeat_frame auto (the default), a client whose Accept lists
// text/event-stream gets heartbeats as comment lines and every other client
// gets them as two blank lines in the stream's own line ends; blank, block
// and line force one frame for all. The retry field sse writes when it ends
// a stream is framed the same way, and the blank frame has none (its
// clients reject it).
func TestHeartbeatFramePerClient(t *testing.T) {
	for _, cfg := range []struct {
		name, json string
		force      *stream.Frame
	}{
		{"default", `{"heartbeat": "1h"}`, nil},
		{"auto", `{"heartbeat": "1h", "heartbeat_frame": "auto"}`, nil},
		{"blank", `{"heartbeat": "1h", "heartbeat_frame": "blank"}`, ptr(stream.FrameBlank)},
		{"block", `{"heartbeat": "1h", "heartbeat_frame": "block"}`, ptr(stream.FrameBlock)},
		{"line", `{"heartbeat": "1h", "heartbeat_frame": "line"}`, ptr(stream.FrameLine)},
	} {
		h := fuzzHandler(t, cfg.json)
		for _, c := range frameClients {
			for _, eol := range []string{"\n", "\r\n"} {
				t.Run(fmt.Sprintf("%s/%s/%q", cfg.name, c.name, eol), func(t *testing.T) {
					want := c.auto
					if cfg.force != nil {
						want = *cfg.force
					}
					event := "data: a" + eol + eol
					beat := map[stream.Frame]string{
						stream.FrameLine:  ": heartbeat\n",
						stream.FrameBlock: ": heartbeat\n\n",
						stream.FrameBlank: eol + eol,
					}[want]
					retry := map[stream.Frame]string{
						stream.FrameLine:  `retry: \d+\n`,
						stream.FrameBlock: `retry: \d+\n\n`,
						stream.FrameBlank: ``,
					}[want]
					re := regexp.MustCompile(`^` + regexp.QuoteMeta(event+beat) + retry + `$`)
					req := httptest.NewRequest(c.method, "http://example.test/", nil)
					if c.accept != "" {
						req.Header.Set("Accept", c.accept)
					}
					rec, err := limServe(h, req, func(w http.ResponseWriter, r *http.Request) error {
						sw, ok := w.(*streamWriter)
						if !ok {
							return fmt.Errorf("inner handler got a %T", w)
						}
						w.Header().Set("Content-Type", "text/event-stream")
						if _, err := w.Write([]byte(event)); err != nil {
							return err
						}
						fireIdleTimer(sw)
						sw.st.End(stream.EndDrain)
						return nil
					})
					if err != nil {
						t.Fatal(err)
					}
					body := rec.Body.String()
					if !re.MatchString(body) {
						t.Errorf("%s %q: body %q, want the %s frame for the heartbeat and the retry field (%s)", c.method, c.accept, body, want, re)
					}
				})
			}
		}
	}
}

// The answers that tell an EventSource to come back later (a limit refused
// it, or the upstream failed) carry the retry field in the client's frame.
func TestRetryAnswerFrame(t *testing.T) {
	for _, tc := range []struct {
		cfg, want string
	}{
		{`{"limits": [{"max": 1}]}`, `^retry: \d+\n$`},
		{`{"limits": [{"max": 1}], "heartbeat_frame": "block"}`, `^retry: \d+\n\n$`},
		// the blank frame's streams end without one, but an answer is
		// nothing but the retry field: it stands alone
		{`{"limits": [{"max": 1}], "heartbeat_frame": "blank"}`, `^retry: \d+\n\n$`},
	} {
		h := fuzzHandler(t, tc.cfg)
		t.Run(h.HeartbeatFrame, func(t *testing.T) {
			es := func() *http.Request {
				req := httptest.NewRequest(http.MethodGet, "http://example.test/", nil)
				req.Header.Set("Accept", "text/event-stream")
				return req
			}
			// the upstream failed
			rec, err := limServe(h, es(), func(http.ResponseWriter, *http.Request) error {
				return caddyhttp.Error(http.StatusBadGateway, errors.New("refused"))
			})
			if err != nil || !regexp.MustCompile(tc.want).MatchString(rec.Body.String()) {
				t.Errorf("upstream failure answer %q, %v; want %s", rec.Body.String(), err, tc.want)
			}
			// a limit is full: one stream holds the only slot
			held := make(chan struct{})
			release := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = limServe(h, es(), func(w http.ResponseWriter, r *http.Request) error {
					w.Header().Set("Content-Type", "text/event-stream")
					w.WriteHeader(http.StatusOK)
					close(held)
					<-release
					return nil
				})
			}()
			<-held
			rec, err = limServe(h, es(), limStreamNext)
			close(release)
			<-done
			if err != nil || !regexp.MustCompile(tc.want).MatchString(rec.Body.String()) {
				t.Errorf("limit refusal %q, %v; want %s", rec.Body.String(), err, tc.want)
			}
			if got := rec.Header().Get("Incremental"); got != "?1" {
				t.Errorf("refusal answer Incremental = %q, want ?1", got)
			}
		})
	}
}

// Every response sse treats as a stream says Incremental: ?1 (RFC 10036),
// the standard request to intermediaries to forward it as it arrives;
// other responses do not get it.
func TestIncrementalHeader(t *testing.T) {
	h := fuzzHandler(t, `{"types": ["application/x-ndjson"]}`)
	for _, tc := range []struct {
		ct     string
		status int
		want   string
	}{
		{"text/event-stream", http.StatusOK, "?1"},
		{"text/event-stream; charset=utf-8", http.StatusCreated, "?1"},
		{"application/x-ndjson", http.StatusOK, "?1"},
		{"text/plain", http.StatusOK, ""},
		{"text/event-stream", http.StatusNotFound, ""},
	} {
		t.Run(fmt.Sprintf("%s %d", tc.ct, tc.status), func(t *testing.T) {
			rec, err := limServe(h, httptest.NewRequest(http.MethodGet, "http://example.test/", nil),
				func(w http.ResponseWriter, r *http.Request) error {
					w.Header().Set("Content-Type", tc.ct)
					w.WriteHeader(tc.status)
					_, err := w.Write([]byte("x\n"))
					return err
				})
			if err != nil {
				t.Fatal(err)
			}
			if got := rec.Header().Get("Incremental"); got != tc.want {
				t.Errorf("Incremental = %q, want %q", got, tc.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
