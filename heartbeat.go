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
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// Each stream has one timer (time.AfterFunc), and no goroutine while it
// waits. Writes only store a timestamp; when the timer fires, tick works out
// what is due (a heartbeat, the end of the stream) from the timestamps, does
// it if the stream is at an event boundary, and re-arms the timer for what
// is left. tick never waits behind a write in progress: it skips that round.

// tick is the stream timer's callback.
func (sw *streamWriter) tick() {
	now := monotime()
	if !sw.mu.TryLock() {
		// a write is in progress, perhaps blocked on a slow client, or the
		// stream is finishing: that write updates lastIO itself
		sw.rearmAfter(skipRetry)
		return
	}
	defer sw.mu.Unlock()
	if sw.closed || sw.ended != "" {
		return
	}
	if sw.pendingEnd == "" {
		if why := sw.dueEnd(now); why != "" {
			sw.pendingEnd, sw.pendingAt = why, now
		}
	}
	if sw.pendingEnd != "" {
		// end between events; a stream stuck mid-event ends anyway once
		// it has had maxEventWait to finish the event
		if sw.boundary.atBoundary(sw.sse) || now-sw.pendingAt >= int64(maxEventWait) {
			sw.endLocked(sw.pendingEnd)
			return
		}
	}
	if sw.beats && now-sw.lastIO.Load() >= int64(sw.interval) && sw.boundary.atBoundary(true) {
		sw.beatLocked()
	}
	sw.rearm(now)
}

// beatLocked writes a heartbeat comment. sw.mu must be held and the stream
// must be at an event boundary.
func (sw *streamWriter) beatLocked() {
	if !sw.upstreamed {
		sw.ownFirst = true
	}
	if _, err := sw.writeLocked(sw.h.frames[sw.frame]); err != nil {
		return
	}
	// a comment line adds nothing to an event: the stream is still
	// between events, whichever frame was written
	sw.boundary = boundaryTracker{}
	sw.heartbeats++
	sw.live.heartbeats.Add(1)
	sw.h.m.heartbeats.Inc()
}

// endLocked ends the stream on purpose: at an event boundary it first sends
// a retry field so the client reconnects after about Retry (never into a
// compressed body, where plain bytes would corrupt it), then it refuses
// further upstream writes and cancels the request seen by the inner
// handlers, so the upstream sees its client go away. sw.mu must be held.
func (sw *streamWriter) endLocked(why endReason) {
	if sw.sse && !sw.encoded && sw.boundary.atBoundary(true) {
		_, _ = sw.writeLocked(sw.h.retryField(sw.frame))
	}
	sw.ended = why
	sw.cancel(errStreamEnded)
}

// dueEnd returns why the stream should end now, or "".
func (sw *streamWriter) dueEnd(now int64) endReason {
	if at := sw.endAt.Load(); at != 0 && now >= at {
		return sw.endWhy.Load().(endReason)
	}
	if sw.maxEnd != 0 && now >= sw.maxEnd {
		return endMaxDuration
	}
	if idle := int64(sw.h.IdleTimeout); idle > 0 && now-sw.lastUp.Load() >= idle {
		return endIdleTimeout
	}
	return ""
}

// rearm sets the timer for the next thing due after now. It never re-arms a
// finished stream's timer. sw.mu must be held (it reads pendingEnd).
func (sw *streamWriter) rearm(now int64) {
	sw.tmu.Lock()
	defer sw.tmu.Unlock()
	if sw.done.Load() {
		return
	}
	next := int64(math.MaxInt64)
	at := func(t int64) {
		if t < next {
			next = t
		}
	}
	if sw.beats {
		due := sw.lastIO.Load() + int64(sw.interval)
		if due <= now {
			due = now + int64(sw.interval) // mid-event: look again later
		}
		at(due)
	}
	if t := sw.endAt.Load(); t != 0 {
		at(t)
	}
	if sw.maxEnd != 0 {
		at(sw.maxEnd)
	}
	if idle := int64(sw.h.IdleTimeout); idle > 0 {
		at(sw.lastUp.Load() + idle)
	}
	if sw.pendingEnd != "" {
		// Write ends the stream at the next boundary; the timer only
		// enforces the bound
		at(sw.pendingAt + int64(maxEventWait))
	}
	if next == math.MaxInt64 {
		return // nothing due: the timer waits for scheduleEnd
	}
	sw.timer.Reset(max(time.Duration(next-now), minTick))
}

