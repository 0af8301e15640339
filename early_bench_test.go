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
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// What open_after costs a whole request through ServeHTTP whose upstream
// answers at once with a short stream: with open_after off, and on, for a
// request that cannot be a candidate (a plain GET), an EventSource-style
// GET and a POST with "stream": true (its body read and put back).
func BenchmarkOpenAfterRequest(b *testing.B) {
	const body = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Tell me something, slowly."}]}`
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if r.Body != nil {
			io.Copy(io.Discard, r.Body)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(benchEvent)
		return err
	})
	for _, open := range []struct {
		name string
		d    time.Duration
	}{{"off", 0}, {"on", 10 * time.Second}} {
		d := caddy.Duration(open.d)
		h := provisionHandler(b, &Handler{OpenAfter: &d})
		for _, rq := range []struct {
			name, method, accept, body string
		}{
			{"get", "GET", "*/*", ""},
			{"eventsource", "GET", "text/event-stream", ""},
			{"post_stream", "POST", "application/json", body},
		} {
			b.Run(open.name+"/"+rq.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					req := httptest.NewRequest(rq.method, "/v1/chat/completions", strings.NewReader(rq.body))
					req.Header.Set("Accept", rq.accept)
					if rq.method == "POST" {
						req.Header.Set("Content-Type", "application/json")
					}
					dw := &discardFlusher{header: http.Header{}}
					if err := h.ServeHTTP(dw, req, next); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
