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
	"strings"
	"sync"
	"sync/atomic"
	"time"

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

// streamWriter wraps the writer handed to the handlers inside sse. It decides
// in WriteHeader whether the response is a stream; for streams it repairs the
// header, flushes every write, tracks event boundaries and lets the stream's
// timer write heartbeats and end the stream between events.
//
// The fields above mu are set on the handler goroutine before the stream's
// timer exists and are read-only afterwards.
type streamWriter struct {
	*caddyhttp.ResponseWriterWrapper

	h          *Handler
	req        *http.Request
	cancel     func(error)              // ends the request seen by the inner handlers
	rc         *http.ResponseController // flushes the wrapped writer
	start      time.Time                // when ServeHTTP began
	eventSrc   bool                     // GET whose Accept lists text/event-stream
	frame      frameKind                // how heartbeats and retry fields are framed for this client
	mode       mode
	status     int
	sse        bool          // Content-Type is text/event-stream (not an extra type)
	encoded    bool          // the body has a content coding: nothing may be added to it
	beats      bool          // heartbeats are on for this stream
	interval   time.Duration // this stream's jittered heartbeat interval
	slots      []slot        // limit slots held; released once in finish
	refusal    *refusal      // why a limit refused the stream, in modeRefused
	admitted   bool          // admission done (slots may still be empty without limits)
	tmu        sync.Mutex    // guards timer arming against finish; see rearm
	timer      *time.Timer   // the stream's timer; set under tmu
	done       atomic.Bool   // finished: the timer must not be re-armed
	maxEnd     int64         // monotonic deadline for max_duration, 0 if none
	scanner    *eventScanner // counts events and ids, only when debug logging is on
	finishOnce sync.Once

	// lastIO is when the last byte (upstream or heartbeat) went to the client.
	lastIO atomic.Int64
	// lastUp is when the last upstream byte went to the client.
	lastUp atomic.Int64
	// endAt is when a scheduled end (shutdown, drain) is due, 0 if none;
	// endWhy is its reason. Set by other goroutines, read by the timer.
	endAt  atomic.Int64
	endWhy atomic.Value // endReason

	// mu serialises every write to the wrapped writer (upstream bytes,
	// heartbeats, retry hints, flushes) and guards the fields below.
	mu         sync.Mutex
	boundary   boundaryTracker // where the bytes sent so far end
	bomHeld    int8            // BOM bytes withheld from the upstream's first write; -1 when done
	ownFirst   bool            // we wrote before the upstream's first byte
	upstreamed bool            // the upstream's first byte has been written
	closed     bool            // finished: nothing may be written any more
	ended      endReason       // why sse ended the stream, "" if it did not
	pendingEnd endReason       // an end waiting for an event boundary
	pendingAt  int64           // when pendingEnd was asked for
	writeErr   bool            // a write to the client failed
	bytes      int64           // bytes of the body sent to the client
	heartbeats int64           // heartbeats sent

	// ownHeader is the response header as sse received it, when the
	// request may be refused late (refusal.go); set before next runs
	ownHeader http.Header

	// live is what the admin API shows of the stream (admin.go)
	live liveStream
}

// WriteHeader decides, once, whether the response is a stream and, if so,
// admits it, repairs its header, writes it and flushes it at once so the
// client sees the stream open before the first event. 1xx responses, 101
// included, pass through untouched.
func (sw *streamWriter) WriteHeader(status int) {
	if status < 200 || sw.mode != modeUndecided {
		if sw.mode != modeRefused {
			sw.ResponseWriter.WriteHeader(status)
		}
		return
	}
	sw.status = status
	hdr := sw.Header()
	kind := sw.h.streamKind(status, hdr)
	if kind == notStream {
		sw.mode = modePass
		sw.ResponseWriter.WriteHeader(status)
		return
	}
	if !sw.admitted && sw.req.Method != http.MethodHead {
		if refusal := sw.h.admit(sw); refusal != nil {
			sw.mode = modeRefused
			sw.refusal = refusal
			sw.resetHeader()
			sw.cancel(errStreamLimit)
			return
		}
	}
	sw.mode = modeStream
	sw.sse = kind == eventStream
	sw.encoded = isEncoded(hdr)
	sw.beats = sw.sse && sw.h.heartbeat > 0 && status == http.StatusOK &&
		sw.req.Method != http.MethodHead && !sw.encoded
	if sw.sse && !sw.beats && sw.encoded {
		sw.h.noteEncodedStream()
	}
	repairHeader(hdr)
	sw.rc = http.NewResponseController(sw.ResponseWriter)
	sw.ResponseWriter.WriteHeader(status)
	now := monotime()
	sw.lastIO.Store(now)
	sw.lastUp.Store(now)
	if err := sw.rc.Flush(); err != nil {
		sw.writeErr = true
	}
	sw.open(now)
}

