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

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"
)

// sink records what a stream wrote and flushed, in order.
type sink struct {
	mu  sync.Mutex
	ops []string
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops = append(s.ops, "write "+string(p))
	return len(p), nil
}

func (s *sink) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ops = append(s.ops, "flush")
	return nil
}

func (s *sink) written() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b bytes.Buffer
	for _, o := range s.ops {
		if w, ok := bytes.CutPrefix([]byte(o), []byte("write ")); ok {
			b.Write(w)
		}
	}
	return b.String()
}

// observer counts what the stream reports.
type observer struct {
	mu                   sync.Mutex
	opened, first, beats int
}

func (o *observer) Opened()                 { o.mu.Lock(); o.opened++; o.mu.Unlock() }
func (o *observer) FirstByte(time.Duration) { o.mu.Lock(); o.first++; o.mu.Unlock() }
func (o *observer) HeartbeatWritten()       { o.mu.Lock(); o.beats++; o.mu.Unlock() }

func testSettings(heartbeat time.Duration) (*Settings, *observer) {
	obs := new(observer)
	return &Settings{
		Heartbeat: heartbeat,
		Beats:     NewBeats("hb"),
		Retry:     time.Second,
		Sched:     NewScheduler(GranuleFor(heartbeat)),
		Obs:       obs,
	}, obs
}

// A stream served by a plain sink, no Caddy anywhere: every write is
// written and flushed, a heartbeat goes out only between events, the
// observer hears of the opening, the first byte and each beat, and after
// Close nothing is written.
func TestStreamOnAPlainSink(t *testing.T) {
	set, obs := testSettings(time.Hour)
	w := new(sink)
	var st Stream
	st.Open(w, set, Options{SSE: true, Beats: true, Frame: FrameLine, Start: time.Now(), Cancel: func(error) {}})
	if _, err := st.Write([]byte("data: a\n")); err != nil {
		t.Fatal(err)
	}
	st.Due() // mid-event: no beat
	if _, err := st.Write([]byte("\n")); err != nil {
		t.Fatal(err)
	}
	st.Due() // between events: a beat
	if got, want := w.written(), "data: a\n\n: hb\n"; got != want {
		t.Errorf("written %q, want %q: a beat only at the event boundary", got, want)
	}
	w.mu.Lock()
	ops := append([]string(nil), w.ops...)
	w.mu.Unlock()
	want := []string{"flush", "write data: a\n", "flush", "write \n", "flush", "write : hb\n", "flush"}
	if len(ops) != len(want) {
		t.Fatalf("ops %q, want %q: the header flushed, then each write flushed once", ops, want)
	}
	for i := range ops {
		if ops[i] != want[i] {
			t.Fatalf("ops %q, want %q", ops, want)
		}
	}
	if st.Heartbeats() != 1 || obs.opened != 1 || obs.first != 1 || obs.beats != 1 {
		t.Errorf("heartbeats %d, observer %+v, want 1 beat, 1 opening, 1 first byte", st.Heartbeats(), obs)
	}
	if why := st.Close(EndUpstream); why != EndUpstream {
		t.Errorf("Close = %q, want upstream", why)
	}
	if _, err := st.Write([]byte("data: late\n\n")); !errors.Is(err, ErrEnded) {
		t.Errorf("Write after Close = %v, want ErrEnded", err)
	}
	if set.Sched.Scheduled(&st) {
		t.Error("a closed stream is still in its scheduler")
	}
}

// A stream ended on purpose at an event boundary sends a retry field in
// its frame, cancels its request, and takes no more upstream bytes; its
// end reason wins over the one Close is given.
func TestStreamEndSendsRetry(t *testing.T) {
	set, _ := testSettings(time.Hour)
	w := new(sink)
	var canceled error
	var st Stream
	st.Open(w, set, Options{SSE: true, Frame: FrameBlock, Start: time.Now(), Cancel: func(err error) { canceled = err }})
	if _, err := st.Write([]byte("data: a\n\n")); err != nil {
		t.Fatal(err)
	}
	st.End(EndDrain)
	got := w.written()
	if !bytes.HasPrefix([]byte(got), []byte("data: a\n\nretry: ")) || !bytes.HasSuffix([]byte(got), []byte("\n\n")) {
		t.Errorf("written %q, want the event, then a retry field in the block frame", got)
	}
	if !errors.Is(canceled, ErrEnded) {
		t.Errorf("request canceled with %v, want ErrEnded", canceled)
	}
	if _, err := st.Write([]byte("data: b\n\n")); !errors.Is(err, ErrEnded) {
		t.Errorf("Write after End = %v, want ErrEnded", err)
	}
	if why := st.Close(EndUpstream); why != EndDrain || !st.EndedOnPurpose() {
		t.Errorf("Close = %q, ended on purpose %v; want drain, true", why, st.EndedOnPurpose())
	}
}

// A group that is ending ends the streams that open afterwards too: a
// request in flight at shutdown may still become a stream. EndGroup counts
// the streams it asked, and the registry forgets a closed stream.
func TestRegistryEndsLateStreamsOfAnEndingGroup(t *testing.T) {
	set, _ := testSettings(10 * time.Millisecond)
	reg, g := new(Registry), new(Group)
	open := func() (*Stream, chan error) {
		ended := make(chan error, 1)
		st := new(Stream)
		st.Open(new(sink), set, Options{SSE: true, Start: time.Now(), Cancel: func(err error) { ended <- err }})
		reg.Add(st, g)
		return st, ended
	}
	early, earlyEnded := open()
	if n := reg.EndGroup(g, EndShutdown, 0); n != 1 {
		t.Fatalf("EndGroup asked %d streams, want 1", n)
	}
	late, lateEnded := open()
	for name, ch := range map[string]chan error{"early": earlyEnded, "late": lateEnded} {
		select {
		case err := <-ch:
			if !errors.Is(err, ErrEnded) {
				t.Errorf("%s stream canceled with %v", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the %s stream was not ended", name)
		}
	}
	for _, st := range []*Stream{early, late} {
		if why := st.Close(EndUpstream); why != EndShutdown {
			t.Errorf("Close = %q, want shutdown", why)
		}
		reg.Remove(st)
	}
	if n := g.Open(); n != 0 || len(reg.Streams()) != 0 {
		t.Errorf("after Remove: group holds %d, registry %d streams; want none", n, len(reg.Streams()))
	}
}

// The blank frame's heartbeat is two blank lines in the stream's own line
// ends: LF before anything and after LF, CRLF after CRLF; none after a
// lone CR that may be half a CRLF, until the rest comes; and the stream
// ends without a retry field.
func TestBlankFrame(t *testing.T) {
	set, _ := testSettings(time.Hour)
	w := new(sink)
	var st Stream
	st.Open(w, set, Options{SSE: true, Beats: true, Frame: FrameBlank, Start: time.Now(), Cancel: func(error) {}})
	steps := []string{"", "data: a\r\n\r\n", "", "", "data: b\n\n", "", "data: c\r\n\r", "", "\n", ""}
	for _, s := range steps {
		if s == "" {
			st.Due()
			continue
		}
		if _, err := st.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	st.End(EndDrain)
	want := "\n\n" + "data: a\r\n\r\n" + "\r\n\r\n" + "\r\n\r\n" + "data: b\n\n" + "\n\n" + "data: c\r\n\r" + "\n" + "\r\n\r\n"
	if got := w.written(); got != want {
		t.Errorf("written %q\nwant    %q", got, want)
	}
	if st.Heartbeats() != 5 {
		t.Errorf("%d heartbeats, want 5 (none after the lone CR)", st.Heartbeats())
	}
}
