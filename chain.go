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

// The writer chain beneath sse, as a stream writes to it: one pass through
// the chain per write. A write that the next writer already flushes is not
// flushed again.

import (
	"net/http"
	"net/url"
	"reflect"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/encode"
)

// chain writes a stream's bytes to the writer sse wraps, and flushes them.
//
// Every pass through Caddy's writer chain costs: each writer's own work,
// and a new write deadline in the server's idle-timeout writer. sse marks
// every stream Incremental (RFC 10036), and Caddy's encode, ordered just
// outside sse, flushes after every write of an Incremental response (and
// writes and flushes its header at once). Flushing again from sse would
// pass the whole chain a second time for nothing, so when the writer sse
// wraps is encode's (found by type, and only if encode was seen to flush
// that way: see encodeFlushesWrites), a stream's write is its flush.
type chain struct {
	w  http.ResponseWriter
	rc *http.ResponseController // nil when w flushes each write itself
}

// init points c at w, the writer sse wraps, once the stream's header went
// to it.
func (c *chain) init(w http.ResponseWriter) {
	c.w = w
	if encodeFlushesWrites == nil || reflect.TypeOf(w) != encodeFlushesWrites {
		c.rc = http.NewResponseController(w)
	}
}

// Write passes p down the chain.
func (c *chain) Write(p []byte) (int, error) { return c.w.Write(p) }

// Flush pushes what was written to the client, unless the chain did so
// with the write.
func (c *chain) Flush() error {
	if c.rc == nil {
		return nil
	}
	return c.rc.Flush()
}

// encodeFlushesWrites is the type of the writer Caddy's encode hands the
// handlers inside it, if that writer was seen to write an Incremental
// event stream's header at once and to flush every write of it itself;
// nil if it was not (another Caddy version may do otherwise), and then sse
// flushes every write.
var encodeFlushesWrites = probeEncode()

// probeEncode writes a stream with the header sse gives it through a real
// encode handler into a recorder, and returns the type of encode's writer
// if encode flushed the header and the write by itself.
func probeEncode() reflect.Type {
	rec := &flushRecorder{header: http.Header{}}
	var typ reflect.Type
	ok := false
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
		typ = reflect.TypeOf(w)
		// what encode reads of the header sse gives a stream (repairHeader)
		hdr := w.Header()
		hdr.Set("Content-Type", "text/event-stream")
		hdr.Set("Cache-Control", "no-cache, no-transform")
		hdr.Set("Incremental", "?1")
		w.WriteHeader(http.StatusOK)
		headerFlushed := rec.flushes > 0 && !rec.pending
		if _, err := w.Write([]byte(": probe\n\n")); err != nil {
			return err
		}
		ok = headerFlushed && !rec.pending
		return nil
	})
	req := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/"}, Header: http.Header{}}
	if err := new(encode.Encode).ServeHTTP(rec, req, next); err != nil || !ok {
		return nil
	}
	return typ
}

// flushRecorder records whether what was written to it has been flushed.
type flushRecorder struct {
	header  http.Header
	flushes int
	pending bool // written (header or body) since the last flush
}

func (r *flushRecorder) Header() http.Header { return r.header }

func (r *flushRecorder) WriteHeader(int) { r.pending = true }

func (r *flushRecorder) Write(p []byte) (int, error) {
	r.pending = true
	return len(p), nil
}

func (r *flushRecorder) Flush() {
	r.flushes++
	r.pending = false
}

// Interface guards
var (
	_ http.Flusher = (*flushRecorder)(nil)
)
