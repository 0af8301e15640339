package caddysse

// Heartbeats never change the events a client parses: unit tables for the
// boundary tracker, a property test over random streams, writes and beat
// times, and a fuzz target for the same property (issue 3).

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/sseref"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Named streams around the cases that break naive injectors: a beat before
// a first event that starts with a BOM, CR-only line ends, a CRLF split
// across writes, a lone CR then LF in the next write, and an upstream that
// stalls mid-event. A client parses the same events with the beats as
// without, and each case beats where it may.
func TestHeartbeatInjectionCases(t *testing.T) {
	hs := heartbeatHandlers(t)
	for _, tc := range []struct {
		name string
		// steps: a string is written by the upstream, beat is a beat
		// attempt (the timer firing on an idle stream)
		steps []any
		beats int // beats that must go out with the block and line frames
		// beats of the blank frame, where fewer: it waits after a CR that
		// may be half a CRLF
		blank *int
	}{
		{"beat before anything", []any{beat, "data: a\n\n"}, 1, nil},
		{"BOM start after a beat", []any{beat, "\xEF\xBB\xBFdata: a\n\n"}, 1, nil},
		{"BOM split across writes after a beat", []any{beat, "\xEF", beat, "\xBB", beat, "\xBFdata: a\n\n", beat}, 4, nil},
		{"BOM start without beat", []any{"\xEF\xBB\xBFdata: a\n\n", beat, "data: b\n\n"}, 1, nil},
		{"BOM-like start that is not a BOM", []any{beat, "\xEF\xBB", beat, "a\n\ndata: b\n\n"}, 2, nil},
		{"BOM after the first event", []any{"data: a\n\n", beat, "\xEF\xBB\xBFdata: b\n\ndata: c\n\n"}, 1, nil},
		{"CR only", []any{"data: a\r", beat, "data: b\r", beat, "\r", beat, "data: c\r\r", beat}, 2, ptr(0)},
		{"CRLF split across writes", []any{"data: a\r\n\r", beat, "\ndata: b\r\n\r\n"}, 1, ptr(0)},
		{"CRLF", []any{beat, "data: a\r\n\r\n", beat, beat, "data: b\r\n\r\n", beat}, 4, nil},
		{"lone CR then LF in the next write", []any{"data: a\r", beat, "\n", beat, "\r", beat, "\n", beat, "data: b\n\n"}, 2, ptr(1)},
		{"stall mid event", []any{"data: a\n", beat, beat, "data: b\n", beat, "\n", beat}, 1, nil},
		{"stall mid line", []any{"da", beat, "ta: a", beat, "\n\n", beat}, 1, nil},
		{"id and retry fields", []any{"id: 1\nretry: 500\n", beat, "data: a\n\n", beat, "retry: 9\n\n", beat, "data: b\n\n"}, 2, nil},
		{"incomplete final event", []any{"data: a\n\ndata: b\n", beat}, 0, nil},
		{"event type kept", []any{"event: x\n", beat, "data: a\n\n"}, 0, nil},
	} {
		for _, frame := range []string{frameBlock, frameLine, frameBlank} {
			t.Run(tc.name+"/"+frame, func(t *testing.T) {
				var script []scriptStep
				for _, s := range tc.steps {
					if s == beat {
						script = append(script, scriptStep{beat: true})
					} else {
						script = append(script, scriptStep{write: []byte(s.(string))})
					}
				}
				res := runScript(t, hs[frame], script)
				res.check(t)
				want := tc.beats
				if frame == frameBlank && tc.blank != nil {
					want = *tc.blank
				}
				if res.beats != want {
					t.Errorf("%d heartbeats went out, want %d; client got %q", res.beats, want, res.client)
				}
			})
		}
	}
}

// beat marks a beat attempt in a named case's steps.
var beat = struct{}{}

