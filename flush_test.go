package caddysse

// Unit tests of the response-writer wrapper (flush.go): which responses are
// streams, how a stream's header is repaired, and that every stream write,
// and nothing else, is flushed to the client (issue 2).

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// A response is a stream only when it is a 2xx with a body (not 204 or 205)
// and its Content-Type is text/event-stream or one of the configured extra
// types. 1xx, 3xx (304 included), errors and other types are untouched.
func TestStreamKind(t *testing.T) {
	typed := provisionTestHandler(t, &Handler{Types: []string{"application/x-ndjson", "Application/X-Custom-Stream"}})
	plain := provisionTestHandler(t, &Handler{})
	for _, tc := range []struct {
		name   string
		h      *Handler
		status int
		ct     []string // nil: no Content-Type at all
		want   kind
	}{
		{"sse 200", plain, 200, []string{"text/event-stream"}, eventStream},
		{"sse odd case and parameter", plain, 200, []string{"Text/Event-Stream; charset=UTF-8"}, eventStream},
		{"sse with whitespace", plain, 200, []string{" text/event-stream "}, eventStream},
		{"sse 201", plain, 201, []string{"text/event-stream"}, eventStream},
		// a 2xx with a body; a range of a stream is still streamed
		{"sse 206", plain, 206, []string{"text/event-stream"}, eventStream},
		{"sse 204 has no body", plain, 204, []string{"text/event-stream"}, notStream},
		{"sse 205 has no body", plain, 205, []string{"text/event-stream"}, notStream},
		{"sse 304", plain, 304, []string{"text/event-stream"}, notStream},
		{"sse 100", plain, 100, []string{"text/event-stream"}, notStream},
		{"sse 101", plain, 101, []string{"text/event-stream"}, notStream},
		{"sse 103", plain, 103, []string{"text/event-stream"}, notStream},
		{"sse 302", plain, 302, []string{"text/event-stream"}, notStream},
		{"sse 404", plain, 404, []string{"text/event-stream"}, notStream},
		{"sse 502", plain, 502, []string{"text/event-stream"}, notStream},
		{"longer subtype", plain, 200, []string{"text/event-streamfoo"}, notStream},
		{"no content type", plain, 200, nil, notStream},
		{"empty content type", plain, 200, []string{""}, notStream},
		{"text/plain", plain, 200, []string{"text/plain"}, notStream},
		{"ndjson without types", plain, 200, []string{"application/x-ndjson"}, notStream},
		{"ndjson with types", typed, 200, []string{"application/x-ndjson"}, otherStream},
		{"ndjson with types, odd case and parameter", typed, 200, []string{"APPLICATION/X-NDJSON; charset=utf-8"}, otherStream},
		{"configured type written in upper case", typed, 200, []string{"application/x-custom-stream"}, otherStream},
		{"ndjson longer subtype", typed, 200, []string{"application/x-ndjsonfoo"}, notStream},
		{"ndjson 204", typed, 204, []string{"application/x-ndjson"}, notStream},
		{"ndjson 304", typed, 304, []string{"application/x-ndjson"}, notStream},
		{"sse still a stream with types", typed, 200, []string{"text/event-stream"}, eventStream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			if tc.ct != nil {
				hdr["Content-Type"] = tc.ct
			}
			if got := streamKind(tc.h.streams.types, tc.status, hdr); got != tc.want {
				t.Errorf("streamKind(%d, %q) = %v, want %v", tc.status, tc.ct, got, tc.want)
			}
		})
	}
}

// A HEAD of an event stream gets the header a GET would get (RFC 9110,
// 9.3.2), repaired the same way, but it has no body: no heartbeat is ever
// armed for it, while the same GET gets one.
func TestHeadOfEventStream(t *testing.T) {
	beat := caddy.Duration(time.Hour)
	h := provisionTestHandler(t, &Handler{Heartbeat: &beat})
	for _, tc := range []struct {
		method    string
		wantBeats bool
	}{
		{http.MethodHead, false},
		{http.MethodGet, true},
	} {
		t.Run(tc.method, func(t *testing.T) {
			var beats bool
			rec := serveFlushHandler(t, h, httptest.NewRequest(tc.method, "http://example.com/events", nil),
				func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "text/event-stream")
					w.Header().Set("Content-Length", "0")
					w.WriteHeader(http.StatusOK)
					beats = w.(*streamWriter).st.Beating()
				})
			if beats != tc.wantBeats {
				t.Errorf("%s: heartbeats on = %v, want %v", tc.method, beats, tc.wantBeats)
			}
			hdr := rec.firstHeader(t)
			if got := hdr.Get("Cache-Control"); got != "no-cache, no-transform" {
				t.Errorf("%s: Cache-Control = %q, want %q", tc.method, got, "no-cache, no-transform")
			}
			if _, ok := hdr["Content-Length"]; ok {
				t.Errorf("%s: Content-Length = %q, want none", tc.method, hdr["Content-Length"])
			}
		})
	}
}

