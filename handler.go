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
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// ServeHTTP wraps the response of the handlers inside sse. It admits
// EventSource-style requests before they reach the upstream, and answers
// refusals and upstream failures in a way such clients survive.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	acceptsSSE := acceptsEventStream(r)
	eventSrc := acceptsSSE && r.Method == http.MethodGet
	if eventSrc {
		// the upstream must not compress the stream: it would get no
		// heartbeats, and nothing could be added to it. "identity", not
		// a deletion: Go's HTTP transport (reverse_proxy's) asks the
		// upstream for gzip itself when a request has no Accept-Encoding
		r.Header.Set("Accept-Encoding", "identity")
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	sw := &streamWriter{
		ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
		h:                     h,
		req:                   r,
		eventSrc:              eventSrc,
		st: stream{
			h:      h,
			cancel: cancel,
			start:  time.Now(),
			frame:  h.frameFor(acceptsSSE),
		},
	}
	if h.mayRefuseLate(eventSrc) {
		sw.noteHeader()
	}

	if eventSrc && h.zone != nil {
		if ref := h.admit(sw); ref != nil {
			sw.finish(endUpstream) // nothing to release; never a stream
			return h.refuse(w, sw, ref)
		}
	}

	why := endUpstream
	defer func() {
		if rec := recover(); rec != nil {
			// reverse_proxy panics with ErrAbortHandler when a write to
			// the client fails; it does so too when sse ended or refused
			// the stream on purpose, and then the response ends cleanly
			if rec == http.ErrAbortHandler && (sw.st.endedOnPurpose() || sw.mode == modeRefused) {
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
func (h *Handler) afterNext(sw *streamWriter, err error, why *endReason) error {
	if sw.mode == modeRefused {
		return h.refuse(sw.ResponseWriter, sw, sw.refusal)
	}
	if err != nil {
		*why = sw.failureReason()
		if sw.mode == modeUndecided && sw.eventSrc && !h.PassUpstreamErrors && isUpstreamFailure(err) {
			// nothing was written yet: tell the EventSource to come back
			// instead of letting a 502/503/504 kill it for good
			h.m.refusedUpstream.Inc()
			h.logger.Info("upstream failed; told the client to reconnect later", zap.Error(err))
			sw.logRefusedByUpstream(err)
			sw.resetHeader()
			h.writeRetryAnswer(sw.ResponseWriter, sw.st.frame)
			return nil
		}
		return err
	}
	if sw.clientGone() {
		*why = endClient
	}
	return nil
}

// clientGone reports whether the client went away: a write to it failed or
// its request was canceled.
func (sw *streamWriter) clientGone() bool {
	return sw.st.writeErrSeen() || sw.req.Context().Err() != nil
}

// failureReason is why a stream whose handler failed ended: the client
// left, or something else went wrong.
func (sw *streamWriter) failureReason() endReason {
	if sw.clientGone() {
		return endClient
	}
	return endError
}

// isUpstreamFailure reports whether err is a 502, 503 or 504 handler error.
func isUpstreamFailure(err error) bool {
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) {
		return false
	}
	switch he.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
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
		for len(v) > 0 {
			var item string
			item, v = cutComma(v)
			if isEventStream(item) {
				return true
			}
		}
	}
	return false
}

func cutComma(v string) (string, string) {
	for i := 0; i < len(v); i++ {
		if v[i] == ',' {
			return v[:i], v[i+1:]
		}
	}
	return v, ""
}

// noteEncodedStream logs, once per handler, that an upstream compressed an
// event stream itself, so sse cannot add heartbeats to it.
func (h *Handler) noteEncodedStream() {
	h.loggedCoded.Do(func() {
		h.logger.Info("upstream sent a compressed event stream; it gets no heartbeats, because nothing can be inserted between its events. " +
			"Fix: make the upstream not compress text/event-stream (for fetch/POST clients, send it Accept-Encoding identity with request_header Accept-Encoding identity), " +
			"and let Caddy's encode skip it")
	})
}
