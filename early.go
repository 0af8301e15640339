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

// Opening a stream before the upstream answers (open_after): which
// requests may be opened early, the timer that opens them, and what the
// writer does with the upstream's answer once sse has written the header.
//
// Lock story. Until the upstream answers, two goroutines may write the
// response: the timer's (it writes sse's own 200 header and opens the
// stream) and the handlers' (the upstream's header, or a 1xx from the
// transport's goroutine). earlyOpen.mu decides between them: whoever takes
// it first settles the response. The handlers inside sse write their
// header fields to a map of their own (inner) until then, so the timer
// never reads a map they are writing.

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/dialect"
	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// earlyConfig is when a handler opens streams itself, resolved at
// Provision: after eventSrc for EventSource-style requests, after asked
// for other requests that ask for a stream; 0 means never.
type earlyConfig struct {
	eventSrc, asked time.Duration
}

// newEarlyConfig resolves open_after: unset, EventSource-style requests
// are opened after the heartbeat interval (none without heartbeats) and no
// other request is; "off" (0) opens none; a duration opens both kinds.
func newEarlyConfig(openAfter *time.Duration, heartbeat time.Duration) earlyConfig {
	if openAfter == nil {
		return earlyConfig{eventSrc: heartbeat}
	}
	return earlyConfig{eventSrc: *openAfter, asked: *openAfter}
}

// earlyFor tells whether sse may open r's stream before its upstream
// answers: after how long (0 for never), and in which dialect it tells of
// an error after that. A POST is read for a top-level "stream": true, at
// most dialect.MaxPrefix bytes of it, and those bytes are put back in
// front of the rest of its body.
func (h *Handler) earlyFor(r *http.Request, own http.Header, eventSrc, acceptsSSE bool) (time.Duration, dialect.Dialect) {
	c := h.early
	if (eventSrc && c.eventSrc == 0) || (!eventSrc && c.asked == 0) || r.Header.Get("Upgrade") != "" {
		return 0, dialect.EventSource
	}
	if !crossOriginSafe(r, own) {
		return 0, dialect.EventSource
	}
	if eventSrc {
		return c.eventSrc, dialect.EventSource
	}
	d, body, ok := dialect.Ask(r.Method, r.URL.Path, r.URL.RawQuery, r.Header)
	if body {
		ok = asksStream(r)
	}
	switch {
	case ok:
		return c.asked, d
	case acceptsSSE && r.Method == http.MethodPost:
		// fetch-event-source and the like: they asked for
		// text/event-stream in Accept, and reconnect like an EventSource
		return c.asked, dialect.EventSource
	}
	return 0, dialect.EventSource
}

// asksStream reads the start of r's JSON body until it tells whether the
// body has a top-level "stream": true, and puts what it read back in front
// of the rest, so the upstream gets the body byte for byte.
func asksStream(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody {
		return false
	}
	buf := make([]byte, 0, min(max(r.ContentLength, 512), dialect.MaxPrefix))
	asks := false
	for len(buf) < dialect.MaxPrefix {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Body.Read(buf[len(buf):min(cap(buf), dialect.MaxPrefix)])
		buf = buf[:len(buf)+n]
		a, decided := dialect.AsksStream(buf)
		if decided || err != nil {
			asks = a && decided
			break
		}
	}
	r.Body = &prefixedBody{Reader: io.MultiReader(bytes.NewReader(buf), r.Body), Closer: r.Body}
	return asks
}

// prefixedBody is a request body whose first bytes were read already.
type prefixedBody struct {
	io.Reader
	io.Closer
}

// crossOriginSafe reports whether a stream opened for r without the
// upstream's header fields would still reach a browser: r has no Origin of
// another host, or the fields set before sse ran (the header directive)
// already allow it with Access-Control-Allow-Origin. A cross-origin
// response without that field fails in the browser.
func crossOriginSafe(r *http.Request, own http.Header) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if u, err := url.Parse(origin); err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return own.Get("Access-Control-Allow-Origin") != ""
}

// earlyOpen is a request sse may open before its upstream answers.
type earlyOpen struct {
	mu      sync.Mutex
	timer   *time.Timer
	inner   http.Header     // the header the handlers inside sse write to, until it passes
	opt     stream.Options  // the stream sse opens, decided before next runs
	dialect dialect.Dialect // how its client is told of an error
	settled bool            // the upstream answered or the handlers returned: the timer does nothing
	opened  bool            // the timer opened the stream

	// what the upstream answered after an early open, on the handlers'
	// goroutine once settled: its status (0 if nothing), Content-Type and
	// the start of its body
	status int
	ctype  string
	body   []byte
	told   int // the status the client was told of in an error event or retry field
}

// maxErrorBody is how much of an upstream's error body is kept, to find
// the API's error message in it.
const maxErrorBody = 16 << 10