// rearmAfter sets the timer to fire after d, unless the stream is finished.
func (sw *streamWriter) rearmAfter(d time.Duration) {
	sw.tmu.Lock()
	defer sw.tmu.Unlock()
	if !sw.done.Load() {
		sw.timer.Reset(d)
	}
}

// scheduleEnd asks the stream to end at, or after, monotonic time at, for
// the reason why (shutdown, drain). Safe from any goroutine.
func (sw *streamWriter) scheduleEnd(why endReason, at int64) {
	sw.tmu.Lock()
	defer sw.tmu.Unlock()
	if sw.done.Load() {
		return
	}
	if cur := sw.endAt.Load(); cur != 0 && cur <= at {
		return
	}
	sw.endWhy.Store(why)
	sw.endAt.Store(at)
	// fire now: tick works out the soonest wake-up itself, so an earlier
	// heartbeat is not lost to a later end
	sw.timer.Reset(0)
}

// frameKind is how one stream's heartbeats and retry fields are framed.
type frameKind uint8

const (
	kindBlock frameKind = iota // ": <text>\n\n": a comment, then a blank line
	kindLine                   // ": <text>\n": a comment line alone
)

func (k frameKind) String() string {
	if k == kindLine {
		return frameLine
	}
	return frameBlock
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
func (h *Handler) frameFor(acceptsSSE bool) frameKind {
	switch h.HeartbeatFrame {
	case frameLine:
		return kindLine
	case frameBlock:
		return kindBlock
	}
	if acceptsSSE {
		return kindLine
	}
	return kindBlock
}

// retryField returns a "retry:" field with the handler's reconnection time,
// jittered up to 50 % above it, framed like the stream's heartbeats.
func (h *Handler) retryField(k frameKind) []byte {
	b := make([]byte, 0, 24)
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, h.retryHint().Milliseconds(), 10)
	b = append(b, '\n')
	if k == kindBlock {
		b = append(b, '\n')
	}
	return b
}

// retryHint is Retry with jitter, so clients told to come back together do
// not all come back at once.
func (h *Handler) retryHint() time.Duration {
	return jitterUp(h.retry, 0.5)
}

// jitterDown returns d scaled by a random factor in [1-spread, 1].
func jitterDown(d time.Duration, spread float64) time.Duration {
	return time.Duration(float64(d) * (1 - spread*rand.Float64()))
}

// jitterUp returns d scaled by a random factor in [1, 1+spread].
func jitterUp(d time.Duration, spread float64) time.Duration {
	return time.Duration(float64(d) * (1 + spread*rand.Float64()))
}

// monotime is a monotonic clock reading in nanoseconds, cheap to store in
// an atomic.
func monotime() int64 { return int64(time.Since(epoch)) }

var epoch = time.Now()

// endReason says why a stream ended; the values are the metric labels.
type endReason string

const (
	endClient      endReason = "client"
	endUpstream    endReason = "upstream"
	endMaxDuration endReason = "max_duration"
	endIdleTimeout endReason = "idle_timeout"
	endShutdown    endReason = "shutdown"
	endDrain       endReason = "drain"
	endError       endReason = "error"
)

const (
	// heartbeatSpread: each stream beats after 80-100 % of the interval.
	heartbeatSpread = 0.2
	// maxDurationSpread: each stream's max_duration is 80-100 % of it.
	maxDurationSpread = 0.2
	// maxEventWait bounds how long an end waits for an event to finish.
	maxEventWait = 2 * time.Second
	// skipRetry is how soon the timer tries again after skipping a round
	// because a write was in progress.
	skipRetry = 250 * time.Millisecond
	// minTick keeps a stream's timer from spinning.
	minTick = time.Millisecond
)
