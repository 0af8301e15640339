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

// Package caddysse is a Caddy HTTP middleware that makes Server-Sent Events
// (text/event-stream) responses stream correctly through Caddy and through
// the proxies, CDNs and load balancers in front of it.
//
// For every event-stream response it disables buffering and compression
// (here and at the next hop), flushes every write, injects heartbeat
// comments between events on quiet streams, strips hop-by-hop header fields
// that HTTP/2 and HTTP/3 clients reject, caps concurrent streams per key in
// a way browser EventSource clients survive, and ends streams cleanly on
// shutdown, reload or after a maximum duration. Every other response passes
// through untouched.
//
// This package is the Caddy adapter: the config, the Caddyfile, ServeHTTP
// and the response-writer wrapper, the admin API, metrics and log fields.
// The engine beneath it, which knows nothing of Caddy, is internal/stream
// (the stream, its heartbeats and ends, the scheduler, the registry of open
// streams) and internal/limit (the stores that count streams per key).
package caddysse

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler makes Server-Sent Events responses stream correctly through Caddy.
//
// It acts on every response whose Content-Type is text/event-stream (or one
// of the extra Types), whatever handler produced it: it keeps Caddy's
// encode handler and the next hop from compressing or buffering it, flushes
// every write, strips hop-by-hop header fields, writes heartbeat comments
// between events on quiet streams, and enforces concurrent-stream limits.
// Other responses pass through byte for byte.
//
// Order it after encode (the Caddyfile directive does so by default), so that
// the bytes it writes itself pass through encode's writer.
type Handler struct {
	// Extra media types to treat as streams, for example
	// "application/x-ndjson". They are flushed on every write and never
	// compressed, and their hop-by-hop fields are stripped, like
	// text/event-stream; they get no heartbeats and no retry hints, because
	// those are SSE syntax. text/event-stream is always a stream.
	Types []string `json:"types,omitempty"`

	// How long a stream may stay quiet (no byte sent to the client) before
	// a heartbeat comment is written, at the next event boundary. Each
	// stream uses an interval picked at random between 80 % and 100 % of
	// this value, so streams opened together do not beat together. The
	// heartbeats of streams due at about the same time are written
	// together, so one may go out up to a sixteenth of this value (at most
	// 250ms) after it is due.
	// Default: 15s. 0 disables heartbeats; negative values are invalid.
	Heartbeat *caddy.Duration `json:"heartbeat,omitempty"`

	// The text of the heartbeat comment. It must not contain CR, LF or NUL.
	// Default: "heartbeat".
	HeartbeatText string `json:"heartbeat_text,omitempty"`

	// How a heartbeat, and the retry field sse writes when it ends or
	// refuses a stream, is framed. "blank" writes two blank lines in the
	// stream's own line ends ("\n\n", or "\r\n\r\n" after CRLF), no
	// comment, and no retry field when sse ends the stream: nothing to a
	// WHATWG parser, and an empty piece to clients that split the body at
	// blank lines and reject any piece that does not start with "data:"
	// (google.golang.org/genai rejects a comment in any frame). "block"
	// writes ": <text>\n\n", a comment followed by a blank line. "line"
	// writes ": <text>\n", a comment line alone (clients that hand the
	// application an empty message for every blank line, such as
	// @microsoft/fetch-event-source, need this). "auto" chooses per
	// request: "line" when the request's Accept lists text/event-stream
	// (browsers' EventSource, the eventsource package, fetch-event-source),
	// "blank" otherwise (the LLM SDKs, which send application/json or */*).
	// Default: "auto".
	HeartbeatFrame string `json:"heartbeat_frame,omitempty"`

	// Caps on concurrent streams. Every limit must admit a stream.
	// Default: none.
	Limits []Limit `json:"limits,omitempty"`

	// The name of the counter zone shared by this handler's limits. Handlers
	// with the same zone name share counters; by default each sse handler
	// has its own, kept across config reloads.
	Zone string `json:"zone,omitempty"`

	// Count the zone's streams in Redis, shared by every Caddy instance
	// that uses the same Redis and zone name. Requires zone. See
	// RedisStore. Default: counted by this instance alone.
	Redis *RedisStore `json:"redis,omitempty"`

	// The reconnection time sent in a "retry:" field when a stream is
	// refused or ended by this handler. Each hint is jittered up to 50 %
	// above this value. Default: 3s. It must be more than 0: "retry: 0"
	// would make every refused client reconnect at once.
	Retry *caddy.Duration `json:"retry,omitempty"`

	// The status returned to clients that are not EventSource-style (not a
	// GET whose Accept lists text/event-stream) when a limit refuses their
	// stream: 503 or 429 are usual. A Retry-After header is set and the
	// error goes through handle_errors. Default: 503.
	RefuseStatus int `json:"refuse_status,omitempty"`

	// If true, 502, 503 and 504 errors from the handlers inside sse reach
	// EventSource-style clients as they are, which makes a browser's
	// EventSource give up for good. By default such a client gets a 200
	// response with a "retry:" field instead, so it reconnects later.
	PassUpstreamErrors bool `json:"pass_upstream_errors,omitempty"`

	// Log the limit key (for example the client IP) when a stream is
	// refused. Off by default, because keys may be personal data.
	LogKey bool `json:"log_key,omitempty"`

	// End a stream after about this long, at an event boundary, with a
	// "retry:" hint, so the client reconnects (with Last-Event-ID). Each
	// stream's deadline is jittered to 80-100 % of this value. Default: 0,
	// no maximum.
	MaxDuration caddy.Duration `json:"max_duration,omitempty"`

	// End a stream whose upstream has sent nothing for this long
	// (heartbeats do not count), the same way as MaxDuration. Default: 0,
	// off.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// After a config reload, end the streams opened under the old config,
	// each at a random moment within this window, so clients reconnect to
	// the new config without all reconnecting at once. Default: 0, streams
	// stay open on the old config until they end by themselves.
	DrainOnReload caddy.Duration `json:"drain_on_reload,omitempty"`

	// When the handlers inside sse have not written the response header
	// this long after the request reached them, sse writes a 200
	// text/event-stream header itself and heartbeats until the upstream
	// answers, so the next hop's timeout does not cut a stream whose
	// upstream is slow to answer (a model queued or thinking before its
	// first token). The upstream's answer, when it is a 200 event stream,
	// continues the stream; its status and header fields are lost. Any
	// other answer reaches the client as an error event in its API's
	// dialect (OpenAI, Anthropic, Gemini), or a retry field for an
	// EventSource, and the stream ends. Only requests that want a stream
	// are opened early: EventSource-style ones, POSTs whose Accept lists
	// text/event-stream, POSTs whose JSON body has a top-level
	// "stream": true (in its first 64 KiB), and Gemini's
	// :streamGenerateContent?alt=sse; and of those, a request from
	// another origin only if Access-Control-Allow-Origin was set before
	// sse ran. Default: EventSource-style requests after the heartbeat
	// interval, no other request. 0 opens none early.
	OpenAfter *caddy.Duration `json:"open_after,omitempty"`

	// runtime state, by concern
	logger  *zap.Logger
	streams streamState     // what h's streams share: heartbeats, ends, scheduler, group (heartbeat.go)
	early   earlyConfig     // when h opens streams before their upstream answers (early.go)
	lim     limitState      // h's limits, counters and Redis store (limits.go, redis_config.go)
	life    lifecycle       // ends h's streams on shutdown and drain (shutdown.go)
	obs     *handlerMetrics // h's metric series (metrics.go)
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sse",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets up h's defaults, its streams' settings, its limit zone
// and its lifecycle hooks.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.HeartbeatText == "" {
		h.HeartbeatText = defaultHeartbeatText
	}
	if h.HeartbeatFrame == "" {
		h.HeartbeatFrame = frameAuto
	}
	if h.RefuseStatus == 0 {
		h.RefuseStatus = http.StatusServiceUnavailable
	}
	var types []string
	for _, t := range h.Types {
		mt, _, err := mime.ParseMediaType(t)
		if err == nil {
			types = append(types, mt) // ParseMediaType lower-cases
		}
	}
	for i := range h.Limits {
		if h.Limits[i].Per == "" {
			h.Limits[i].Per = defaultLimitKey
		}
	}

	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering sse metrics: %w", err)
	}
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	var err error
	if h.lim, err = newLimitState(ctx, srv, h.Zone, h.Limits, h.Redis, h.logger); err != nil {
		return err
	}
	metrics.zones.add(&h.lim)
	h.obs = newHandlerMetrics(h.lim.srvName, h.lim.zoneName)
	h.streams = newStreamState(heartbeatConfig{
		heartbeat: h.Heartbeat, retry: h.Retry,
		text: h.HeartbeatText, frame: h.HeartbeatFrame,
		maxDuration: h.MaxDuration, idle: h.IdleTimeout, drain: h.DrainOnReload,
		types: types,
	}, h.obs, h.logger)
	var openAfter *time.Duration
	if h.OpenAfter != nil {
		openAfter = (*time.Duration)(h.OpenAfter)
	}
	h.early = newEarlyConfig(openAfter, h.streams.set.Heartbeat)
	h.life = lifecycle{group: h.streams.group, drain: time.Duration(h.DrainOnReload), logger: h.logger}
	h.life.hookShutdown(srv)
	warnAboutServer(srv, h.logger)
	return nil
}