// Inside Caddy the writer handed to sse is never an http.Flusher: Caddy's
// own writers expose only FlushError and Unwrap. A stream's header and
// every event must still reach the base writer at once, while the inner
// handler is still running (model: net/http/httputil
// TestReverseProxyResponseControllerFlushInterval).
func TestFlushReachesBaseWriterThroughUnwrap(t *testing.T) {
	h := provisionTestHandler(t, &Handler{Heartbeat: heartbeatsOff()})
	rec := newOpRecorder()
	w := unwrapOnlyWriter{unwrapOnlyWriter{rec}} // two layers, like idle-timeout + encode
	if _, ok := http.ResponseWriter(w).(http.Flusher); ok {
		t.Fatal("test writer must not be an http.Flusher")
	}
	events := []string{"data: one\n\n", "data: two\n\n", "id: 3\ndata: three\n\n"}
	req := httptest.NewRequest(http.MethodGet, "http://example.com/events", nil)
	err := h.ServeHTTP(w, req, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		if n := rec.flushes(); n != 1 {
			t.Errorf("after WriteHeader: %d flushes reached the base writer, want 1", n)
		}
		for i, ev := range events {
			if _, err := io.WriteString(w, ev); err != nil {
				return err
			}
			if n := rec.flushes(); n != i+2 {
				t.Errorf("after event %d: %d flushes reached the base writer, want %d", i+1, n, i+2)
			}
			if got, want := rec.flushedBody(), strings.Join(events[:i+1], ""); got != want {
				t.Errorf("after event %d: base writer has flushed %q, want %q", i+1, got, want)
			}
		}
		return nil
	}))
	if err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	if !rec.Flushed {
		t.Error("ResponseRecorder.Flushed = false, want true")
	}
}

// Responses that are not streams pass through byte for byte, with the very
// same header (hop-by-hop fields included: stripping them is for streams
// only), the same writes and flushes, and no flush of sse's own.
func TestNonStreamPassesUntouched(t *testing.T) {
	h := provisionTestHandler(t, &Handler{Heartbeat: heartbeatsOff()})
	big := strings.Repeat("0123456789abcdef", 8<<10) // 128 KiB, several io.Copy rounds
	for _, tc := range []struct {
		name    string
		method  string
		flushes bool // the inner handler flushes itself
		serve   func(w http.ResponseWriter)
	}{
		{"text/plain with length and hop fields", http.MethodGet, false, func(w http.ResponseWriter) {
			hdr := w.Header()
			hdr.Set("Content-Type", "text/plain; charset=utf-8")
			hdr.Set("Content-Length", "11")
			hdr.Set("Cache-Control", "public, max-age=60")
			hdr.Set("Connection", "X-Foo")
			hdr.Set("X-Foo", "bar")
			hdr.Set("Keep-Alive", "timeout=5")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "hello ")
			io.WriteString(w, "world")
		}},
		{"implicit 200", http.MethodGet, false, func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<p>hi</p>")
		}},
		{"large body through ReadFrom", http.MethodGet, false, func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			// hide strings.Reader's WriteTo, so io.Copy uses ReadFrom
			io.Copy(w, struct{ io.Reader }{strings.NewReader(big)})
		}},
		{"event stream 404", http.MethodGet, false, func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Content-Length", "9")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, "not found")
		}},
		{"event stream 204", http.MethodGet, false, func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusNoContent)
		}},
		{"event stream 304", http.MethodGet, false, func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Etag", `"x"`)
			w.WriteHeader(http.StatusNotModified)
		}},
		{"longer subtype", http.MethodGet, false, func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/event-streamfoo")
			io.WriteString(w, "data: x\n\n")
		}},
		{"ndjson without types", http.MethodPost, false, func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/x-ndjson")
			io.WriteString(w, "{\"a\":1}\n")
			io.WriteString(w, "{\"a\":2}\n")
		}},
		{"head", http.MethodHead, false, func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(http.StatusOK)
		}},
		{"inner handler's own flushes pass through", http.MethodGet, true, func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "first")
			http.NewResponseController(w).Flush()
			io.WriteString(w, "second")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := newOpRecorder()
			tc.serve(want)
			got := serveFlushHandler(t, h, httptest.NewRequest(tc.method, "http://example.com/", nil),
				func(w http.ResponseWriter, r *http.Request) { tc.serve(w) })

			if got.Code != want.Code {
				t.Errorf("status = %d, want %d", got.Code, want.Code)
			}
			if g, w := got.Result().Header, want.Result().Header; !reflect.DeepEqual(g, w) {
				t.Errorf("header = %v, want %v", g, w)
			}
			if !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
				t.Errorf("body differs: %d bytes, want %d", got.Body.Len(), want.Body.Len())
			}
			if got.Flushed != tc.flushes {
				t.Errorf("Flushed = %v, want %v", got.Flushed, tc.flushes)
			}
			if g, w := got.opNames(), want.opNames(); !reflect.DeepEqual(g, w) {
				t.Errorf("operations on the base writer = %v, want %v", g, w)
			}
		})
	}
}

