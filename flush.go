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
	"sync"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/limit"
	"github.com/caddy-sse/caddy-sse/internal/stream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// mode is what the writer decided to do with a response, once, in WriteHeader.
type mode uint8

const (
	modeUndecided mode = iota // WriteHeader not called yet
	modePass                  // not a stream: bytes pass through untouched
	modeStream                // a stream: flushed, repaired, maybe heartbeats
	modeRefused               // a stream a limit refused: nothing reaches the client
	modeLate                  // after an early open, the upstream answered no stream: its body is kept, to tell the client
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
	mode       mode           // what WriteHeader decided
	refusal    *limit.Refusal // why a limit refused the stream, in modeRefused
	admitted   bool           // admission done (hold may still be nil: nothing counted it)
	hold       *limit.Hold    // the stream's place in the limit counters, nil if none
	finishOnce sync.Once

	// ownHeader is the response header as sse received it, when the
	// request may be refused late (see noteHeader); set before next runs
	ownHeader http.Header

	// early is set when sse may open the stream before the upstream
	// answers (early.go); nil for every other request
	early *earlyOpen

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
	if sw.early != nil && sw.mode == modeUndecided && sw.settle() {
		// sse opened the stream itself: the upstream's answer comes
		// after its own header (early.go). A 1xx is dropped: nothing
		// can precede the header already written
		if status >= 200 {
			sw.answeredAfterOpen(status)
		}
		return
	}
	if status < 200 || sw.mode != modeUndecided {
		if sw.mode != modeRefused {
			sw.ResponseWriter.WriteHeader(status)
		}
		return
	}
	hdr := sw.Header()
	kind := streamKind(sw.h.streams.types, status, hdr)
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
	// what the settings decide of the stream (heartbeat.go), and what the
	// writer knows of its request
	opt := streams.options(kind == eventStream, status, sw.req.Method, hdr)
	opt.Frame, opt.Start, opt.Cancel = sw.frame, sw.start, sw.cancel
	if sw.early != nil {
		opt.Label = sw.early.opt.Label // described already, for the early open that did not come
	} else {
		opt.Label = sw.describe()
	}
	stream.RepairHeader(hdr)
	sw.ResponseWriter.WriteHeader(status)
	sw.out.init(sw.ResponseWriter)
	sw.st.Open(&sw.out, &streams.set, opt)
	liveStreams.Add(&sw.st, streams.group)
	sw.endIfRevoked()
}

// Header returns the header the handlers inside sse write to: the
// response's, or while sse may still open the stream itself, their own
// (early.go).
func (sw *streamWriter) Header() http.Header {
	if sw.early != nil {
		return sw.early.header(sw.ResponseWriter)
	}
	return sw.ResponseWriter.Header()
}

// admit counts the request against the handler's limits, once: it sets
// hold, or refusal when a limit is full.
func (sw *streamWriter) admit() {
	sw.admitted = true
	sw.hold, sw.refusal = sw.h.lim.admit(sw.req) // limits.go
}