// Validate ensures h's configuration is valid. Every message names the
// field as it is written in JSON. The checks are those of the Caddyfile
// (validate.go), on the fields that are set.
func (h *Handler) Validate() error {
	checks := []fieldCheck{
		{"heartbeat", optional(h.Heartbeat, inJSON(checkDurationAs))},
		{"heartbeat_text", ifSet(h.HeartbeatText, checkHeartbeatText)},
		{"heartbeat_frame", ifSet(h.HeartbeatFrame, checkHeartbeatFrame)},
	}
	for i, t := range h.Types {
		checks = append(checks, fieldCheck{fmt.Sprintf("types[%d]", i), checkMediaType(t)})
	}
	for i, l := range h.Limits {
		checks = append(checks,
			fieldCheck{fmt.Sprintf("limits[%d].max", i), checkLimitMax(l.Max)},
			fieldCheck{fmt.Sprintf("limits[%d].per", i), checkLimitKey(l.Per)})
	}
	checks = append(checks,
		fieldCheck{"retry", optional(h.Retry, inJSON(checkDurationAs))},
		fieldCheck{"retry", optional(h.Retry, inJSON(checkRetry))},
		fieldCheck{"max_duration", checkDuration(h.MaxDuration)},
		fieldCheck{"idle_timeout", checkDuration(h.IdleTimeout)},
		fieldCheck{"drain_on_reload", checkDuration(h.DrainOnReload)},
		fieldCheck{"open_after", optional(h.OpenAfter, inJSON(checkDurationAs))},
		fieldCheck{"refuse_status", ifSet(h.RefuseStatus, inJSON(checkRefuseStatus))},
	)
	if err := firstFailure(checks); err != nil {
		return err
	}
	return checkRedisUse(h.Redis, h.Zone, len(h.Limits))
}

