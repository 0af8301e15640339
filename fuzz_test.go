package caddysse

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/limit"
	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Fuzz targets. CI runs each for a short time:
//
//	go test -run=^$ -fuzz=^FuzzCaddyfile$ -fuzztime=20s .
//
// Their seeds (f.Add below and testdata/fuzz/<FuzzName>/) also run as
// plain tests in every `go test`.

// The sse Caddyfile parser never panics, whatever tokens follow the
// directive; every error it returns names the file and a line of the
// input; and a block it accepts is a config that loads (Validate agrees
// with the parser, through a JSON round trip as Caddy does it).
func FuzzCaddyfile(f *testing.F) {
	for _, s := range []string{
		"",
		"heartbeat 15s",
		"heartbeat off\nheartbeat_text ping\nheartbeat_frame line",
		"limit 10\nlimit 2 per {http.vars.client_ip}\nzone z",
		"types application/x-ndjson text/x-log",
		"retry 2s\nrefuse_status 429\nupstream_errors pass\nlog_key",
		"max_duration 1h\nidle_timeout 5m\ndrain_on_reload 30s",
		"heartbeat -1s",
		"heartbeat 1000000h",
		"heartbeat_text \"a\nb\"",
		"limit 0",
		"limit 1 per {foo}",
		"limit 1 per \"{http.request.host\"",
		"heartbeat 1s {\nx\n}",
		"heartbeat 1s\n}\n}\nlimit x",
		"{\n{\n}",
		"refuse_status 99999999999999999999",
		"retry 0",
		"types \"a/b; c=d\"",
		"heartbeat `1s`",
		"heartbeat <<EOF\n1s\nEOF",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		text := "sse {\n" + body + "\n}\n"
		tokens, err := caddyfile.Tokenize([]byte(text), "Caddyfile")
		if err != nil {
			return // not a Caddyfile: the lexer's concern, not the directive's
		}
		lastLine := strings.Count(text, "\n") + 1
		h := new(Handler)
		err = h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
		if err != nil {
			m := errLine.FindStringSubmatch(err.Error())
			if m == nil {
				t.Fatalf("error %q does not name the file and line", err)
			}
			if n, _ := strconv.Atoi(m[1]); n < 1 || n > lastLine {
				t.Fatalf("error %q names line %d, outside the input's lines 1-%d", err, n, lastLine)
			}
			return
		}
		cfg, err := json.Marshal(h)
		if err != nil {
			t.Fatalf("marshaling an accepted block: %v", err)
		}
		var loaded Handler
		if err := caddy.StrictUnmarshalJSON(cfg, &loaded); err != nil {
			t.Fatalf("the JSON of an accepted block does not decode: %v\n%s", err, cfg)
		}
		if err := loaded.Validate(); err != nil {
			t.Fatalf("the Caddyfile accepted %q, but its JSON %s does not validate: %v", body, cfg, err)
		}
	})
}

var errLine = regexp.MustCompile(`, at Caddyfile:(\d+)`)

// Detection of event streams agrees with the standard MIME parser: for
// every Content-Type value mime.ParseMediaType accepts, the response is an
// event stream exactly when the parsed type is text/event-stream, and an
// Accept value lists it exactly when one of its items does. No value makes
// detection panic.
func FuzzMediaType(f *testing.F) {
	for _, s := range []string{
		"text/event-stream",
		"TEXT/Event-Stream",
		"text/event-stream; charset=utf-8",
		" text/event-stream ;charset=\"utf-8\"",
		"text/event-stream;",
		"text/event-streams",
		"text/event-stream garbage",
		"text/event-stream,text/html",
		"text/html, text/event-stream;q=0.9",
		"text/plain",
		"application/x-ndjson",
		"text/event-\u017ftream",
		"text/event-stream\x00",
		"\ttext/event-stream\t",
		"",
		";",
		"*/*",
	} {
		f.Add(s)
	}
	h := &Handler{streams: streamState{types: []string{"application/x-ndjson"}}}
	f.Fuzz(func(t *testing.T, v string) {
		got := stream.IsEventStream(v)
		kind := streamKind(h.streams.types, http.StatusOK, http.Header{"Content-Type": {v}})
		if got != (kind == eventStream) {
			t.Fatalf("stream.IsEventStream(%q) = %v, but streamKind says %v", v, got, kind)
		}
		if mt, _, err := mime.ParseMediaType(v); err == nil {
			if want := mt == "text/event-stream"; got != want {
				t.Fatalf("stream.IsEventStream(%q) = %v, want %v (mime.ParseMediaType: %q)", v, got, want, mt)
			}
			if want := mt == "application/x-ndjson"; (kind == otherStream) != want {
				t.Fatalf("streamKind(%q) = %v, want extra type %v (mime.ParseMediaType: %q)", v, kind, want, mt)
			}
		}

		// as an Accept header of a GET: listed iff an item parses as
		// text/event-stream (items the MIME parser rejects are skipped)
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("Accept", v)
		listed := isEventSourceRequest(req)
		for item := range strings.SplitSeq(v, ",") {
			if mt, _, err := mime.ParseMediaType(item); err == nil && mt == "text/event-stream" && !listed {
				t.Fatalf("Accept %q lists text/event-stream, but the request is not EventSource-style", v)
			}
		}
		if listed && !strings.Contains(strings.ToLower(v), "event-") && !strings.ContainsAny(v, "\u017f\u212a") {
			t.Fatalf("Accept %q does not list text/event-stream, but the request is EventSource-style", v)
		}
	})
}

