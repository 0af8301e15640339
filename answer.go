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

// sse's own responses: a refusal by a limit (refuse_status, or the retry
// answer an EventSource survives), and the retry answer that replaces an
// upstream failure. Each starts from the header as sse received it (the
// writer's resetHeader).

import (
	"errors"
	"math"
	"net/http"
	"strconv"

	"github.com/caddy-sse/caddy-sse/internal/limit"
	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// refuse answers a stream a limit refused. An EventSource-style client gets
// a 200 event stream that carries only a retry field and ends, so the
// browser reconnects later: any other status would make it give up for good
// (WHATWG HTML, 9.2.3, "fail the connection"). Other clients get
// RefuseStatus with Retry-After, as an error handle_errors can shape.
func (h *Handler) refuse(w http.ResponseWriter, sw *streamWriter, r *limit.Refusal) error {
	var l Limit // the limit that refused, none when the store was unavailable
	if r.Unavailable {
		h.obs.refusedRedis.Inc()
		h.logger.Debug("stream refused: the zone's redis is unreachable and on_error is refuse", zap.String("zone", h.Zone))
	} else {
		h.obs.refusedLimit.Inc()
		l = h.lim.config[r.Limit]
		fields := []zap.Field{zap.Int("limit", l.Max), zap.String("per", l.Per)}
		if h.LogKey {
			fields = append(fields, zap.String("key", r.Key))
		}
		h.logger.Info("stream limit reached", fields...)
	}
	logRefusedByLimit(sw.req, h.lim.zoneName, r, l, h.LogKey)
	sw.resetHeader()
	if sw.eventSrc {
		h.writeRetryAnswer(w, sw.frame)
		return nil
	}
	secs := int(math.Ceil(stream.RetryHint(h.streams.set.Retry).Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return caddyhttp.Error(h.RefuseStatus, errStreamLimit)
}

// answerUpstreamFailure tells an EventSource whose upstream failed before
// anything was written to come back later, instead of letting a 502, 503 or
// 504 kill it for good.
func (h *Handler) answerUpstreamFailure(sw *streamWriter, err error) {
	h.obs.refusedUpstream.Inc()
	h.logger.Info("upstream failed; told the client to reconnect later", zap.Error(err))
	logRefusedByUpstream(sw.req, err)
	sw.resetHeader()
	h.writeRetryAnswer(sw.ResponseWriter, sw.frame)
}

// writeRetryAnswer writes the response that tells an EventSource to come
// back later: 200, text/event-stream, a retry field, end.
func (h *Handler) writeRetryAnswer(w http.ResponseWriter, f stream.Frame) {
	hdr := w.Header()
	stream.ClearRepresentation(hdr)
	hdr.Set("Content-Type", "text/event-stream")
	stream.RepairHeader(hdr)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(h.streams.retryField(f))
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

// mayRefuseLate reports whether a request may get a refusal or a retry
// answer after the handlers inside sse have written to its header: a limit
// decided when the response turns out to be a stream, or an upstream
// failure translated for an EventSource.
func (h *Handler) mayRefuseLate(eventSrc bool) bool {
	return h.lim.store != nil || (eventSrc && !h.PassUpstreamErrors)
}