// Cleanup releases h's hold on its limit zone and lifecycle hooks. Streams
// still running on h go on and keep their slots until they end.
func (h *Handler) Cleanup() error {
	metrics.zones.remove(&h.lim)
	return h.lim.cleanup()
}

// durationHint explains why v is not a duration of field: a bare number
// most often means a unit was left out.
func durationHint(field, v string) string {
	if v != "" && strings.Trim(v, "0123456789") == "" && v != "0" {
		hint := fmt.Sprintf("invalid duration %q: a duration needs a unit, such as %ss", v, v)
		if field == "heartbeat" || field == "open_after" {
			hint += `, or "off"`
		}
		return hint
	}
	return fmt.Sprintf("invalid duration %q", v)
}

// durationFields are the Handler's JSON fields of type caddy.Duration.
var durationFields = [...]string{"heartbeat", "retry", "max_duration", "idle_timeout", "drain_on_reload", "open_after"}

// UnmarshalJSON decodes h strictly, as Caddy does, and names the field of a
// bad duration: encoding/json reports only `time: invalid duration "abc"`.
func (h *Handler) UnmarshalJSON(b []byte) error {
	type plain Handler // without this method
	err := caddy.StrictUnmarshalJSON(b, (*plain)(h))
	if err == nil {
		return nil
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(b, &fields) != nil {
		return err
	}
	for _, name := range durationFields {
		raw, ok := fields[name]
		if !ok {
			continue
		}
		var d caddy.Duration
		if json.Unmarshal(raw, &d) == nil {
			continue
		}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return fmt.Errorf("%s: %s", name, durationHint(name, s))
		}
		return fmt.Errorf("%s: want a duration string such as \"15s\", or a number of nanoseconds, got %s", name, raw)
	}
	return err
}

// errStreamLimit is the error behind a refusal by a limit, for errors.Is
// and handle_errors. (The inner handler's writes after sse ended a stream
// on purpose get stream.ErrEnded.)
var errStreamLimit = errors.New("sse: stream limit reached")

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
