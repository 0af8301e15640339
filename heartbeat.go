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

// The heartbeats as the adapter sees them: the settings the handler's
// streams share, and what one stream gets: whether it beats, and the frame
// its client needs.

import (
	"net/http"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap/zapcore"
)

// provisionStreams resolves the settings h's streams share: heartbeat
// interval and bytes, ends, and the scheduler, whose granule follows the
// shortest of them.
func (h *Handler) provisionStreams() {
	set := &h.set
	set.Heartbeat = defaultHeartbeat
	if h.Heartbeat != nil {
		set.Heartbeat = time.Duration(*h.Heartbeat)
	}
	set.Beats = stream.NewBeats(h.HeartbeatText)
	set.Retry = defaultRetry
	if h.Retry != nil {
		set.Retry = time.Duration(*h.Retry)
	}
	set.MaxDuration = time.Duration(h.MaxDuration)
	set.IdleTimeout = time.Duration(h.IdleTimeout)
	shortest := set.Heartbeat
	for _, d := range []caddy.Duration{h.IdleTimeout, h.MaxDuration, h.DrainOnReload} {
		if d > 0 && (shortest <= 0 || time.Duration(d) < shortest) {
			shortest = time.Duration(d)
		}
	}
	set.Sched = stream.NewScheduler(stream.GranuleFor(shortest))
	set.Obs = h.obs.m
}

// streamOptions says what the stream of sw's response is: text/event-stream
// or an extra type (sse), whether it beats, and how it is framed.
// Heartbeats go only into a 200 text/event-stream body that can take them:
// not HEAD, and not a body the upstream compressed itself.
func (h *Handler) streamOptions(sw *streamWriter, sse bool, status int, hdr http.Header) stream.Options {
	encoded := isEncoded(hdr)
	beats := sse && h.set.Heartbeat > 0 && status == http.StatusOK &&
		sw.req.Method != http.MethodHead && !encoded
	if sse && !beats && encoded {
		h.noteEncodedStream()
	}
	return stream.Options{
		SSE:     sse,
		Encoded: encoded,
		Beats:   beats,
		Frame:   sw.frame,
		Start:   sw.start,
		Scan:    h.logger.Core().Enabled(zapcore.DebugLevel),
		Cancel:  sw.cancel,
		Label:   sw.describe(),
	}
}

// frameFor picks the frame of a request's heartbeats and retry fields.
// "auto" gives the line frame to clients whose Accept lists
// text/event-stream (acceptsSSE): browsers'
// EventSource and the eventsource package (both fine with either frame) and
// @microsoft/fetch-event-source, which hands the application an empty
// message for every blank line (its parse.js, getMessages), so a block
// frame breaks an app that JSON-parses each message. Every other client
// gets the block frame: the LLM SDKs send application/json or */*, and
// @google/genai splits the body at blank lines and keeps only blocks that
// start with "data:", so a comment line glued to the next event would drop
// that event (DESIGN.md, section 8).
func (h *Handler) frameFor(acceptsSSE bool) stream.Frame {
	switch h.HeartbeatFrame {
	case frameLine:
		return stream.FrameLine
	case frameBlock:
		return stream.FrameBlock
	}
	if acceptsSSE {
		return stream.FrameLine
	}
	return stream.FrameBlock
}

// retryField returns a "retry:" field with h's reconnection time, jittered,
// framed as f.
func (h *Handler) retryField(f stream.Frame) []byte { return stream.RetryField(h.set.Retry, f) }

// Defaults of the heartbeat and retry settings.
const (
	defaultHeartbeat     = 15 * time.Second
	defaultHeartbeatText = "heartbeat"
	defaultRetry         = 3 * time.Second

	frameAuto  = "auto"
	frameBlock = "block"
	frameLine  = "line"
)
