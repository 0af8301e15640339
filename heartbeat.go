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

// The heartbeats as the adapter sees them: the settings a handler's
// streams share (interval, text, frame, ends, scheduler), and what one
// stream gets: whether it beats, and the frame its client needs.

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// streamState is what a handler's streams share, set at Provision and
// read-only afterwards.
type streamState struct {
	set    stream.Settings // heartbeats, ends, scheduler and metrics
	frame  string          // heartbeat_frame: auto, block or line
	types  []string        // lower-cased extra media types
	group  *stream.Group   // the handler's open streams, in liveStreams
	logger *zap.Logger
	coded  *sync.Once // the upstream-compressed stream notice is logged once
}

// heartbeatConfig is the part of the config the streams' settings come
// from, with defaults already filled in where a field has one.
type heartbeatConfig struct {
	heartbeat, retry         *caddy.Duration
	text, frame              string
	maxDuration, idle, drain caddy.Duration
	types                    []string // already lower-cased
}

// newStreamState resolves the settings a handler's streams share. The
// scheduler's granule follows the shortest of the durations that make a
// stream's turn come.
func newStreamState(c heartbeatConfig, obs stream.Observer, logger *zap.Logger) streamState {
	s := streamState{
		frame:  c.frame,
		types:  c.types,
		group:  new(stream.Group),
		logger: logger,
		coded:  new(sync.Once),
	}
	set := &s.set
	set.Heartbeat = defaultHeartbeat
	if c.heartbeat != nil {
		set.Heartbeat = time.Duration(*c.heartbeat)
	}
	set.Beats = stream.NewBeats(c.text)
	set.Retry = defaultRetry
	if c.retry != nil {
		set.Retry = time.Duration(*c.retry)
	}
	set.MaxDuration = time.Duration(c.maxDuration)
	set.IdleTimeout = time.Duration(c.idle)
	shortest := set.Heartbeat
	for _, d := range []caddy.Duration{c.idle, c.maxDuration, c.drain} {
		if d > 0 && (shortest <= 0 || time.Duration(d) < shortest) {
			shortest = time.Duration(d)
		}
	}
	set.Sched = stream.NewScheduler(stream.GranuleFor(shortest))
	set.Obs = obs
	return s
}

// options says what a stream whose response has this status and header is:
// text/event-stream or an extra type (sse), whether it beats, how it is
// framed. Heartbeats go only into a 200 text/event-stream body that can
// take them: not HEAD, and not a body the upstream compressed itself.
func (s *streamState) options(sse bool, status int, method string, hdr http.Header) stream.Options {
	encoded := isEncoded(hdr)
	beats := sse && s.set.Heartbeat > 0 && status == http.StatusOK &&
		method != http.MethodHead && !encoded
	if sse && !beats && encoded {
		s.noteEncodedStream()
	}
	return stream.Options{
		SSE:     sse,
		Encoded: encoded,
		Beats:   beats,
		Scan:    s.logger.Core().Enabled(zapcore.DebugLevel),
	}
}

// frameFor picks the frame of a request's heartbeats and retry fields.
// "auto" gives the line frame to clients whose Accept lists
// text/event-stream: browsers' EventSource and the eventsource package
// (fine with any frame), and @microsoft/fetch-event-source, which hands
// the application an empty message for every blank line (its parse.js,
// getMessages), so a block or blank frame breaks an app that JSON-parses
// each message. Every other client gets the blank frame: the LLM SDKs
// send application/json or */*; google.golang.org/genai splits the body
// at blank lines and fails on any piece that does not start with "data:",
// a comment in either frame included, and @google/genai drops an event a
// comment line is glued to; two blank lines are an empty piece to both,
// and nothing to every WHATWG parser (DESIGN.md, sections 8 and 11).
func (s *streamState) frameFor(acceptsSSE bool) stream.Frame {
	switch s.frame {
	case frameLine:
		return stream.FrameLine
	case frameBlock:
		return stream.FrameBlock
	case frameBlank:
		return stream.FrameBlank
	}
	if acceptsSSE {
		return stream.FrameLine
	}
	return stream.FrameBlank
}

// retryField returns a "retry:" field with the reconnection time,
// jittered, framed as f.
func (s *streamState) retryField(f stream.Frame) []byte { return stream.RetryField(s.set.Retry, f) }

// noteEncodedStream logs, once per handler, that an upstream compressed an
// event stream itself, so sse cannot add heartbeats to it.
func (s *streamState) noteEncodedStream() {
	s.coded.Do(func() {
		s.logger.Info("upstream sent a compressed event stream; it gets no heartbeats, because nothing can be inserted between its events. " +
			"Fix: make the upstream not compress text/event-stream (for fetch/POST clients, send it Accept-Encoding identity with request_header Accept-Encoding identity), " +
			"and let Caddy's encode skip it")
	})
}

// isEncoded reports whether the body has a content coding other than identity.
func isEncoded(hdr http.Header) bool {
	for _, v := range hdr["Content-Encoding"] {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return true
			}
		}
	}
	return false
}

// Defaults of the heartbeat and retry settings.
const (
	defaultHeartbeat     = 15 * time.Second
	defaultHeartbeatText = "heartbeat"
	defaultRetry         = 3 * time.Second

	frameAuto  = "auto"
	frameBlock = "block"
	frameLine  = "line"
	frameBlank = "blank"
)
