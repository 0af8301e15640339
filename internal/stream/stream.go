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

// Package stream is the event-stream engine beneath the Caddy adapter: one
// stream from its header to its end (its bytes, heartbeats and scheduled
// ends), where its bytes stand in the event syntax, the scheduler that
// gives streams their turns, and the registry of open streams. It knows
// nothing of Caddy: it is handed a Sink for the bytes, settings, a clock
// and an Observer for the metrics, and could serve a plain net/http server.
package stream

import (
	"sync"
	"sync/atomic"
	"time"
)

// Sink is where a stream's bytes go: Write passes bytes towards the client,
// Flush pushes what was written to it.
type Sink interface {
	Write(p []byte) (int, error)
	Flush() error
}

// Observer is told what happens to a stream, for the metrics.
type Observer interface {
	// Opened is called once, when the stream opens.
	Opened()
	// FirstByte is called once, when the upstream's first byte went out,
	// with the time since the request began.
	FirstByte(since time.Duration)
	// HeartbeatWritten is called after every heartbeat written.
	HeartbeatWritten()
}

// Settings are what the streams of one handler share: read-only once the
// first stream opens.
type Settings struct {
	Heartbeat   time.Duration // the heartbeat interval, before jitter; 0 means none
	Beats       Beats         // the heartbeat bytes
	Retry       time.Duration // the reconnection time of the retry field sent at an end
	MaxDuration time.Duration // end streams after about this long; 0 means never
	IdleTimeout time.Duration // end streams whose upstream is quiet this long; 0 means never
	Sched       *Scheduler    // gives the streams their turns
	Obs         Observer      // the metrics
}

// Options are what one stream is, decided when its header is written.
type Options struct {
	SSE     bool      // text/event-stream, not a line-oriented extra type
	Encoded bool      // the body has a content coding: nothing may be added to it
	Beats   bool      // heartbeats are on for this stream
	Frame   Frame     // how its heartbeats and retry fields are framed
	Start   time.Time // when the request began
	Scan    bool      // count events and ids for the debug log
	// Cancel ends the request seen by the handlers that produce the
	// stream's bytes, when the stream ends on purpose.
	Cancel func(error)
	// Label is what the adapter says of the stream (the admin API's view of
	// it); read-only once the stream is open.
	Label any
	// Early: the stream opens before its upstream answered; Waiting
	// reports true until Answered is called.
	Early bool
}

// Stream is one event stream (or line-oriented stream) from the moment its
// header is written until it ends. It owns what happens between the
// upstream's bytes: where they stand in the event syntax, the heartbeats,
// the ends decided here (max duration, idle timeout, shutdown, drain), and
// its counts. Its writer hands it the upstream's bytes; its Scheduler
// drives the rest, giving it a turn when something is due. A zero Stream
// that never opened may be closed.
//
// Lock story. Four kinds of fields, by who may touch them when:
//
//   - Configuration (set through scanner) is set in Open, on the
//     goroutine of the handler that writes the response, before the stream
//     is scheduled, and is read-only afterwards.
//   - lastIO, lastUp, endAt, endWhy, done and the counters are atomics:
//     written by writes, by turns, and by shutdown and drain from other
//     goroutines; read by turns and by the scheduler without mu.
//   - The scheduler links (wnext through where) belong to the scheduler
//     and are guarded by its mutex (scheduler.go), never by mu.
//   - mu serialises every write to the client (upstream bytes, heartbeats,
//     retry fields, flushes) and guards every field declared after it. A
//     turn only ever TryLocks mu, so it never waits behind a write.
//
// Close sets closed under mu, so nothing is written after it returns, then
// done, then takes the stream out of its scheduler, which never puts a done
// stream back.
type Stream struct {
	set      *Settings
	opt      Options
	w        Sink
	interval time.Duration // this stream's jittered heartbeat interval
	maxEnd   int64         // monotonic deadline for MaxDuration, 0 if none
	scanner  *Scanner      // counts events and ids with Options.Scan; contents under mu
	group    *Group        // the group it is registered in, nil if none
	shard    uint32        // its shard in the registry

	lastIO     atomic.Int64 // when the last byte (upstream or heartbeat) went to the client
	lastUp     atomic.Int64 // when the last upstream byte went to the client
	endAt      atomic.Int64 // when a scheduled end (shutdown, drain) is due, 0 if none
	endWhy     atomic.Value // EndReason of endAt
	done       atomic.Bool  // closed: the scheduler must not take it back
	bytes      atomic.Int64 // bytes written to the client
	heartbeats atomic.Int64 // heartbeats written
	answered   atomic.Bool  // an Early stream's upstream answered

	wnext, wprev *Stream // neighbours in the scheduler's wheel list or queue
	wtick        int64   // the tick the stream waits for in the wheel
	where        uint8   // nowhere, inWheel, inQueue or running

	mu         sync.Mutex
	boundary   Boundary  // where the bytes sent so far end
	bomHeld    int8      // BOM bytes withheld from the upstream's first write; -1 when done
	ownFirst   bool      // we wrote before the upstream's first byte
	upstreamed bool      // the upstream's first byte has been written
	closed     bool      // closed: nothing may be written any more
	ended      EndReason // why the stream was ended on purpose, "" if it was not
	pendingEnd EndReason // an end waiting for an event boundary
	pendingAt  int64     // when pendingEnd was asked for
	writeErr   bool      // a write to the client failed
}