// Whatever an inner handler does with the writer (headers, statuses, 1xx,
// writes, flushes, io.Copy, aborting), with heartbeats firing every
// millisecond and limits that refuse streams: nothing panics but the
// handler's own abort, and once ServeHTTP has returned, the stream's timer
// is stopped, nothing more is written, the limit counters and the open
// streams gauge are back where they were, and the handler tracks no
// stream.
func FuzzStreamWriter(f *testing.F) {
	for _, s := range [][]byte{
		{0, 0, 0, 1, 2, 2, 'd', ':', 5, 2, 2, '\n', '\n', 5, 3},
		{1, 0, 0, 1, 2, 2, 'h', 'i', 4, 3, 'a', '\n', '\n', 5, 5, 7},
		{2, 0, 0, 1, 6, 1, 2, 1, 'x'},
		{3, 0, 1, 1, 5, 1, 2, 3, 0xEF, 0xBB, 0xBF, 5},
		{4, 1, 0, 1, 2, 2, 3, 'a', '\r', '\r'},
		{5, 0, 2, 1, 3, 3},
		{6, 6, 2, 0, 0, 1, 0, 2, 1, 'x', 5, 5},
		{7, 0, 0, 1, 5, 5, 5, 2, 2, 'a', '\n', 7},
		{8, 0, 6, 1, 0, 1, 7},
		{9, 0, 0, 1, 2, 5, 'd', 'a', 't', 'a', ':', 5, 5, 5, 2, 2, '\n', '\n'},
	} {
		f.Add(s)
	}
	// streams of earlier tests in this process may still be finishing
	waitFor(f, 10*time.Second, "caddy_sse_streams_open at 0 before fuzzing", func() bool {
		return sumSeries(metrics.open) == 0
	})
	handlers := [2]*Handler{
		fuzzHandler(f, `{"heartbeat": "1ms", "limits": [{"max": 1}]}`),
		fuzzHandler(f, `{"heartbeat": "1ms", "heartbeat_frame": "line", "idle_timeout": "3ms",
			"types": ["application/x-ndjson"], "limits": [{"max": 2, "per": "{http.request.host}"}, {"max": 1, "per": "{http.request.header.X-Key}"}]}`),
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 3 {
			return
		}
		flags := data[0]
		h := handlers[flags&1]
		openBefore := sumSeries(metrics.open)

		// flag 0x08: another stream holds a slot of the same key meanwhile
		var holder sync.WaitGroup
		release := make(chan struct{})
		if flags&0x08 != 0 {
			held := make(chan struct{})
			holder.Go(func() {
				rec := newGuardedRecorder()
				req := fuzzRequest(http.MethodGet, true)
				_ = h.ServeHTTP(rec, req, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
					w.Header().Set("Content-Type", "text/event-stream")
					w.WriteHeader(http.StatusOK)
					close(held)
					<-release
					return nil
				}))
			})
			<-held
		}

		method := [...]string{http.MethodGet, http.MethodHead, http.MethodPost}[int(flags>>1&3)%3]
		req := fuzzRequest(method, flags&0x10 == 0)
		rec := newGuardedRecorder()
		var sw *streamWriter
		ops := data[1:]
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			sw, _ = w.(*streamWriter)
			return runOps(w, ops)
		})
		func() {
			defer func() {
				if rec := recover(); rec != nil && rec != http.ErrAbortHandler {
					t.Fatalf("panic: %v", rec)
				}
			}()
			_ = h.ServeHTTP(rec, req, next)
		}()
		rec.returned.Store(true)
		close(release)
		holder.Wait()

		if sw == nil {
			return // refused before the inner handler ran
		}
		if h.streams.set.Sched.Scheduled(&sw.st) {
			t.Fatal("the stream was still scheduled after ServeHTTP returned")
		}
		if n := rec.late.Load(); n != 0 {
			t.Fatalf("%d writes reached the client after ServeHTTP returned", n)
		}
		if n := zoneEntries(h.lim.counters); n != 0 {
			t.Fatalf("%d limit counters left after every stream ended", n)
		}
		if n := h.streams.group.Open(); n != 0 {
			t.Fatalf("the handler still tracks %d streams", n)
		}
		if got := sumSeries(metrics.open); got != openBefore {
			t.Fatalf("caddy_sse_streams_open = %v after the streams ended, want %v", got, openBefore)
		}
	})
}

