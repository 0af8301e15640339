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

// A stream's turn comes from its handler's scheduler (scheduler.go) when
// its next heartbeat or end is due. Writes only store a timestamp; turn
// works out what is really due from the timestamps, does it if the stream
// is at an event boundary, and tells the scheduler when to come back. It
// never waits behind a write in progress: it skips that round.

// turn does what is due for the stream at monotonic time now, and returns
// when its next turn is due, or 0 if nothing is (a closed stream, or one
// with no heartbeats and no end to wait for until scheduleEnd).
func (st *stream) turn(now int64) int64 {
	if !st.mu.TryLock() {
		// a write is in progress, perhaps blocked on a slow client, or the
		// stream is closing: that write updates lastIO itself
		return now + int64(skipRetry)
	}
	defer st.mu.Unlock()
	if st.closed || st.ended != "" {
		return 0
	}
	if st.pendingEnd == "" {
		if why := st.dueEnd(now); why != "" {
			st.pendingEnd, st.pendingAt = why, now
		}
	}
	if st.pendingEnd != "" {
		// end between events; a stream stuck mid-event ends anyway once
		// it has had maxEventWait to finish the event
		if st.boundary.atBoundary(st.sse) || now-st.pendingAt >= int64(maxEventWait) {
			st.endLocked(st.pendingEnd)
			return 0
		}
	}
	if st.beats && now-st.lastIO.Load() >= int64(st.interval) && st.boundary.atBoundary(true) {
		st.beatLocked()
	}
	return st.nextDue(now)
}

// beatLocked writes a heartbeat comment. st.mu must be held and the stream
// must be at an event boundary.
func (st *stream) beatLocked() {
	if !st.upstreamed {
		st.ownFirst = true
	}
	if _, err := st.writeLocked(st.h.frames[st.frame]); err != nil {
		return
	}
	// a comment line adds nothing to an event: the stream is still
	// between events, whichever frame was written
	st.boundary = boundaryTracker{}
	st.live.heartbeats.Add(1)
	st.h.m.heartbeats.Inc()
}

// dueEnd returns why the stream should end now, or "".
func (st *stream) dueEnd(now int64) endReason {
	if at := st.endAt.Load(); at != 0 && now >= at {
		return st.endWhy.Load().(endReason)
	}
	if st.maxEnd != 0 && now >= st.maxEnd {
		return endMaxDuration
	}
	if idle := int64(st.h.IdleTimeout); idle > 0 && now-st.lastUp.Load() >= idle {
		return endIdleTimeout
	}
	return ""
}

// nextDue returns when the next thing after now is due, or 0 if nothing
// is: the scheduler then waits for scheduleEnd. st.mu must be held (it
// reads pendingEnd).
func (st *stream) nextDue(now int64) int64 {
	next := int64(math.MaxInt64)
	at := func(t int64) {
		if t < next {
			next = t
		}
	}
	if st.beats {
		due := st.lastIO.Load() + int64(st.interval)
		if due <= now {
			due = now + int64(st.interval) // mid-event: look again later
		}
		at(due)
	}
	if t := st.endAt.Load(); t != 0 {
		at(t)
	}
	if st.maxEnd != 0 {
		at(st.maxEnd)
	}
	if idle := int64(st.h.IdleTimeout); idle > 0 {
		at(st.lastUp.Load() + idle)
	}
	if st.pendingEnd != "" {
		// Write ends the stream at the next boundary; the turn only
		// enforces the bound
		at(st.pendingAt + int64(maxEventWait))
	}
	if next == math.MaxInt64 {
		return 0
	}
	return next
}

// scheduleEnd asks the stream to end at, or after, monotonic time at, for
// the reason why (shutdown, drain). Safe from any goroutine.
func (st *stream) scheduleEnd(why endReason, at int64) {
	s := st.h.sched
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.done.Load() {
		return
	}
	if cur := st.endAt.Load(); cur != 0 && cur <= at {
		return
	}
	st.endWhy.Store(why)
	st.endAt.Store(at)
	switch st.where {
	case inQueue, running:
		// its turn is now, and the scheduler puts it back no later than at
	case inWheel:
		if at < st.wtick*s.granule {
			s.scheduleLocked(st, at)
		}
	default:
		s.scheduleLocked(st, at)
	}
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
	// skipRetry is how soon a stream's turn comes again after it was
	// skipped because a write was in progress.
	skipRetry = 250 * time.Millisecond
)