// A stream's header reaches the client before the first event, repaired
// (Cache-Control merged, X-Accel-Buffering: no, no Content-Length, no
// hop-by-hop fields), and every event is flushed as it is written.
func TestStreamHeaderFlushedBeforeFirstEvent(t *testing.T) {
	h := provisionTestHandler(t, &Handler{Heartbeat: heartbeatsOff(), Types: []string{"application/x-ndjson"}})
	for _, tc := range []struct {
		name, ct string
		body     []string
	}{
		{"event stream", "text/event-stream; charset=utf-8", []string{"data: 1\n\n", "data: 2\n\n"}},
		{"extra type", "application/x-ndjson", []string{"{\"n\":1}\n", "{\"n\":2}\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var atHeader []string
			rec := newOpRecorder()
			serveFlushHandlerTo(t, h, rec, httptest.NewRequest(http.MethodPost, "http://example.com/", nil),
				func(w http.ResponseWriter, r *http.Request) {
					hdr := w.Header()
					hdr.Set("Content-Type", tc.ct)
					hdr.Set("Content-Length", "1000")
					hdr.Set("Cache-Control", "private")
					hdr.Set("Keep-Alive", "timeout=5")
					hdr.Set("Connection", "X-Hop")
					hdr.Set("X-Hop", "1")
					w.WriteHeader(http.StatusOK)
					atHeader = rec.opNames()
					for _, b := range tc.body {
						io.WriteString(w, b)
					}
				})
			if want := []string{"header 200", "flush"}; !reflect.DeepEqual(atHeader, want) {
				t.Errorf("on return from WriteHeader the base writer saw %v, want %v", atHeader, want)
			}
			want := []string{"header 200", "flush"}
			for _, b := range tc.body {
				want = append(want, "write "+b, "flush")
			}
			if got := rec.opNames(); !reflect.DeepEqual(got, want) {
				t.Errorf("operations = %q, want %q", got, want)
			}
			hdr := rec.firstHeader(t)
			wantHdr := http.Header{
				"Content-Type":      {tc.ct},
				"Cache-Control":     {"private, no-cache, no-transform"},
				"X-Accel-Buffering": {"no"},
				"Incremental":       {"?1"},
			}
			if !reflect.DeepEqual(hdr, wantHdr) {
				t.Errorf("header sent = %v, want %v", hdr, wantHdr)
			}
		})
	}
}