// Write passes p through. On a stream it updates the boundary tracker,
// records the time and flushes; it drops a BOM that would otherwise land
// after a heartbeat; it ends the stream if an end waits for this boundary.
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
	if len(p) == 0 {
		return 0, nil
	}

	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.closed || sw.ended != "" {
		return 0, errStreamEnded
	}
	n := len(p)
	if sw.bomHeld >= 0 {
		var held []byte
		held, p = sw.stripBOM(p)
		if len(held) > 0 {
			if _, err := sw.writeLocked(held); err != nil {
				return 0, err
			}
		}
		if len(p) == 0 {
			return n, nil
		}
	}
	skipped := n - len(p)
	written, err := sw.writeLocked(p)
	if written > 0 {
		if !sw.upstreamed {
			sw.upstreamed = true
			sw.h.m.firstByte.Observe(time.Since(sw.start).Seconds())
		}
		sw.lastUp.Store(sw.lastIO.Load())
	}
	if err != nil {
		return skipped + written, err
	}
	if sw.pendingEnd != "" && sw.boundary.atBoundary(sw.sse) {
		sw.endLocked(sw.pendingEnd)
	}
	return n, nil
}

// writeLocked writes p to the client and flushes it. sw.mu must be held.
func (sw *streamWriter) writeLocked(p []byte) (int, error) {
	n, err := sw.ResponseWriter.Write(p)
	if n > 0 {
		sw.bytes += int64(n)
		sw.live.bytes.Add(int64(n))
		sw.boundary.update(p[:n])
		if sw.scanner != nil {
			sw.scanner.scan(p[:n])
		}
	}
	if err == nil {
		err = sw.rc.Flush()
	}
	sw.lastIO.Store(monotime())
	if err != nil {
		sw.writeErr = true
	}
	return n, err
}

// stripBOM withholds a UTF-8 BOM that starts the upstream's bytes when
// something of ours went out first: a client strips only a BOM at the very
// start of the stream, and a later one would turn "data" into "\uFEFFdata"
// and lose the event (WHATWG HTML, 9.2.6). It returns bytes withheld earlier
// that turn out not to be a BOM, and what is left of p. sw.mu must be held.
func (sw *streamWriter) stripBOM(p []byte) (held, rest []byte) {
	for len(p) > 0 && sw.bomHeld < 3 {
		if p[0] != utf8BOM[sw.bomHeld] {
			held = utf8BOM[:sw.bomHeld]
			sw.bomHeld = -1
			return held, p
		}
		sw.bomHeld++
		p = p[1:]
	}
	if sw.bomHeld == 3 {
		sw.bomHeld = -1
		if !sw.ownFirst {
			// nothing of ours went first: the BOM is the stream's own
			// first bytes and the client strips it
			return utf8BOM, p
		}
	}
	return nil, p
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// FlushError flushes the response. Stream writes are flushed as they are
// written, so a flush asked by the inner handler has nothing left to do.
// A flush before WriteHeader commits the header with status 200, as
// net/http does, so the response is classified first.
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

// streamKind tells what kind of stream a response with this status and
// header is. Only 2xx responses with a body are streams.
func (h *Handler) streamKind(status int, hdr http.Header) kind {
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
	for _, t := range h.types {
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

// isEncoded reports whether the body has a content coding other than identity.
func isEncoded(hdr http.Header) bool {
	for _, v := range hdr["Content-Encoding"] {
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return true
			}
		}
	}
	return false
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
