package caddysse

// The per-write cost of the stream wrapper (issue 3): a write of a ~100-byte
// event, flushed, through a bare caddyhttp.ResponseWriterWrapper, through
// sse's streamWriter with heartbeats off, and with heartbeats on. A stream
// write must not allocate.

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// benchEvent is a typical LLM-token-sized event of about 100 bytes.
var benchEvent = []byte("id: 1234\nevent: token\ndata: {\"choices\":[{\"delta\":{\"content\":\"hello there\"},\"index\":0}]}\n\n")

func BenchmarkWrite(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		dw := &discardFlusher{header: http.Header{}}
		rww := &caddyhttp.ResponseWriterWrapper{ResponseWriter: dw}
		rww.Header().Set("Content-Type", "text/event-stream")
		rww.WriteHeader(http.StatusOK)
		b.SetBytes(int64(len(benchEvent)))
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if _, err := rww.Write(benchEvent); err != nil {
				b.Fatal(err)
			}
			rww.Unwrap().(http.Flusher).Flush() // sse flushes every write too
		}
	})
	for _, bc := range []struct {
		name      string
		heartbeat time.Duration
	}{
		{"sse", 0},
		{"sse_heartbeat", time.Hour}, // on, but never due during the run
	} {
		b.Run(bc.name, func(b *testing.B) {
			d := caddy.Duration(bc.heartbeat)
			h := provisionHandler(b, &Handler{Heartbeat: &d})
			dw := &discardFlusher{header: http.Header{}}
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusOK)
				if sw := w.(*streamWriter); sw.mode != modeStream || sw.st.Beating() != (bc.heartbeat > 0) {
					b.Fatalf("mode %d, beats %v: not the stream being measured", sw.mode, sw.st.Beating())
				}
				w.Write(benchEvent) // the first write records first-byte metrics
				b.SetBytes(int64(len(benchEvent)))
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if _, err := w.Write(benchEvent); err != nil {
						return err
					}
				}
				b.StopTimer()
				return nil
			})
			req := httptest.NewRequest(http.MethodGet, "/events", nil)
			if err := h.ServeHTTP(dw, req, next); err != nil {
				b.Fatal(err)
			}
			if dw.flushes < b.N {
				b.Fatalf("%d flushes for %d writes", dw.flushes, b.N)
			}
		})
	}
}

// BenchmarkBeat is one heartbeat as the scheduler gives it: the stream's
// turn, which writes and flushes the comment, and the stream put back in
// the wheel for its next one.
func BenchmarkBeat(b *testing.B) {
	d := caddy.Duration(time.Hour)
	h := provisionHandler(b, &Handler{Heartbeat: &d})
	dw := &discardFlusher{header: http.Header{}}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.Write(benchEvent)
		st := &w.(*streamWriter).st
		before := st.Heartbeats()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			st.Due()
		}
		b.StopTimer()
		if got := st.Heartbeats() - before; got != int64(b.N) {
			b.Fatalf("%d heartbeats in %d turns", got, b.N)
		}
		return nil
	})
	if err := h.ServeHTTP(dw, httptest.NewRequest(http.MethodGet, "/events", nil), next); err != nil {
		b.Fatal(err)
	}
}

// The stream writer's Write allocates nothing, with heartbeats on or off,
// and with debug logging on, which makes it count events and remember the
// last event id (the benchmark's 0 allocs/op, checked in every test run).
func TestWriteDoesNotAllocate(t *testing.T) {
	for _, tc := range []struct {
		heartbeat time.Duration
		debug     bool
	}{{0, false}, {time.Hour, false}, {time.Hour, true}} {
		heartbeat := tc.heartbeat
		d := caddy.Duration(heartbeat)
		h := provisionHandler(t, &Handler{Heartbeat: &d})
		if tc.debug {
			useLogger(h, zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
				zapcore.AddSync(io.Discard), zapcore.DebugLevel)))
		}
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			w.Write(benchEvent)
			if sw := w.(*streamWriter); (sw.st.Scanner() != nil) != tc.debug {
				t.Fatalf("debug %v: event scanner %v", tc.debug, sw.st.Scanner())
			}
			if allocs := testing.AllocsPerRun(1000, func() { w.Write(benchEvent) }); allocs != 0 {
				t.Errorf("heartbeat %v, debug %v: %v allocations per Write, want 0", heartbeat, tc.debug, allocs)
			}
			return nil
		})
		if err := h.ServeHTTP(&discardFlusher{header: http.Header{}}, httptest.NewRequest(http.MethodGet, "/", nil), next); err != nil {
			t.Fatal(err)
		}
	}
}

// discardFlusher is a ResponseWriter that drops the body and supports
// Flush, like the writer a real server hands out.
type discardFlusher struct {
	header  http.Header
	flushes int
}

func (d *discardFlusher) Header() http.Header         { return d.header }
func (d *discardFlusher) WriteHeader(int)             {}
func (d *discardFlusher) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardFlusher) Flush()                      { d.flushes++ }

// A heartbeat allocates nothing: the stream's turn that writes it, and the
// scheduler putting the stream back in its wheel for the next one.
func TestBeatDoesNotAllocate(t *testing.T) {
	d := caddy.Duration(time.Hour)
	h := provisionHandler(t, &Handler{Heartbeat: &d})
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.Write(benchEvent)
		st := &w.(*streamWriter).st
		before := st.Heartbeats()
		allocs := testing.AllocsPerRun(1000, func() {
			st.Due()
		})
		if st.Heartbeats()-before < 1000 {
			t.Fatalf("%d heartbeats in 1000 turns: the turn did not beat", st.Heartbeats()-before)
		}
		if allocs != 0 {
			t.Errorf("%v allocations per heartbeat, want 0", allocs)
		}
		return nil
	})
	if err := h.ServeHTTP(&discardFlusher{header: http.Header{}}, httptest.NewRequest(http.MethodGet, "/", nil), next); err != nil {
		t.Fatal(err)
	}
}
