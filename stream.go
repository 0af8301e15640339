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
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"
)

// stream is one event stream (or extra-type stream) from the moment its
// header is written until it ends. It owns what happens between the
// upstream's bytes: where they stand in the event syntax (boundary), the
// heartbeats, the ends sse decides (max_duration, idle_timeout, shutdown,
// drain), the limit slots it holds, and its counts. The writer
// (streamWriter) hands it the upstream's bytes; its handler's scheduler
// drives the rest, giving it a turn when something is due.
//
// Lock story. Three kinds of fields, by who may touch them when:
//
//   - Configuration (h through scanner below) is set on the handler
//     goroutine, in ServeHTTP and open, before the stream is scheduled,
//     and is read-only afterwards. slots is written by admit before open
//     and by release after close, both on the handler goroutine; turns
//     never read it.
//   - lastIO, lastUp, endAt, endWhy and done are atomics: written by
//     writes, by turns, and by shutdown and drain from other goroutines;
//     read by turns and by the scheduler without mu.
//   - The scheduler links (wnext through where) belong to the scheduler
//     and are guarded by its mutex (scheduler.go), never by mu.
//   - mu serialises every write to the client (upstream bytes, heartbeats,
//     retry hints, flushes) and guards every field declared after it. A
//     turn only ever TryLocks mu, so it never waits behind a write.
//
// close sets closed under mu, so nothing is written after it returns, then
// done, then takes the stream out of its scheduler, which never puts a done
// stream back.
type stream struct {
	h        *Handler
	cancel   func(error)              // ends the request seen by the inner handlers
	start    time.Time                // when ServeHTTP began
	frame    frameKind                // how heartbeats and retry fields are framed for this client
	w        http.ResponseWriter      // the writer sse wraps; set in open
	rc       *http.ResponseController // flushes w; set in open
	sse      bool                     // Content-Type is text/event-stream (not an extra type)
	encoded  bool                     // the body has a content coding: nothing may be added to it
	beats    bool                     // heartbeats are on for this stream
	interval time.Duration            // this stream's jittered heartbeat interval
	maxEnd   int64                    // monotonic deadline for max_duration, 0 if none
	scanner  *eventScanner            // counts events and ids, only when debug logging is on; contents under mu

	slots []slot // limit slots held; see the lock story

	// lastIO is when the last byte (upstream or heartbeat) went to the client.
	lastIO atomic.Int64
	// lastUp is when the last upstream byte went to the client.
	lastUp atomic.Int64
	// endAt is when a scheduled end (shutdown, drain) is due, 0 if none;
	// endWhy is its reason. Set by other goroutines, read by the timer.
	endAt  atomic.Int64
	endWhy atomic.Value // endReason
	done   atomic.Bool  // closed: the scheduler must not take it back

	wnext, wprev *stream // neighbours in the scheduler's wheel list or queue
	wtick        int64   // the tick the stream waits for in the wheel
	where        uint8   // nowhere, inWheel, inQueue or running

	mu         sync.Mutex
	boundary   boundaryTracker // where the bytes sent so far end
	bomHeld    int8            // BOM bytes withheld from the upstream's first write; -1 when done
	ownFirst   bool            // we wrote before the upstream's first byte
	upstreamed bool            // the upstream's first byte has been written
	closed     bool            // closed: nothing may be written any more
	ended      endReason       // why sse ended the stream, "" if it did not
	pendingEnd endReason       // an end waiting for an event boundary
	pendingAt  int64           // when pendingEnd was asked for
	writeErr   bool            // a write to the client failed

	// live is what the admin API shows of the stream (admin.go): set on
	// the handler goroutine when it opens; its counters are atomics
	live liveStream
}

// open starts a stream's life once its header has gone to w: it flushes the
// header, so the client sees the stream open before the first event, then
// sets up the metrics, the registry and the first turn. Called once, from
// WriteHeader, on the handler goroutine, before any byte of the body.
func (st *stream) open(w http.ResponseWriter, now int64) {
	h := st.h
	st.w = w
	st.rc = http.NewResponseController(w)
	st.lastIO.Store(now)
	st.lastUp.Store(now)
	st.mu.Lock()
	if err := st.rc.Flush(); err != nil {
		st.writeErr = true
	}
	st.mu.Unlock()
	h.m.open.Inc()
	h.m.total.Inc()
	st.bomHeld = -1
	if st.beats {
		st.interval = jitterDown(h.heartbeat, heartbeatSpread)
		st.bomHeld = 0
	}
	if h.MaxDuration > 0 {
		st.maxEnd = now + int64(jitterDown(time.Duration(h.MaxDuration), maxDurationSpread))
	}
	if h.logger.Core().Enabled(zapcore.DebugLevel) {
		st.scanner = new(eventScanner)
	}
	st.mu.Lock()
	next := st.nextDue(now)
	st.mu.Unlock()
	h.sched.schedule(st, next)
	h.streams.add(st)
}

