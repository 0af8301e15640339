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

// The scheduler: one timing wheel per handler that gives every stream its
// turn when its next heartbeat or end is due.

import (
	"sync"
	"time"
)

// Scheduler owns time for the streams of one handler: it gives each stream
// a turn when its next heartbeat or scheduled end (max_duration,
// idle_timeout, shutdown, drain) is due, and wakes the process once per
// granule for all the streams due in it, not once per stream.
//
// It is a hashed timing wheel: wheelSlots lists of streams, a stream in the
// list of the first tick (a multiple of the granule) at or after its due
// time, so no stream has a turn early. One time.AfterFunc timer drives it,
// armed only while a stream waits in the wheel: no goroutine exists while
// nothing is due, and none outlives the last stream (a config that is only
// validated makes schedulers that never see a stream; the scheduler of a
// config reloaded away runs until its last stream ends).
//
// The granule (GranuleFor) is a sixteenth of the shortest duration of its
// streams' settings (heartbeat, idle timeout, max duration, drain window),
// between 1 ms and 250 ms: 250 ms at the default 15 s heartbeat, 62.5 ms at 1 s. A beat
// is then at most one granule (at most 6.25 % of the interval) after it is
// due, within the 20 % by which the interval is already jittered, and never
// later than the configured interval plus one granule. Whatever the number
// of streams, the handler wakes at most 4 times a second at 15 s, and a
// wake-up writes every beat due in it, which is what makes a beat cost
// about what the write costs. Writes never touch the scheduler: they store
// a timestamp, and a stream's turn works out what is really due and puts
// the stream back for then.
//
// A slow client never holds up another stream. A turn only TryLocks a
// stream (a write in progress, perhaps blocked on a full socket buffer,
// makes it skip that stream and try again after skipRetry), but the turn's
// own write can block too: a heartbeat to a client whose socket buffer is
// full waits until the client reads or the connection's write timeout. So
// due streams go to a queue that runners drain one stream at a time, and
// a runner that has spent more than stallAfter on one stream is taken to
// be stalled: the next tick, or a check armed stallAfter after the queue
// was filled, starts another runner for the rest of the queue. The
// stalled one carries on with the queue when its write returns. A
// goroutine beyond the timer's therefore exists only while a write to a
// client blocks; no allocation per beat (the wheel and the queue are
// intrusive lists through the streams).
//
// Lock story: mu guards every field of the scheduler and each stream's
// links (wnext, wprev, wtick, where), and orders scheduleEnd against a
// stream's close (done). It is never held during a stream's
// turn, and a stream's mu is never taken under it, so a stream being
// written to, or blocked, never holds up the scheduler. A stream being
// handled by a runner is in no list; the runner puts it back after its
// turn, unless the stream was closed meanwhile (done).
type Scheduler struct {
	granule int64 // ns

	mu       sync.Mutex
	wheel    [wheelSlots]*Stream // lists of streams by due tick modulo wheelSlots
	queue    *Stream             // streams due now, not yet handled (head)
	queueEnd *Stream             // its tail
	inWheel  int                 // streams in the wheel
	cursor   int64               // the last tick whose streams went to the queue
	timer    *time.Timer         // calls fire; created with the first stream
	armedAt  int64               // when timer fires (monotonic), 0 if not armed
	runners  int                 // goroutines draining the queue
	busy     int64               // when a runner last took a stream (monotonic)
}

// where a stream is, as far as its scheduler knows.
const (
	nowhere uint8 = iota // not scheduled: nothing is due
	inWheel              // waiting in the wheel for wtick
	inQueue              // due, waiting for a runner
	running              // having its turn in a runner
)

// NewScheduler returns a scheduler whose turns come a granule apart: see
// GranuleFor.
func NewScheduler(granule time.Duration) *Scheduler {
	return &Scheduler{granule: int64(granule), cursor: Now() / int64(granule)}
}

// schedule puts st in the wheel for monotonic time at (now if at is in the
// past), unless it is closed. at 0 means nothing is due: st leaves the
// wheel until scheduleEnd puts it back.
func (s *Scheduler) schedule(st *Stream, at int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scheduleLocked(st, at)
}

func (s *Scheduler) scheduleLocked(st *Stream, at int64) {
	s.unlinkLocked(st)
	if st.done.Load() {
		return
	}
	if end := st.endAt.Load(); end != 0 && (at == 0 || end < at) {
		// an end scheduled while the stream had its turn
		at = end
	}
	if at == 0 {
		return
	}
	tick := (at + s.granule - 1) / s.granule // round up: never early
	if tick <= s.cursor {
		tick = s.cursor + 1
	}
	st.wtick, st.where = tick, inWheel
	head := &s.wheel[tick%wheelSlots]
	st.wprev, st.wnext = nil, *head
	if *head != nil {
		(*head).wprev = st
	}
	*head = st
	s.inWheel++
	s.armLocked(tick * s.granule)
}

