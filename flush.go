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

// The response-writer wrapper: the decision whether a response is a
// stream, the repair of a stream's header, and the bytes on their way to
// the stream.

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/limit"
	"github.com/caddy-sse/caddy-sse/internal/stream"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"golang.org/x/net/http/httpguts"
)

// mode is what the writer decided to do with a response, once, in WriteHeader.
type mode uint8

const (
	modeUndecided mode = iota // WriteHeader not called yet
	modePass                  // not a stream: bytes pass through untouched
	modeStream                // a stream: flushed, repaired, maybe heartbeats
	modeRefused               // a stream a limit refused: nothing reaches the client
)

// streamWriter wraps the writer handed to the handlers inside sse, for one
// response. It decides in WriteHeader whether the response is a stream,
// admits it against the limits, repairs its header and opens its stream;
// then it passes the stream's bytes to the stream, and every other
// response's bytes straight through. The stream owns its life (st); the
// writer only wraps bytes and remembers what ServeHTTP needs to finish
// the request.
//
// Lock story: none of its own. Its fields are used only on the goroutine of
// the handlers inside sse (net/http does not allow concurrent use of a
// ResponseWriter) and by ServeHTTP's teardown on the same goroutine, after
// they return. Everything other goroutines touch lives in st, under the
// stream's own lock story (internal/stream).
type streamWriter struct {
	*caddyhttp.ResponseWriterWrapper

	h          *Handler
	req        *http.Request
	eventSrc   bool           // GET whose Accept lists text/event-stream
	frame      stream.Frame   // how heartbeats and retry fields are framed for this client
	start      time.Time      // when ServeHTTP began
	cancel     func(error)    // ends the request seen by the inner handlers
	mode       mode           //
	status     int            // the final status, once decided
	refusal    *limit.Refusal // why a limit refused the stream, in modeRefused
	admitted   bool           // admission done (hold may still be nil: nothing counted it)
	hold       *limit.Hold    // the stream's place in the limit counters, nil if none
	finishOnce sync.Once

	// ownHeader is the response header as sse received it, when the
	// request may be refused late (see noteHeader); set before next runs
	ownHeader http.Header

	// out is the writer chain beneath sse, as the stream writes to it; st
	// is the stream the response becomes, if it does. Both live in the
	// same allocation as the writer.
	out chain
	st  stream.Stream
}

// WriteHeader decides, once, whether the response is a stream and, if so,
// admits it, repairs its header, writes it and opens the stream, which
// flushes the header at once so the client sees the stream open before the
// first event. 1xx responses, 101 included, pass through untouched.
func (sw *streamWriter) WriteHeader(status int) {
	if status < 200 || sw.mode != modeUndecided {
		if sw.mode != modeRefused {
			sw.ResponseWriter.WriteHeader(status)
		}
		return
	}
	sw.status = status
	hdr := sw.Header()
	kind := sw.h.streams.kindOf(status, hdr)
	if kind == notStream {
		sw.mode = modePass
		sw.ResponseWriter.WriteHeader(status)
		return
	}
	if !sw.admitted && sw.req.Method != http.MethodHead {
		if sw.admit(); sw.refusal != nil {
			sw.mode = modeRefused
			sw.resetHeader()
			sw.cancel(errStreamLimit)
			return
		}
	}
	sw.mode = modeStream
	streams := &sw.h.streams
	opt := streams.options(kind == eventStream, status, sw.req.Method, hdr) // heartbeat.go
	opt.Frame, opt.Start, opt.Cancel, opt.Label = sw.frame, sw.start, sw.cancel, sw.describe()
	repairHeader(hdr)
	sw.ResponseWriter.WriteHeader(status)
	sw.out.init(sw.ResponseWriter)
	sw.st.Open(&sw.out, &streams.set, opt)
	liveStreams.Add(&sw.st, streams.group)
}

// admit counts the request against the handler's limits, once: it sets
// hold, or refusal when a limit is full.
func (sw *streamWriter) admit() {
	sw.admitted = true
	sw.hold, sw.refusal = sw.h.lim.admit(sw.req) // limits.go
}