// 1xx responses (103 Early Hints, 101 Switching Protocols) pass through
// untouched, hop-by-hop fields included, with no flush of sse's own; a
// final event-stream response after a 103 is still treated as a stream.
func TestInformationalPassesUntouched(t *testing.T) {
	h := provisionTestHandler(t, &Handler{Heartbeat: heartbeatsOff()})
	t.Run("103 then stream", func(t *testing.T) {
		hints := http.Header{
			"Link":       {"</app.js>; rel=preload"},
			"Connection": {"X-Hint"},
			"X-Hint":     {"1"},
			"Keep-Alive": {"timeout=5"},
		}
		rec := serveFlushHandler(t, h, httptest.NewRequest(http.MethodGet, "http://example.com/", nil),
			func(w http.ResponseWriter, r *http.Request) {
				for k, v := range hints {
					w.Header()[k] = v
				}
				w.WriteHeader(http.StatusEarlyHints)
				for k := range hints {
					w.Header().Del(k)
				}
				w.Header().Set("Content-Type", "text/event-stream")
				w.Header().Set("Keep-Alive", "timeout=5")
				w.WriteHeader(http.StatusOK)
				io.WriteString(w, "data: x\n\n")
			})
		ops := rec.snapshot()
		if len(ops) == 0 || ops[0].name() != "header 103" || !reflect.DeepEqual(ops[0].header, hints) {
			t.Fatalf("first operation = %+v, want the 103 with header %v", ops, hints)
		}
		want := []string{"header 103", "header 200", "flush", "write data: x\n\n", "flush"}
		if got := rec.opNames(); !reflect.DeepEqual(got, want) {
			t.Errorf("operations = %q, want %q", got, want)
		}
		if final := ops[1].header; final.Get("Keep-Alive") != "" || final.Get("X-Accel-Buffering") != "no" {
			t.Errorf("final header = %v, want it repaired", final)
		}
	})
	t.Run("101", func(t *testing.T) {
		upgrade := http.Header{
			"Connection": {"Upgrade"},
			"Upgrade":    {"websocket"},
			"Keep-Alive": {"timeout=5"},
		}
		rec := serveFlushHandler(t, h, httptest.NewRequest(http.MethodGet, "http://example.com/", nil),
			func(w http.ResponseWriter, r *http.Request) {
				for k, v := range upgrade {
					w.Header()[k] = v
				}
				w.WriteHeader(http.StatusSwitchingProtocols)
			})
		ops := rec.snapshot()
		if len(ops) != 1 || ops[0].name() != "header 101" || !reflect.DeepEqual(ops[0].header, upgrade) {
			t.Errorf("operations = %+v, want only the 101 with header %v", ops, upgrade)
		}
	})
}

// A flush before WriteHeader commits the header with status 200, as
// net/http does. With an event-stream Content-Type that response is a
// stream and is repaired; otherwise it passes untouched.
func TestFlushBeforeWriteHeader(t *testing.T) {
	h := provisionTestHandler(t, &Handler{Heartbeat: heartbeatsOff()})
	for _, tc := range []struct {
		name, ct string
		want     http.Header
	}{
		{"event stream", "text/event-stream", http.Header{
			"Content-Type":      {"text/event-stream"},
			"Cache-Control":     {"no-cache, no-transform"},
			"X-Accel-Buffering": {"no"},
			"Incremental":       {"?1"},
		}},
		{"not a stream", "text/plain", http.Header{
			"Content-Type":   {"text/plain"},
			"Content-Length": {"5"},
			"Keep-Alive":     {"timeout=5"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := serveFlushHandler(t, h, httptest.NewRequest(http.MethodGet, "http://example.com/", nil),
				func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", tc.ct)
					w.Header().Set("Content-Length", "5")
					w.Header().Set("Keep-Alive", "timeout=5")
					if err := http.NewResponseController(w).Flush(); err != nil {
						t.Errorf("Flush: %v", err)
					}
				})
			if got, want := rec.opNames(), []string{"header 200", "flush"}; !reflect.DeepEqual(got, want) {
				t.Errorf("operations = %q, want %q", got, want)
			}
			if got := rec.firstHeader(t); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("header = %v, want %v", got, tc.want)
			}
		})
	}
}

// io.Copy into a stream (ReadFrom) goes through the stream's Write: every
// chunk read is written and flushed before the next is read.
func TestStreamReadFromFlushesEachChunk(t *testing.T) {
	h := provisionTestHandler(t, &Handler{Heartbeat: heartbeatsOff()})
	chunks := []string{"data: 1\n\n", "data: 2\n\n", "data: 3\n\n"}
	var n int64
	rec := serveFlushHandler(t, h, httptest.NewRequest(http.MethodGet, "http://example.com/", nil),
		func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			rf, ok := w.(io.ReaderFrom)
			if !ok {
				t.Fatal("the writer handed to the inner handler is not an io.ReaderFrom")
			}
			var err error
			n, err = rf.ReadFrom(&oneChunkPerRead{chunks: slices.Clone(chunks)})
			if err != nil {
				t.Errorf("ReadFrom: %v", err)
			}
		})
	if want := int64(len(strings.Join(chunks, ""))); n != want {
		t.Errorf("ReadFrom = %d bytes, want %d", n, want)
	}
	want := []string{"header 200", "flush"}
	for _, c := range chunks {
		want = append(want, "write "+c, "flush")
	}
	if got := rec.opNames(); !reflect.DeepEqual(got, want) {
		t.Errorf("operations = %q, want %q", got, want)
	}
}

// oneChunkPerRead returns one chunk per Read.
type oneChunkPerRead struct {
	chunks []string
}