// unlinkLocked takes st out of the wheel or the queue.
func (s *Scheduler) unlinkLocked(st *Stream) {
	switch st.where {
	case inWheel:
		if st.wprev != nil {
			st.wprev.wnext = st.wnext
		} else {
			s.wheel[st.wtick%wheelSlots] = st.wnext
		}
		if st.wnext != nil {
			st.wnext.wprev = st.wprev
		}
		s.inWheel--
		if s.inWheel == 0 && s.queue == nil && s.armedAt != 0 {
			s.timer.Stop() // if it fires anyway, fire finds nothing to do
			s.armedAt = 0
		}
	case inQueue:
		if st.wprev != nil {
			st.wprev.wnext = st.wnext
		} else {
			s.queue = st.wnext
		}
		if st.wnext != nil {
			st.wnext.wprev = st.wprev
		} else {
			s.queueEnd = st.wprev
		}
	}
	st.wnext, st.wprev, st.where = nil, nil, nowhere
}

// remove takes a closed stream out of the scheduler for good.
func (s *Scheduler) remove(st *Stream) {
	s.mu.Lock()
	s.unlinkLocked(st)
	s.mu.Unlock()
}

// armLocked makes the timer fire at monotonic time at, or sooner.
func (s *Scheduler) armLocked(at int64) {
	if s.armedAt != 0 && s.armedAt <= at {
		return
	}
	s.armedAt = at
	d := time.Duration(at - Now())
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.fire)
		return
	}
	s.timer.Reset(d)
}

// fire is the timer's callback: it moves the streams due by now from the
// wheel to the queue and drains the queue, or leaves it to the runner
// already draining it unless that runner is stalled.
func (s *Scheduler) fire() {
	now := Now()
	s.mu.Lock()
	s.armedAt = 0
	tick := now / s.granule
	for t := s.cursor + 1; t <= tick && t <= s.cursor+wheelSlots; t++ {
		for st := s.wheel[t%wheelSlots]; st != nil; {
			next := st.wnext
			if st.wtick <= tick {
				s.unlinkLocked(st)
				st.where = inQueue
				st.wprev = s.queueEnd
				if s.queueEnd != nil {
					s.queueEnd.wnext = st
				} else {
					s.queue = st
				}
				s.queueEnd = st
			}
			st = next
		}
	}
	s.cursor = max(s.cursor, tick)
	run := s.queue != nil && (s.runners == 0 || now-s.busy >= int64(stallAfter))
	if run {
		s.runners++
		s.busy = now
	}
	if s.inWheel > 0 {
		s.armLocked((s.cursor + 1) * s.granule)
	}
	if s.queue != nil {
		// look again soon in case a write stalls the runner
		s.armLocked(now + int64(stallAfter))
	}
	s.mu.Unlock()
	if run {
		s.drain()
	}
}

// drain gives each queued stream its turn, one at a time, and puts it back
// in the wheel for its next turn.
func (s *Scheduler) drain() {
	s.mu.Lock()
	for s.queue != nil {
		st := s.queue
		s.unlinkLocked(st)
		st.where = running
		now := Now()
		s.busy = now
		s.mu.Unlock()
		next := st.Turn(now)
		s.mu.Lock()
		s.scheduleLocked(st, next)
	}
	s.runners--
	if s.inWheel > 0 {
		// the stall check armed in fire is not needed any more
		s.armedAt = 0
		s.armLocked((s.cursor + 1) * s.granule)
	}
	s.mu.Unlock()
}

// Scheduled reports whether st waits in the scheduler for a turn.
func (s *Scheduler) Scheduled(st *Stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return st.where == inWheel || st.where == inQueue
}

// GranuleFor picks the granule of a handler whose shortest configured
// duration is d (0 if none): see scheduler.
func GranuleFor(d time.Duration) time.Duration {
	if d <= 0 {
		return maxGranule
	}
	return min(max(d/16, minGranule), maxGranule)
}

const (
	// wheelSlots is the number of lists in a wheel: 64 s at the largest
	// granule, 16 s at 62.5 ms. A stream due more than a turn of the
	// wheel ahead waits in its list while the wheel goes round.
	wheelSlots = 256
	minGranule = time.Millisecond
	maxGranule = 250 * time.Millisecond
	// stallAfter is how long a runner may spend on one stream before
	// another runner takes over the rest of the queue. A heartbeat
	// write that does not block takes microseconds.
	stallAfter = 5 * time.Millisecond
)

// Granule returns how far apart the scheduler's turns come.
func (s *Scheduler) Granule() time.Duration { return time.Duration(s.granule) }