// endIfRevoked has the open stream end, at its next event boundary and
// with a retry hint, if the zone's count is rebuilt in Redis with no room
// for it (internal/limit): after a failover or a restart, no key is left
// with more than its max open across the fleet.
func (sw *streamWriter) endIfRevoked() {
	sw.hold.WhenRevoked(func() { sw.st.ScheduleEnd(stream.EndRecount, stream.Now()) })
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
	case modeLate:
		sw.early.keepErrorBody(p)
		return len(p), nil
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
	case modeStream, modeRefused, modeLate:
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

// finish ends the request's part in sse, however it ended: it closes the
// stream, so nothing is written after ServeHTTP returns, releases the limit
// hold, and records the ending. It runs once, for every request, stream or
// not.
func (sw *streamWriter) finish(why stream.EndReason) {
	sw.finishOnce.Do(func() {
		early := sw.early != nil && sw.settle()
		why = sw.st.Close(why)
		sw.hold.Release()
		if sw.mode != modeStream && !early {
			return
		}
		liveStreams.Remove(&sw.st)
		sw.recordEnd(why)
	})
}

// recordEnd records how sw's stream ended: the metrics, the access log
// fields and, at debug level, a log line.
func (sw *streamWriter) recordEnd(why stream.EndReason) {
	zone := ""
	if sw.hold != nil {
		zone = sw.h.lim.zoneName
	}
	logEnd(sw.req, why, sw.st.Heartbeats(), sw.frame, zone) // logfields.go
	if e := sw.early; e != nil && e.opened {
		answer, status := answerNone, e.status
		switch {
		case sw.mode == modeStream:
			answer = answerStream
		case e.told != 0:
			answer, status = answerError, e.told
		}
		logEarly(sw.req, answer, status)
		sw.h.obs.earlyAnswers[answer].Inc()
	}
	d := time.Since(sw.start)
	sw.h.obs.ended(why, d)
	if c := sw.h.logger.Check(zapcore.DebugLevel, "stream ended"); c != nil {
		st := &sw.st
		fields := []zap.Field{
			zap.String("reason", string(why)),
			zap.Duration("duration", d),
			zap.Int64("bytes", st.Bytes()),
			zap.Int64("heartbeats", st.Heartbeats()),
			zap.String("proto", sw.req.Proto),
		}
		if s := st.Scanner(); s != nil {
			fields = append(fields, zap.Int64("events", s.Events()))
			if id, ok := s.LastID(); ok {
				fields = append(fields, zap.ByteString("last_event_id", id))
			}
		}
		c.Write(fields...)
	}
}

// clientGone reports whether the client went away: a write to it failed or
// its request was canceled.
func (sw *streamWriter) clientGone() bool {
	return sw.st.WriteFailed() || sw.req.Context().Err() != nil
}

// failureReason is why a stream whose handler failed ended: the client
// left, or something else went wrong.
func (sw *streamWriter) failureReason() stream.EndReason {
	if sw.clientGone() {
		return stream.EndClient
	}
	return stream.EndError
}

// streamKind tells what kind of stream a response with this status and
// header is, types being the extra media types (lower-cased). Only 2xx
// responses with a body are streams.
func streamKind(types []string, status int, hdr http.Header) kind {
	if status < 200 || status > 299 || status == http.StatusNoContent || status == http.StatusResetContent {
		return notStream
	}
	ct := hdr["Content-Type"]
	if len(ct) == 0 {
		return notStream
	}
	mt := stream.MediaType(ct[0])
	if stream.EqualFoldASCII(mt, "text/event-stream") {
		return eventStream
	}
	for _, t := range types {
		if stream.EqualFoldASCII(mt, t) {
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

// A refusal (refuse_status, or the EventSource retry answer) is sse's own
// response: it must carry none of the header fields the handlers inside sse
// set for the response it replaces (the upstream's Set-Cookie, Server,
// caching fields…), and keep the ones set before sse ran (Caddy's Server
// and Alt-Svc, the header directive). So the writer notes the header as it
// was when the request reached sse, for requests that may be refused after
// the handlers inside it ran, and puts it back before the answer.

// noteHeader keeps a copy of the response header as sse received it.
func (sw *streamWriter) noteHeader() {
	sw.ownHeader = sw.ResponseWriter.Header().Clone()
	if sw.ownHeader == nil {
		sw.ownHeader = http.Header{}
	}
}

// resetHeader puts the response header back as sse received it, dropping
// every field the handlers inside sse added or changed. Without a note of
// it, it drops what describes the replaced body and the hop-by-hop fields.
func (sw *streamWriter) resetHeader() {
	hdr := sw.ResponseWriter.Header()
	if sw.ownHeader == nil {
		stream.ClearRepresentation(hdr)
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

// Interface guards
var (
	_ http.ResponseWriter = (*streamWriter)(nil)
	_ io.ReaderFrom       = (*streamWriter)(nil)
)