// write passes the upstream's bytes p to the client: it drops a BOM that
// would otherwise land after a heartbeat, and ends the stream if an end
// waits for the event boundary p reaches.
func (st *stream) write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed || st.ended != "" {
		return 0, errStreamEnded
	}
	n := len(p)
	if st.bomHeld >= 0 {
		var held []byte
		held, p = st.stripBOM(p)
		if len(held) > 0 {
			if _, err := st.writeLocked(held); err != nil {
				return 0, err
			}
		}
		if len(p) == 0 {
			return n, nil
		}
	}
	skipped := n - len(p)
	written, err := st.writeLocked(p)
	if written > 0 {
		if !st.upstreamed {
			st.upstreamed = true
			st.h.m.firstByte.Observe(time.Since(st.start).Seconds())
		}
		st.lastUp.Store(st.lastIO.Load())
	}
	if err != nil {
		return skipped + written, err
	}
	if st.pendingEnd != "" && st.boundary.atBoundary(st.sse) {
		st.endLocked(st.pendingEnd)
	}
	return n, nil
}

// writeLocked writes p to the client and flushes it. st.mu must be held.
func (st *stream) writeLocked(p []byte) (int, error) {
	n, err := st.w.Write(p)
	if n > 0 {
		st.live.bytes.Add(int64(n))
		st.boundary.update(p[:n])
		if st.scanner != nil {
			st.scanner.scan(p[:n])
		}
	}
	if err == nil {
		err = st.rc.Flush()
	}
	st.lastIO.Store(monotime())
	if err != nil {
		st.writeErr = true
	}
	return n, err
}

// stripBOM withholds a UTF-8 BOM that starts the upstream's bytes when
// something of ours went out first: a client strips only a BOM at the very
// start of the stream, and a later one would turn "data" into "\uFEFFdata"
// and lose the event (WHATWG HTML, 9.2.6). It returns bytes withheld earlier
// that turn out not to be a BOM, and what is left of p. st.mu must be held.
func (st *stream) stripBOM(p []byte) (held, rest []byte) {
	for len(p) > 0 && st.bomHeld < 3 {
		if p[0] != utf8BOM[st.bomHeld] {
			held = utf8BOM[:st.bomHeld]
			st.bomHeld = -1
			return held, p
		}
		st.bomHeld++
		p = p[1:]
	}
	if st.bomHeld == 3 {
		st.bomHeld = -1
		if !st.ownFirst {
			// nothing of ours went first: the BOM is the stream's own
			// first bytes and the client strips it
			return utf8BOM, p
		}
	}
	return nil, p
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// endLocked ends the stream on purpose: at an event boundary it first sends
// a retry field so the client reconnects after about Retry (never into a
// compressed body, where plain bytes would corrupt it), then it refuses
// further upstream writes and cancels the request seen by the inner
// handlers, so the upstream sees its client go away. st.mu must be held.
func (st *stream) endLocked(why endReason) {
	if st.sse && !st.encoded && st.boundary.atBoundary(true) {
		_, _ = st.writeLocked(st.h.retryField(st.frame))
	}
	st.ended = why
	st.cancel(errStreamEnded)
}

// close ends the stream's life, however the request ended: after it, no
// byte is ever written and the stream leaves its scheduler (a heartbeat in
// flight holds mu, so close waits it out). It returns why the stream ended: the
// reason sse ended it for, if it did, else why. Safe to call on a stream
// that never opened.
func (st *stream) close(why endReason) endReason {
	st.mu.Lock()
	if st.bomHeld > 0 && st.ended == "" && !st.writeErr {
		// the upstream ended inside what looked like a BOM: its bytes
		// are data after all
		_, _ = st.writeLocked(utf8BOM[:st.bomHeld])
	}
	st.closed = true
	if st.ended != "" {
		why = st.ended
	}
	st.mu.Unlock()
	st.done.Store(true)
	if st.h != nil && st.h.sched != nil {
		st.h.sched.remove(st)
	}
	return why
}

// writeErrSeen reports whether a write to the client failed.
func (st *stream) writeErrSeen() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.writeErr
}

// endedOnPurpose reports whether sse itself ended the stream.
func (st *stream) endedOnPurpose() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.ended != ""
}