// For arbitrary upstream bytes, arbitrary splits into writes and arbitrary
// beat times, with either heartbeat frame, the events (data, type, id) and
// retry fields a WHATWG client parses from what it received equal those
// parsed from the upstream's bytes alone (issue 3).
func TestHeartbeatInjectionProperty(t *testing.T) {
	hs := heartbeatHandlers(t)
	rng := sseref.NewRand(1)
	iterations := 3000
	if testing.Short() {
		iterations = 300
	}
	var beats, midStream, dropped int
	for i := range iterations {
		stream := randomStream(rng)
		var script []scriptStep
		for _, w := range sseref.RandomSplit(rng, stream) {
			if rng.IntN(3) == 0 {
				script = append(script, scriptStep{beat: true})
			}
			script = append(script, scriptStep{write: w})
		}
		script = append(script, scriptStep{beat: true})
		frame := []string{frameBlock, frameLine, frameBlank}[i%3]
		res := runScript(t, hs[frame], script)
		if !res.check(t) {
			t.Fatalf("case %d (%s frame): writes %q", i, frame, script)
		}
		beats += res.beats
		midStream += res.midStream
		if res.bomDropped {
			dropped++
		}
	}
	// the property holds vacuously if nothing is ever injected
	if beats < iterations/2 || midStream < iterations/10 || dropped == 0 {
		t.Errorf("too few injections to test anything: %d beats, %d after upstream bytes, %d BOMs dropped in %d streams",
			beats, midStream, dropped, iterations)
	}
}

// FuzzHeartbeatInjection is the property of TestHeartbeatInjectionProperty
// under the fuzzer: upstream is the upstream's bytes; each byte of cuts is
// one write of the next (c&0x7f)%17 bytes, preceded by a beat attempt when
// c&0x80 is set; the rest is one last write, then a last beat attempt.
// line picks the "line" frame.
func FuzzHeartbeatInjection(f *testing.F) {
	hs := heartbeatHandlers(f)
	f.Fuzz(func(t *testing.T, upstream, cuts []byte, line bool) {
		var script []scriptStep
		rest := upstream
		for _, c := range cuts {
			if c&0x80 != 0 {
				script = append(script, scriptStep{beat: true})
			}
			n := min(int(c&0x7f)%17, len(rest))
			if n > 0 {
				script = append(script, scriptStep{write: rest[:n]})
				rest = rest[n:]
			}
		}
		if len(rest) > 0 {
			script = append(script, scriptStep{write: rest})
		}
		script = append(script, scriptStep{beat: true})
		frame := frameBlock
		if line {
			frame = frameLine
		}
		runScript(t, hs[frame], script).check(t)
	})
}

// scriptStep is an upstream write, or a beat attempt.
type scriptStep struct {
	write []byte
	beat  bool
}

func (s scriptStep) String() string {
	if s.beat {
		return "<beat>"
	}
	return fmt.Sprintf("%q", s.write)
}

// scriptResult is what a script produced.
type scriptResult struct {
	upstream, client []byte
	beatBytes        int  // bytes the heartbeats added
	beats            int  // heartbeats written
	midStream        int  // of which after the upstream's first byte
	bomDropped       bool // the upstream's leading BOM was dropped
}

// check asserts the property: the client's events and retries are the
// upstream's, and the client got exactly the upstream's bytes plus the
// beats (less a dropped BOM). It reports whether it held.
func (r scriptResult) check(t testing.TB) bool {
	t.Helper()
	ok := true
	want, got := parseEventStream(r.upstream), parseEventStream(r.client)
	if !slices.Equal(got.Events, want.Events) {
		t.Errorf("client events differ from the upstream's\nupstream %q\nclient   %q\nwant %v\ngot  %v",
			r.upstream, r.client, want.Events, got.Events)
		ok = false
	}
	if !slices.Equal(got.Retries, want.Retries) {
		t.Errorf("client retries %q, want %q\nupstream %q\nclient   %q", got.Retries, want.Retries, r.upstream, r.client)
		ok = false
	}
	wantLen := len(r.upstream) + r.beatBytes
	if r.bomDropped {
		wantLen -= len(utf8BOM)
	}
	if len(r.client) != wantLen {
		t.Errorf("client got %d bytes, want %d (upstream %d + %d beats of %d bytes, BOM dropped: %v)\nupstream %q\nclient   %q",
			len(r.client), wantLen, len(r.upstream), r.beats, r.beatBytes, r.bomDropped, r.upstream, r.client)
		ok = false
	}
	return ok
}

// heartbeatHandlers provisions one handler per heartbeat frame, with an
// interval long enough that only the test fires the timer.
func heartbeatHandlers(t testing.TB) map[string]*Handler {
	t.Helper()
	hs := make(map[string]*Handler)
	for _, frame := range []string{frameBlock, frameLine, frameBlank} {
		d := caddy.Duration(time.Hour)
		hs[frame] = provisionHandler(t, &Handler{Heartbeat: &d, HeartbeatFrame: frame})
	}
	return hs
}