// describe returns what /sse/streams shows of sw's stream but its
// counters: the stream's label, set once when it opens. It runs on the
// handler goroutine, so it may read the request's variables.
func (sw *streamWriter) describe() *streamStatus {
	r, lim := sw.req, &sw.h.lim
	clientIP, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	var zone *string
	if sw.hold != nil {
		// counted by a limit: not so without limits, or when every key
		// of the request was empty
		zone = &lim.zoneName
	}
	return &streamStatus{
		Server:   lim.srvName,
		Host:     r.Host,
		Method:   r.Method,
		Path:     r.URL.Path,
		ClientIP: clientIP,
		Proto:    r.Proto,
		Started:  sw.start.UTC().Format(startedLayout),
		Zone:     zone,
		Frame:    sw.frame.String(),
	}
}

// Write passes p through: to the stream, which flushes it, on a stream;
// untouched otherwise.
func (sw *streamWriter) Write(p []byte) (int, error) {
	if sw.mode == modeUndecided {
		sw.WriteHeader(http.StatusOK)
	}
	switch sw.mode {
	case modePass:
		return sw.ResponseWriter.Write(p)
	case modeRefused:
		return 0, errStreamLimit
	}
	return sw.st.Write(p)
}

// FlushError flushes the response. Stream writes are flushed as they are
// written, so a flush asked by the inner handler (reverse_proxy asks after
// every write of an event stream) has nothing left to do and costs no pass
// through the chain. A flush before WriteHeader commits the header with
// status 200, as net/http does, so the response is classified first.
func (sw *streamWriter) FlushError() error {
	if sw.mode == modeUndecided {
		sw.WriteHeader(http.StatusOK)
	}
	switch sw.mode {
	case modeStream, modeRefused:
		return nil
	}
	return http.NewResponseController(sw.ResponseWriter).Flush()
}

// ReadFrom routes stream bodies through Write, so io.Copy traffic is tracked
// and flushed like any other; other bodies keep the wrapped writer's
// ReadFrom (sendfile).
func (sw *streamWriter) ReadFrom(r io.Reader) (int64, error) {
	if sw.mode == modePass {
		return sw.ResponseWriterWrapper.ReadFrom(r)
	}
	return io.Copy(writerOnly{sw}, r)
}

// writerOnly hides ReadFrom so io.Copy does not recurse.
type writerOnly struct{ io.Writer }

// kindOf tells what kind of stream a response with this status and header
// is. Only 2xx responses with a body are streams.
func (s *streamState) kindOf(status int, hdr http.Header) kind {
	if status < 200 || status > 299 || status == http.StatusNoContent || status == http.StatusResetContent {
		return notStream
	}
	ct := hdr["Content-Type"]
	if len(ct) == 0 {
		return notStream
	}
	mt := mediaType(ct[0])
	if asciiEqualFold(mt, "text/event-stream") {
		return eventStream
	}
	for _, t := range s.types {
		if asciiEqualFold(mt, t) {
			return otherStream
		}
	}
	return notStream
}

// kind of a response.
type kind uint8

const (
	notStream   kind = iota
	eventStream      // text/event-stream
	otherStream      // one of the extra types
)

