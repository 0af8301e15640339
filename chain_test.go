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
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/encode"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/encode/gzip"
)

// Each upstream write of a stream passes Caddy's writer chain once: it
// reaches the client as one write and one flush, although reverse_proxy
// asks sse to flush after it, and although encode, in front of sse,
// flushes every write of an Incremental response itself. A heartbeat is
// one write and one flush too. Without encode, sse flushes each write
// itself. Issue 18, item 5.
func TestOnePassPerWrite(t *testing.T) {
	events := []string{"data: one\n\n", "data: two\n\n", "id: 3\ndata: three\n\n"}
	for _, withEncode := range []bool{true, false} {
		name := "sse alone"
		if withEncode {
			name = "encode gzip, then sse"
		}
		t.Run(name, func(t *testing.T) {
			d := caddy.Duration(3600e9)
			h := provisionHandler(t, &Handler{Heartbeat: &d})
			rec := newOpRecorder()
			req := httptest.NewRequest(http.MethodGet, "http://example.test/events", nil)
			req.Header.Set("Accept-Encoding", "gzip")
			req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), rec, nil)
			upstream := caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusOK)
				rc := http.NewResponseController(w)
				for _, ev := range events {
					if _, err := w.Write([]byte(ev)); err != nil {
						return err
					}
					// as reverse_proxy does after every write of an event stream
					if err := rc.Flush(); err != nil {
						return err
					}
				}
				w.(*streamWriter).st.Due() // a heartbeat, as a quiet interval ends
				return nil
			})
			sse := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				return h.ServeHTTP(w, r, upstream)
			})
			var err error
			if withEncode {
				err = provisionedEncode(t).ServeHTTP(rec, req, sse)
			} else {
				err = sse.ServeHTTP(rec, req)
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range rec.snapshot() {
				got = append(got, o.name())
			}
			want := []string{"header 200", "flush"}
			for _, ev := range events {
				want = append(want, "write "+ev, "flush")
			}
			want = append(want, "write \n\n", "flush") // the blank frame: no Accept: text/event-stream
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("the base writer saw\n%q\nwant one write and one flush per upstream write and per heartbeat\n%q", got, want)
			}
		})
	}
}

// The probe of encode's writer found, in the Caddy this is built with,
// that encode flushes the writes of an Incremental stream itself: else
// sse would flush every write twice there.
func TestEncodeFlushesIncrementalWrites(t *testing.T) {
	if encodeFlushesWrites == nil {
		t.Fatal("probeEncode: encode's writer does not write and flush an Incremental stream itself, or could not be found")
	}
}

// provisionedEncode returns Caddy's encode handler with gzip, provisioned.
func provisionedEncode(t *testing.T) *encode.Encode {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	t.Cleanup(cancel)
	enc := &encode.Encode{EncodingsRaw: caddy.ModuleMap{"gzip": json.RawMessage(`{}`)}}
	if err := enc.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	return enc
}