// provisionHandler provisions and validates h outside a Caddy config.
func provisionHandler(t testing.TB, h *Handler) *Handler {
	t.Helper()
	provisionTestHandler(t, h)
	useLogger(h, zap.NewNop()) // outside a config, Caddy hands out a debug logger
	return h
}

// runScript serves one event stream through h's real ServeHTTP and
// streamWriter: the inner handler writes the script's writes, and between
// them fires the stream's timer as if the heartbeat interval had passed
// with nothing sent.
func runScript(t testing.TB, h *Handler, script []scriptStep) scriptResult {
	t.Helper()
	var res scriptResult
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/events", nil)
	var sw *streamWriter
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		var ok bool
		if sw, ok = w.(*streamWriter); !ok {
			return fmt.Errorf("inner handler got a %T, want *streamWriter", w)
		}
		if !sw.st.Beating() {
			return fmt.Errorf("heartbeats are off for this stream")
		}
		for _, s := range script {
			if s.beat {
				before, bytesBefore := sw.st.Heartbeats(), sw.st.Bytes()
				fireIdleTimer(sw)
				if sw.st.Heartbeats() > before && len(res.upstream) > 0 {
					res.midStream++
				}
				res.beatBytes += int(sw.st.Bytes() - bytesBefore)
				continue
			}
			n, err := w.Write(s.write)
			if err != nil || n != len(s.write) {
				return fmt.Errorf("Write(%q) = %d, %v", s.write, n, err)
			}
			res.upstream = append(res.upstream, s.write...)
		}
		return nil
	})
	if err := h.ServeHTTP(rec, req, next); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	res.client = rec.Body.Bytes()
	res.beats = int(sw.st.Heartbeats())
	res.bomDropped = sw.st.OwnBytesFirst() && bytes.HasPrefix(res.upstream, utf8BOM)
	return res
}

// fireIdleTimer runs the stream's timer callback as it runs when the
// heartbeat interval has passed with nothing sent.
func fireIdleTimer(sw *streamWriter) {
	sw.st.Due()
}

// useLogger makes h log to l from now on, as if it had been provisioned
// with l: each of its concerns keeps the logger it was provisioned with.
func useLogger(h *Handler, l *zap.Logger) {
	h.logger, h.streams.logger, h.life.logger = l, l, l
}

// Streams as the Gemini API sends them (CRLF between events) and as the
// OpenAI-style APIs do (LF), split into arbitrary writes with heartbeats
// at arbitrary times: with the blank frame, google.golang.org/genai's
// splitter finds exactly the upstream's pieces, every one a "data:"
// event. The block frame, the control, gives it a comment piece, on which
// the SDK fails.
func TestBlankFrameKeepsGenaiPieces(t *testing.T) {
	hs := heartbeatHandlers(t)
	rng := sseref.NewRand(7)
	controlBroke := 0
	for i := range 400 {
		sep := []string{"\r\n\r\n", "\n\n"}[i%2]
		var up []byte
		for j := range 1 + rng.IntN(6) {
			up = fmt.Appendf(up, `data: {"candidates":[{"content":{"parts":[{"text":"t%d"}]}}]}`+sep, j)
		}
		var script []scriptStep
		for _, w := range sseref.RandomSplit(rng, up) {
			if rng.IntN(2) == 0 {
				script = append(script, scriptStep{beat: true})
			}
			script = append(script, scriptStep{write: w})
		}
		script = append(script, scriptStep{beat: true})
		want := sseref.GenaiPieces(up)
		res := runScript(t, hs[frameBlank], script)
		res.check(t)
		if got := sseref.GenaiPieces(res.client); !slices.Equal(got, want) {
			t.Fatalf("blank frame: genai pieces %q, want the upstream's %q\nclient %q", got, want, res.client)
		}
		if res.beats == 0 {
			continue
		}
		if got := sseref.GenaiPieces(runScript(t, hs[frameBlock], script).client); !slices.Equal(got, want) {
			controlBroke++
		}
	}
	if controlBroke == 0 {
		t.Error("the block frame never broke genai's pieces: the control shows nothing")
	}
}