func (r *oneChunkPerRead) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if r.chunks[0] == "" {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

// heartbeatsOff is a Heartbeat of 0: off, so no timer writes during a test.
func heartbeatsOff() *caddy.Duration {
	d := caddy.Duration(0)
	return &d
}

// serveFlushHandler runs req through h with inner as the next handler and
// returns what reached the base writer.
func serveFlushHandler(t *testing.T, h *Handler, req *http.Request, inner http.HandlerFunc) *opRecorder {
	t.Helper()
	rec := newOpRecorder()
	serveFlushHandlerTo(t, h, rec, req, inner)
	return rec
}

// serveFlushHandlerTo is serveFlushHandler with the base writer given.
func serveFlushHandlerTo(t *testing.T, h *Handler, w http.ResponseWriter, req *http.Request, inner http.HandlerFunc) {
	t.Helper()
	err := h.ServeHTTP(w, req, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		inner(w, r)
		return nil
	}))
	if err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
}

// unwrapOnlyWriter exposes nothing of the writer it wraps but Unwrap, like
// Caddy's own writers (no http.Flusher).
type unwrapOnlyWriter struct{ http.ResponseWriter }

func (w unwrapOnlyWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// recordedOp is one call that reached the base writer.
type recordedOp struct {
	kind   string      // header, write, flush
	status int         // for header
	header http.Header // for header: the fields at that moment
	data   string      // for write
}

func (o recordedOp) name() string {
	switch o.kind {
	case "header":
		return "header " + strconv.Itoa(o.status)
	case "write":
		return "write " + o.data
	}
	return o.kind
}

// opRecorder is an httptest.ResponseRecorder that also logs, in order,
// every header written (with its fields at that moment), write and flush.
// 1xx headers are logged but not passed on, since the recorder keeps only
// one status.
type opRecorder struct {
	*httptest.ResponseRecorder
	mu  sync.Mutex
	ops []recordedOp
}

func newOpRecorder() *opRecorder { return &opRecorder{ResponseRecorder: httptest.NewRecorder()} }

func (r *opRecorder) log(o recordedOp) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, o)
}

func (r *opRecorder) headerOnce() {
	r.mu.Lock()
	wrote := false
	for _, o := range r.ops {
		if o.kind == "header" && o.status >= 200 {
			wrote = true
		}
	}
	r.mu.Unlock()
	if !wrote {
		r.log(recordedOp{kind: "header", status: http.StatusOK, header: r.Header().Clone()})
	}
}

func (r *opRecorder) WriteHeader(status int) {
	if status < 200 {
		r.log(recordedOp{kind: "header", status: status, header: r.Header().Clone()})
		return
	}
	r.headerOnce()
	r.mu.Lock()
	r.ops[len(r.ops)-1].status = status
	r.mu.Unlock()
	r.ResponseRecorder.WriteHeader(status)
}

func (r *opRecorder) Write(p []byte) (int, error) {
	r.headerOnce()
	r.log(recordedOp{kind: "write", data: string(p)})
	return r.ResponseRecorder.Write(p)
}

// WriteString hides the recorder's own, so every write is logged.
func (r *opRecorder) WriteString(s string) (int, error) { return r.Write([]byte(s)) }

func (r *opRecorder) Flush() {
	r.headerOnce()
	r.log(recordedOp{kind: "flush"})
	r.ResponseRecorder.Flush()
}

func (r *opRecorder) snapshot() []recordedOp {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recordedOp(nil), r.ops...)
}

func (r *opRecorder) opNames() []string {
	var names []string
	for _, o := range r.snapshot() {
		names = append(names, o.name())
	}
	return names
}

func (r *opRecorder) flushes() int {
	n := 0
	for _, o := range r.snapshot() {
		if o.kind == "flush" {
			n++
		}
	}
	return n
}

// flushedBody is the body written before the last flush.
func (r *opRecorder) flushedBody() string {
	var b, flushed strings.Builder
	for _, o := range r.snapshot() {
		switch o.kind {
		case "write":
			b.WriteString(o.data)
		case "flush":
			flushed.Reset()
			flushed.WriteString(b.String())
		}
	}
	return flushed.String()
}

// firstHeader is the first final (non-1xx) header that reached the writer.
func (r *opRecorder) firstHeader(t *testing.T) http.Header {
	t.Helper()
	for _, o := range r.snapshot() {
		if o.kind == "header" && o.status >= 200 {
			return o.header
		}
	}
	t.Fatal("no header was written")
	return nil
}