// Open starts a stream's life once its header has gone to w: it flushes
// the header, so the client sees the stream open before the first event,
// then schedules its first turn. Called once, on the goroutine of the
// handler that writes the response, before any byte of the body.
func (st *Stream) Open(w Sink, set *Settings, opt Options) {
	now := Now()
	st.set, st.opt, st.w = set, opt, w
	st.lastIO.Store(now)
	st.lastUp.Store(now)
	st.mu.Lock()
	if err := w.Flush(); err != nil {
		st.writeErr = true
	}
	st.mu.Unlock()
	set.Obs.Opened()
	st.bomHeld = -1
	if opt.Beats {
		st.interval = JitterDown(set.Heartbeat, heartbeatSpread)
		st.bomHeld = 0
	}
	if set.MaxDuration > 0 {
		st.maxEnd = now + int64(JitterDown(set.MaxDuration, maxDurationSpread))
	}
	if opt.Scan {
		st.scanner = new(Scanner)
	}
	st.mu.Lock()
	next := st.nextDue(now)
	st.mu.Unlock()
	set.Sched.schedule(st, next)
}

// Write passes the upstream's bytes p to the client: it drops a BOM that
// would otherwise land after a heartbeat, and ends the stream if an end
// waits for the event boundary p reaches. After the stream ended or closed
// it writes nothing and returns ErrEnded.
func (st *Stream) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed || st.ended != "" {
		return 0, ErrEnded
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
			st.set.Obs.FirstByte(time.Since(st.opt.Start))
		}
		st.lastUp.Store(st.lastIO.Load())
	}
	if err != nil {
		return skipped + written, err
	}
	if st.pendingEnd != "" && st.boundary.At(st.opt.SSE) {
		st.endLocked(st.pendingEnd)
	}
	return n, nil
}

// writeLocked writes p to the client and flushes it. st.mu must be held.
func (st *Stream) writeLocked(p []byte) (int, error) {
	n, err := st.w.Write(p)
	if n > 0 {
		st.bytes.Add(int64(n))
		st.boundary.Update(p[:n])
		if st.scanner != nil {
			st.scanner.Scan(p[:n])
		}
	}
	if err == nil {
		err = st.w.Flush()
	}
	st.lastIO.Store(Now())
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
func (st *Stream) stripBOM(p []byte) (held, rest []byte) {
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
// a retry field so the client reconnects after about Settings.Retry (never
// into a compressed body, where plain bytes would corrupt it, and never in
// the blank frame, whose clients reject it), then it
// refuses further upstream writes and cancels the request seen by the
// handlers inside, so the upstream sees its client go away. st.mu must be
// held.
func (st *Stream) endLocked(why EndReason) {
	if st.opt.SSE && !st.opt.Encoded && st.opt.Frame != FrameBlank && st.boundary.At(true) {
		_, _ = st.writeLocked(RetryField(st.set.Retry, st.opt.Frame))
	}
	st.ended = why
	st.opt.Cancel(ErrEnded)
}

// Close ends the stream's life, however the request ended: after it, no
// byte is ever written and the stream leaves its scheduler (a heartbeat in
// flight holds mu, so Close waits it out). It returns why the stream ended:
// the reason it was ended for on purpose, if it was, else why. Safe to call
// on a stream that never opened.
func (st *Stream) Close(why EndReason) EndReason {
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
	if st.set != nil {
		st.set.Sched.remove(st)
	}
	return why
}

// WriteFailed reports whether a write to the client failed.
func (st *Stream) WriteFailed() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.writeErr
}

// EndedOnPurpose reports whether the stream was ended on purpose (max
// duration, idle timeout, shutdown, drain).
func (st *Stream) EndedOnPurpose() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.ended != ""
}

// WriteOwn writes bytes of the adapter's own, whole events or fields such
// as an error event or a retry field, where the stream stands between
// events. It writes nothing, and returns ErrEnded, after the stream ended
// or closed, or in the middle of an event.
func (st *Stream) WriteOwn(p []byte) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed || st.ended != "" || !st.boundary.At(st.opt.SSE) {
		return ErrEnded
	}
	if !st.upstreamed {
		st.ownFirst = true
	}
	_, err := st.writeLocked(p)
	return err
}

// Answered notes that the upstream of a stream opened early answered.
func (st *Stream) Answered() { st.answered.Store(true) }

// Waiting reports whether the stream opened before its upstream answered
// and the upstream has not answered yet.
func (st *Stream) Waiting() bool { return st.opt.Early && !st.answered.Load() }

// Early reports whether the stream opened before its upstream answered.
func (st *Stream) Early() bool { return st.opt.Early }

// Beating reports whether the stream gets heartbeats.
func (st *Stream) Beating() bool { return st.opt.Beats }

// Frame is how the stream's heartbeats and retry fields are framed.
func (st *Stream) Frame() Frame { return st.opt.Frame }

// Start is when the stream's request began.
func (st *Stream) Start() time.Time { return st.opt.Start }

// Label is what the adapter said of the stream in Options.
func (st *Stream) Label() any { return st.opt.Label }

// Bytes returns the bytes written to the client so far.
func (st *Stream) Bytes() int64 { return st.bytes.Load() }

// Heartbeats returns the heartbeats written so far.
func (st *Stream) Heartbeats() int64 { return st.heartbeats.Load() }

// Scanner returns the stream's event scanner, nil without Options.Scan.
// Read it only after Close.
func (st *Stream) Scanner() *Scanner { return st.scanner }

// OwnBytesFirst reports whether a byte of the stream's own (a heartbeat)
// went to the client before the upstream's first byte.
func (st *Stream) OwnBytesFirst() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.ownFirst
}