// runOps plays the fuzzer's bytes as an inner handler's calls on w.
func runOps(w http.ResponseWriter, ops []byte) error {
	take := func(n int) []byte {
		n = min(n, len(ops))
		b := ops[:n]
		ops = ops[n:]
		return b
	}
	arg := func() int {
		if b := take(1); len(b) == 1 {
			return int(b[0])
		}
		return 0
	}
	for len(ops) > 0 {
		switch take(1)[0] % 8 {
		case 0:
			ct := [...]string{"text/event-stream", "Text/Event-Stream; charset=utf-8", "application/x-ndjson", "text/plain", "", "text/event-stream;;"}
			if v := ct[arg()%len(ct)]; v != "" {
				w.Header().Set("Content-Type", v)
			} else {
				w.Header().Del("Content-Type")
			}
		case 1:
			codes := [...]int{200, 200, 204, 206, 304, 500, 103, 100, 404, 502, 205, 299}
			w.WriteHeader(codes[arg()%len(codes)])
		case 2:
			_, _ = w.Write(take(arg() % 64))
		case 3:
			_ = http.NewResponseController(w).Flush()
		case 4:
			_, _ = io.Copy(w, bytes.NewReader(take(arg()%64)))
		case 5:
			// let the stream's timer fire: heartbeats, idle ends
			time.Sleep(time.Duration(arg()%3+1) * time.Millisecond)
		case 6:
			hdr := [...][2]string{
				{"Content-Length", "5"}, {"Content-Encoding", "gzip"}, {"Connection", "X-Foo, close"},
				{"X-Foo", "bar"}, {"Cache-Control", "max-age=10"}, {"Transfer-Encoding", "chunked"},
			}
			kv := hdr[arg()%len(hdr)]
			w.Header().Set(kv[0], kv[1])
		case 7:
			switch arg() % 3 {
			case 0:
				panic(http.ErrAbortHandler) // as reverse_proxy does when the copy fails
			case 1:
				return caddyhttp.Error(http.StatusBadGateway, fmt.Errorf("upstream failed"))
			default:
				return nil
			}
		}
	}
	return nil
}

// fuzzHandler provisions a handler from its JSON, as Caddy would.
func fuzzHandler(tb testing.TB, cfg string) *Handler {
	tb.Helper()
	h := new(Handler)
	if err := caddy.StrictUnmarshalJSON([]byte(cfg), h); err != nil {
		tb.Fatal(err)
	}
	return provisionTestHandler(tb, h)
}

// fuzzRequest is a request as Caddy hands it to a handler, with a replacer.
func fuzzRequest(method string, eventSource bool) *http.Request {
	req := httptest.NewRequest(method, "http://fuzz.example/stream", nil)
	if eventSource {
		req.Header.Set("Accept", "text/event-stream")
	}
	req.Header.Set("X-Key", "k")
	repl := caddyhttp.NewTestReplacer(req)
	return req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
}

// zoneEntries is the number of counters z holds.
func zoneEntries(z *limit.Counters) int {
	if z == nil {
		return 0
	}
	return len(z.Snapshot())
}

// guardedRecorder is a ResponseRecorder safe for the heartbeat goroutine,
// that counts writes made after the handler returned.
type guardedRecorder struct {
	mu       sync.Mutex
	rec      *httptest.ResponseRecorder
	returned atomic.Bool
	late     atomic.Int64
}

func newGuardedRecorder() *guardedRecorder {
	return &guardedRecorder{rec: httptest.NewRecorder()}
}

func (g *guardedRecorder) Header() http.Header { return g.rec.Header() }

func (g *guardedRecorder) Write(p []byte) (int, error) {
	if g.returned.Load() {
		g.late.Add(1)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.rec.Write(p)
}

func (g *guardedRecorder) WriteHeader(code int) {
	if g.returned.Load() {
		g.late.Add(1)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rec.WriteHeader(code)
}

func (g *guardedRecorder) Flush() {
	if g.returned.Load() {
		g.late.Add(1)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rec.Flush()
}