// armEarly makes sw a request sse opens after delay unless its upstream
// answers first. It runs before next, on the handlers' goroutine, and
// decides there all the timer needs.
func (sw *streamWriter) armEarly(delay time.Duration, d dialect.Dialect) {
	streams := &sw.h.streams
	base := sw.ResponseWriter.Header()
	e := &earlyOpen{inner: base.Clone(), dialect: d}
	if e.inner == nil {
		e.inner = http.Header{}
	}
	hdr := http.Header{"Content-Type": {"text/event-stream"}}
	e.opt = streams.options(true, http.StatusOK, sw.req.Method, hdr)
	e.opt.Frame, e.opt.Start, e.opt.Cancel, e.opt.Label = sw.frame, sw.start, sw.cancel, sw.describe()
	e.opt.Early = true
	sw.early = e
	e.timer = time.AfterFunc(delay, sw.openEarly)
}

// openEarly opens the stream with sse's own header, unless the response
// settled first. It runs on the timer's goroutine.
func (sw *streamWriter) openEarly() {
	e := sw.early
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.settled {
		return
	}
	e.opened = true
	hdr := sw.ResponseWriter.Header() // the fields set before sse ran
	stream.ClearRepresentation(hdr)
	hdr.Set("Content-Type", "text/event-stream")
	stream.RepairHeader(hdr)
	sw.ResponseWriter.WriteHeader(http.StatusOK)
	sw.out.init(sw.ResponseWriter)
	streams := &sw.h.streams
	sw.st.Open(&sw.out, &streams.set, e.opt)
	liveStreams.Add(&sw.st, streams.group)
	sw.endIfRevoked()
	sw.h.obs.openedEarly.Inc()
}

// settle ends the race with the timer, once: after it the timer does
// nothing. It reports whether the timer opened the stream. If it did not,
// the header the handlers inside sse wrote becomes the response's.
func (sw *streamWriter) settle() (opened bool) {
	e := sw.early
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.settled {
		e.settled = true
		e.timer.Stop()
		if !e.opened {
			replaceHeader(sw.ResponseWriter.Header(), e.inner)
		}
	}
	return e.opened
}

// header is the header map the handlers inside sse see: their own
// until the response passes to them, then the response's. After an early
// open it stays their own: nothing they set can reach the client.
func (e *earlyOpen) header(base http.ResponseWriter) http.Header {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.settled && !e.opened {
		return base.Header()
	}
	return e.inner
}

// answeredAfterOpen takes the upstream's answer after sse opened the
// stream: a 200 event stream continues it; anything else is kept, to be
// told to the client as an error when the handlers return.
func (sw *streamWriter) answeredAfterOpen(status int) {
	e, hdr := sw.early, sw.early.inner
	e.status, e.ctype = status, hdr.Get("Content-Type")
	sw.st.Answered()
	if status == http.StatusOK && streamKind(nil, status, hdr) == eventStream && !isEncoded(hdr) {
		sw.mode = modeStream
		return
	}
	sw.mode = modeLate
}

// keepErrorBody keeps the start of the upstream's answer that is not a
// stream, after an early open.
func (e *earlyOpen) keepErrorBody(p []byte) {
	if room := maxErrorBody - len(e.body); room > 0 {
		e.body = append(e.body, p[:min(room, len(p))]...)
	}
}

// endEarlyStream ends a stream sse opened before its upstream answered,
// when the upstream's answer was not a stream, or there was none (err):
// the client gets its dialect's error event, or a retry field, and the
// end. It returns why the stream ended.
func (h *Handler) endEarlyStream(sw *streamWriter, err error) stream.EndReason {
	e := sw.early
	if sw.clientGone() {
		return stream.EndClient
	}
	status := e.status
	if status == 0 {
		status = http.StatusBadGateway
		var he caddyhttp.HandlerError
		if errors.As(err, &he) && he.StatusCode != 0 {
			status = he.StatusCode
		}
	}
	msg := dialect.ErrorEvent(e.dialect, status, e.ctype, e.body)
	if msg == nil {
		msg = h.streams.retryField(sw.frame)
	}
	if sw.st.WriteOwn(msg) != nil {
		// the client left, or sse ended the stream already (shutdown,
		// drain, max_duration): nothing more to tell
		return sw.failureReason()
	}
	e.told = status
	fields := []zap.Field{zap.Int("status", status), zap.String("dialect", e.dialect.String())}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	h.logger.Info("the upstream of a stream sse opened early answered no stream; told the client", fields...)
	logUpstreamError(sw.req, status, err)
	if err != nil {
		return stream.EndError
	}
	return stream.EndUpstream
}

// replaceHeader makes dst hold what src holds.
func replaceHeader(dst, src http.Header) {
	for k := range dst {
		if _, ok := src[k]; !ok {
			delete(dst, k)
		}
	}
	for k, v := range src {
		dst[k] = v
	}
}