// mediaType returns the type/subtype of a Content-Type value, without
// parameters or surrounding whitespace, and without allocating. The caller
// compares it case-insensitively (RFC 9110, 8.3.1).
func mediaType(v string) string {
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

// isEventStream reports whether a Content-Type value names text/event-stream.
func isEventStream(v string) bool {
	return asciiEqualFold(mediaType(v), "text/event-stream")
}

// asciiEqualFold is strings.EqualFold for ASCII only: media types are
// ASCII tokens (RFC 9110, 8.3.1), and Unicode folding would take
// "text/event-ſtream" for text/event-stream.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// repairHeader prepares a stream's header for the trip to the client: it
// tells Caddy's encode and the next hop not to transform or buffer the body,
// drops Content-Length (a stream has no length) and strips hop-by-hop fields.
func repairHeader(hdr http.Header) {
	mergeCacheControl(hdr)
	// nginx reads this and turns proxy_buffering off for this response
	// (ngx_http_proxy_module, "X-Accel-Buffering"); it does not forward it
	hdr["X-Accel-Buffering"] = []string{"no"}
	// the standard form of the same request to every intermediary: forward
	// the response as it arrives (RFC 10036). Caddy v2.11.9 honours it too
	// (caddyhttp.IsIncremental: reverse_proxy skips response_buffers for it)
	hdr["Incremental"] = []string{"?1"}
	delete(hdr, "Content-Length")
	stripHopByHop(hdr)
}

// mergeCacheControl adds no-cache and no-transform to Cache-Control, keeping
// the directives already there. no-transform also stops Caddy's encode,
// which checks for it before compressing (encode.go, init), and CDNs.
func mergeCacheControl(hdr http.Header) {
	cc := hdr["Cache-Control"]
	hasNoCache := httpguts.HeaderValuesContainsToken(cc, "no-cache")
	hasNoTransform := httpguts.HeaderValuesContainsToken(cc, "no-transform")
	if hasNoCache && hasNoTransform {
		return
	}
	var b strings.Builder
	for _, v := range cc {
		if v = strings.TrimSpace(v); v != "" {
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(v)
		}
	}
	for _, d := range [...]struct {
		name string
		has  bool
	}{{"no-cache", hasNoCache}, {"no-transform", hasNoTransform}} {
		if !d.has {
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(d.name)
		}
	}
	hdr["Cache-Control"] = []string{b.String()}
}

// hopByHop are the connection-specific fields of RFC 9110, 7.6.1, plus the
// ones that real peers treat the same way. Go's HTTP/2 server drops only
// Connection and Transfer-Encoding; the rest reach the wire, where nghttp2
// (curl) fails the stream with PROTOCOL_ERROR (RFC 9113, 8.2.2); quic-go's
// HTTP/3 server drops none, and its client rejects the response (RFC 9114,
// 4.2).
var hopByHop = []string{
	"Connection",
	"Keep-Alive",       // RFC 2068, 19.7.1; named in RFC 9110, 7.6.1
	"Proxy-Connection", // non-standard, sent by old clients
	"Upgrade",          // RFC 9110, 7.8; only meaningful with 101, which we never touch
	"Transfer-Encoding",
}

// keepAlways are never stripped, even when Connection names them: Alt-Svc is
// Caddy's own HTTP/3 advertisement, Trailer announces trailers.
func keepAlways(name string) bool {
	return strings.EqualFold(name, "Alt-Svc") || strings.EqualFold(name, "Trailer")
}

// stripHopByHop deletes the fields named in Connection, then the fixed
// hop-by-hop fields, and TE unless it is "trailers" (RFC 9113, 8.2.2).
func stripHopByHop(hdr http.Header) {
	for _, v := range hdr["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" && !keepAlways(name) {
				hdr.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		delete(hdr, name)
	}
	if te := hdr["Te"]; len(te) > 0 && !(len(te) == 1 && strings.EqualFold(strings.TrimSpace(te[0]), "trailers")) {
		delete(hdr, "Te")
	}
}

// A refusal (refuse_status, or the EventSource retry answer) is sse's own
// response: it must carry none of the header fields the handlers inside sse
// set for the response it replaces (the upstream's Set-Cookie, Server,
// caching fields…), and keep the ones set before sse ran (Caddy's Server
// and Alt-Svc, the header directive). So the writer notes the header as it
// was when the request reached sse, for requests that may be refused after
// the handlers inside it ran, and puts it back before the answer.

// noteHeader keeps a copy of the response header as sse received it.
func (sw *streamWriter) noteHeader() {
	sw.ownHeader = sw.Header().Clone()
	if sw.ownHeader == nil {
		sw.ownHeader = http.Header{}
	}
}

// resetHeader puts the response header back as sse received it, dropping
// every field the handlers inside sse added or changed. Without a note of
// it, it drops what describes the replaced body and the hop-by-hop fields.
func (sw *streamWriter) resetHeader() {
	hdr := sw.Header()
	if sw.ownHeader == nil {
		clearRepresentation(hdr)
		return
	}
	for k := range hdr {
		if _, ok := sw.ownHeader[k]; !ok {
			delete(hdr, k)
		}
	}
	for k, v := range sw.ownHeader {
		hdr[k] = append([]string(nil), v...)
	}
}

// clearRepresentation removes what the refused response's producer set
// about its body, so the error response that replaces it does not carry it.
func clearRepresentation(hdr http.Header) {
	for _, name := range [...]string{
		"Content-Type", "Content-Length", "Content-Encoding", "Content-Language",
		"Cache-Control", "Etag", "Last-Modified", "X-Accel-Buffering", "Incremental",
	} {
		delete(hdr, name)
	}
	stripHopByHop(hdr)
}

// Interface guards
var (
	_ http.ResponseWriter = (*streamWriter)(nil)
	_ io.ReaderFrom       = (*streamWriter)(nil)
)
