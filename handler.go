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

// ServeHTTP: how one request goes through sse, from classifying it to
// finishing it.

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/dialect"
	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// ServeHTTP wraps the response of the handlers inside sse. It admits
// EventSource-style requests before they reach the upstream, and answers
// refusals and upstream failures in a way such clients survive.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	acceptsSSE := acceptsEventStream(r)
	eventSrc := acceptsSSE && r.Method == http.MethodGet
	var openAfter time.Duration // when sse opens the stream itself, 0 for never (early.go)
	var dia dialect.Dialect
	if h.early != (earlyConfig{}) {
		openAfter, dia = h.earlyFor(r, w.Header(), eventSrc, acceptsSSE)
	}
	if eventSrc || openAfter > 0 {
		// the upstream must not compress the stream: it would get no
		// heartbeats, and nothing could be added to it (nor could it
		// follow a stream sse opened). "identity", not a deletion: Go's
		// HTTP transport (reverse_proxy's) asks the upstream for gzip
		// itself when a request has no Accept-Encoding
		r.Header.Set("Accept-Encoding", "identity")
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	sw := &streamWriter{
		ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
		h:                     h,
		req:                   r,
		eventSrc:              eventSrc,
		frame:                 h.streams.frameFor(acceptsSSE),
		start:                 time.Now(),
		cancel:                cancel,
	}
	if h.mayRefuseLate(eventSrc) {
		sw.noteHeader()
	}

	if (eventSrc || openAfter > 0) && h.lim.store != nil {
		// a request that wants a stream is counted before the
		// upstream sees it, so a refusal is a clean answer, never one
		// inside a stream sse opened
		if sw.admit(); sw.refusal != nil {
			sw.finish(stream.EndUpstream) // nothing to release; never a stream
			return h.refuse(w, sw, sw.refusal)
		}
	}
	if openAfter > 0 {
		sw.armEarly(openAfter, dia)
	}

	why := stream.EndUpstream
	defer func() {
		if rec := recover(); rec != nil {
			// reverse_proxy panics with ErrAbortHandler when a write to
			// the client fails; it does so too when sse ended or refused
			// the stream on purpose, and then the response ends cleanly
			if rec == http.ErrAbortHandler && (sw.st.EndedOnPurpose() || sw.mode == modeRefused) {
				err = h.afterNext(sw, nil, &why)
				sw.finish(why)
				return
			}
			// it panics the same way when the client went away (a
			// failed write, or a read from the upstream canceled with
			// the client's request): that stream ended by the client
			sw.finish(sw.failureReason())
			panic(rec)
		}
		sw.finish(why)
	}()

	err = next.ServeHTTP(sw, r.WithContext(ctx))
	return h.afterNext(sw, err, &why)
}

// afterNext turns what the inner handlers returned into this handler's
// result, and works out why the stream ended.
func (h *Handler) afterNext(sw *streamWriter, err error, why *stream.EndReason) error {
	if sw.early != nil && sw.settle() && sw.mode != modeStream {
		// sse opened the stream and no stream followed (early.go)
		*why = h.endEarlyStream(sw, err)
		return nil
	}
	if sw.mode == modeRefused {
		return h.refuse(sw.ResponseWriter, sw, sw.refusal)
	}
	if err != nil {
		*why = sw.failureReason()
		if sw.mode == modeUndecided && sw.eventSrc && !h.PassUpstreamErrors && isUpstreamFailure(err) {
			h.answerUpstreamFailure(sw, err) // answer.go
			return nil
		}
		return err
	}
	if sw.clientGone() {
		*why = stream.EndClient
	}
	return nil
}

// isEventSourceRequest reports whether r looks like a browser EventSource:
// a GET whose Accept lists text/event-stream. Such clients treat any status
// but 200 as fatal (WHATWG HTML, 9.2.3).
func isEventSourceRequest(r *http.Request) bool {
	return r.Method == http.MethodGet && acceptsEventStream(r)
}

// acceptsEventStream reports whether r's Accept lists text/event-stream.
func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header["Accept"] {
		for item := range strings.SplitSeq(v, ",") {
			if stream.IsEventStream(item) {
				return true
			}
		}
	}
	return false
}
