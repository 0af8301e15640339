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
	"errors"
	"net/http"

	"github.com/caddy-sse/caddy-sse/internal/limit"
	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Fields sse adds to Caddy's access log line of a request, through the
// request context's caddyhttp.ExtraLogFields, which the server writes with
// the line once the handlers have returned. They are set on the handler
// goroutine only (ExtraLogFields is not safe for concurrent use), before
// ServeHTTP returns.

// logFields returns the request's extra access log fields, or nil outside
// a Caddy server.
func logFields(r *http.Request) *caddyhttp.ExtraLogFields {
	e, _ := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields)
	return e
}

// logRefusedByLimit notes on r's access log line that a limit of zone
// refused the stream (ref, by the limit l): which zone, limit and key
// template; the key only with logKey. A zone whose Redis is unreachable,
// with on_error refuse, refuses as "redis".
func logRefusedByLimit(r *http.Request, zone string, ref *limit.Refusal, l Limit, logKey bool) {
	e := logFields(r)
	if e == nil {
		return
	}
	e.Set(zap.String("sse_zone", zone))
	if ref.Unavailable {
		e.Set(zap.String("sse_refused", refusedRedis))
		return
	}
	e.Set(zap.String("sse_refused", refusedLimit))
	e.Set(zap.Int("sse_limit", l.Max))
	e.Set(zap.String("sse_per", l.Per))
	if logKey {
		e.Set(zap.String("sse_key", ref.Key))
	}
}

// logRefusedByUpstream notes on the access log that the upstream failed
// before the stream began and the client was told to come back: the line's
// status is 200, so the upstream's error and status are fields, and the
// line is logged at error level, as the 502, 503 or 504 it replaces would
// have been (unless a log_level variable already says otherwise).
func logRefusedByUpstream(r *http.Request, err error) {
	e := logFields(r)
	if e == nil {
		return
	}
	e.Set(zap.String("sse_refused", refusedUpstream))
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		e.Set(zap.Int("sse_upstream_status", he.StatusCode))
		if he.Err != nil {
			err = he.Err
		}
	}
	e.Set(zap.String("sse_upstream_error", err.Error()))
	ctx := r.Context()
	if _, set := caddyhttp.GetVar(ctx, caddyhttp.LogLevelVar).(string); !set {
		caddyhttp.SetVar(ctx, caddyhttp.LogLevelVar, "ERROR")
	}
}

// logEnd notes on r's access log line how its stream ended and what sse
// added to it: heartbeats in frame, and the zone that counted it ("" for
// none).
func logEnd(r *http.Request, why stream.EndReason, heartbeats int64, frame stream.Frame, zone string) {
	e := logFields(r)
	if e == nil {
		return
	}
	e.Set(zap.String("sse_end", string(why)))
	e.Set(zap.Int64("sse_heartbeats", heartbeats))
	e.Set(zap.String("sse_frame", frame.String()))
	if zone != "" {
		e.Set(zap.String("sse_zone", zone))
	}
}

// logEarly notes on r's access log line that sse opened its stream before
// the upstream answered, and what the upstream answered after: answer
// (stream, error or none) and its status, 0 for none.
func logEarly(r *http.Request, answer string, status int) {
	e := logFields(r)
	if e == nil {
		return
	}
	e.Set(zap.Bool("sse_opened_early", true))
	e.Set(zap.String("sse_upstream_answer", answer))
	if status != 0 {
		e.Set(zap.Int("sse_upstream_status", status))
	}
}

// logUpstreamError notes on r's access log line the error of an upstream
// whose stream sse opened early: the line's status is 200, so the line is
// logged at error level for a 5xx or a handler error, as the answer it
// replaced would have been (unless a log_level variable already says
// otherwise).
func logUpstreamError(r *http.Request, status int, err error) {
	e := logFields(r)
	if e == nil {
		return
	}
	if err != nil {
		var he caddyhttp.HandlerError
		if errors.As(err, &he) && he.Err != nil {
			err = he.Err
		}
		e.Set(zap.String("sse_upstream_error", err.Error()))
	}
	if err == nil && status < 500 {
		return
	}
	ctx := r.Context()
	if _, set := caddyhttp.GetVar(ctx, caddyhttp.LogLevelVar).(string); !set {
		caddyhttp.SetVar(ctx, caddyhttp.LogLevelVar, "ERROR")
	}
}
