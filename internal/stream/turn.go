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

package stream

// A stream's turn comes from its scheduler when its next heartbeat or end
// is due. Writes only store a timestamp; Turn works out what is really due
// from the timestamps, does it if the stream is at an event boundary, and
// tells the scheduler when to come back. It never waits behind a write in
// progress: it skips that round.

import (
	"errors"
	"math"
	"time"
)

// ErrEnded is returned to the upstream's writes after the stream ended on
// purpose or closed.
var ErrEnded = errors.New("sse: stream ended")

// Turn does what is due for the stream at monotonic time now, and returns
// when its next turn is due, or 0 if nothing is (a closed stream, or one
// with no heartbeats and no end to wait for until ScheduleEnd).
func (st *Stream) Turn(now int64) int64 {
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
		// it has had MaxEventWait to finish the event
		if st.boundary.At(st.opt.SSE) || now-st.pendingAt >= int64(MaxEventWait) {
			st.endLocked(st.pendingEnd)
			return 0
		}
	}
	if st.opt.Beats && now-st.lastIO.Load() >= int64(st.interval) && st.boundary.At(true) {
		st.beatLocked()
	}
	return st.nextDue(now)
}

// beatLocked writes a heartbeat. st.mu must be held and the stream must
// be at an event boundary.
func (st *Stream) beatLocked() {
	beat := st.set.Beats[st.opt.Frame]
	blank := st.opt.Frame == FrameBlank
	if blank {
		if beat = st.boundary.blank(); beat == nil {
			return
		}
	}
	if !st.upstreamed {
		st.ownFirst = true
	}
	if _, err := st.writeLocked(beat); err != nil {
		return
	}
	if !blank {
		// a comment line adds nothing to an event: the stream is still
		// between events, whichever frame was written (blank lines
		// leave it there by themselves, in its own line ends)
		st.boundary = Boundary{}
	}
	st.heartbeats.Add(1)
	st.set.Obs.HeartbeatWritten()
}

// dueEnd returns why the stream should end now, or "".
func (st *Stream) dueEnd(now int64) EndReason {
	if at := st.endAt.Load(); at != 0 && now >= at {
		return st.endWhy.Load().(EndReason)
	}
	if st.maxEnd != 0 && now >= st.maxEnd {
		return EndMaxDuration
	}
	if idle := int64(st.set.IdleTimeout); idle > 0 && now-st.lastUp.Load() >= idle {
		return EndIdleTimeout
	}
	return ""
}

// nextDue returns when the next thing after now is due, or 0 if nothing
// is: the scheduler then waits for ScheduleEnd. st.mu must be held (it
// reads pendingEnd).
func (st *Stream) nextDue(now int64) int64 {
	next := int64(math.MaxInt64)
	at := func(t int64) {
		if t < next {
			next = t
		}
	}
	if st.opt.Beats {
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
	if idle := int64(st.set.IdleTimeout); idle > 0 {
		at(st.lastUp.Load() + idle)
	}
	if st.pendingEnd != "" {
		// Write ends the stream at the next boundary; the turn only
		// enforces the bound
		at(st.pendingAt + int64(MaxEventWait))
	}
	if next == math.MaxInt64 {
		return 0
	}
	return next
}

// ScheduleEnd asks the stream to end at, or after, monotonic time at, for
// the reason why (shutdown, drain). Safe from any goroutine; a stream that
// never opened or already closed is left alone.
func (st *Stream) ScheduleEnd(why EndReason, at int64) {
	if st.set == nil {
		return
	}
	s := st.set.Sched
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

// Due makes the stream's next heartbeat due now, as if it had been quiet
// for its whole interval, gives it its turn and puts it back in its
// scheduler for the next one: for tests and benchmarks that must not wait
// for the clock.
func (st *Stream) Due() {
	st.lastIO.Store(Now() - int64(st.interval) - 1)
	st.set.Sched.schedule(st, st.Turn(Now()))
}

const (
	// heartbeatSpread: each stream beats after 80-100 % of the interval.
	heartbeatSpread = 0.2
	// maxDurationSpread: each stream's max duration is 80-100 % of it.
	maxDurationSpread = 0.2
	// MaxEventWait bounds how long an end waits for an event to finish.
	MaxEventWait = 2 * time.Second
	// skipRetry is how soon a stream's turn comes again after it was
	// skipped because a write was in progress.
	skipRetry = 250 * time.Millisecond
)

// End ends the stream now for why, as a due end does at an event boundary:
// with a retry field if it is at one. It does nothing to a stream that
// ended or closed already.
func (st *Stream) End(why EndReason) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.closed && st.ended == "" {
		st.endLocked(why)
	}
}
