package caddysse

// Heartbeats end to end (issue 3): through a real Caddy with encode and
// reverse_proxy, quiet streams get comments, and no stream is ever
// corrupted by one; races under -race; the cost of idle streams.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/sseref"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// e2eInterval is the heartbeat interval of the end-to-end tests; each
// stream beats after 80-100 % of it.
const e2eInterval = 500 * time.Millisecond

// beatFrame is the default heartbeat as the EventSource-style clients of
// these tests see it (heartbeat_frame auto gives them the line frame).
const beatFrame = ": heartbeat\n"

// Through Caddy (encode gzip zstd + sse + reverse_proxy), with heartbeat
// 500ms: quiet streams get beats, only between events; busy, disabled,
// non-200, extra-type and upstream-compressed streams get none; a late
// first event that starts with a BOM survives a beat; beats are never
// compressed.
func TestHeartbeatEndToEnd(t *testing.T) {
	mux := http.NewServeMux()
	up := startUpstream(t, mux.ServeHTTP)
	site := `
	encode gzip zstd
	@off path /off/*
	sse @off {
		heartbeat off
	}
	@on not path /off/*
	sse @on {
		heartbeat 500ms
		types application/x-ndjson
	}
	reverse_proxy {{.Upstream}}
`
	c := startCaddy(t, up, "http://127.0.0.1:{{.HTTP}} {"+site+"}\nhttps://localhost:{{.HTTPS}} {\n\ttls internal"+site+"}\n")

	// A stream whose upstream says nothing gets at least 4 beats in about
	// 5 intervals, spaced by the interval, and its events come after
	// them intact.
	t.Run("silent stream gets beats", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name   string
			client *http.Client
			url    string
		}{
			{"h1", h1Client(), c.BaseURL()},
			{"h2", h2Client(), c.TLSURL()},
		} {
			t.Run(tc.name, func(t *testing.T) {
				path := "/silent/" + tc.name
				release := make(chan struct{})
				mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
					streamHead(w)
					select {
					case <-release:
					case <-r.Context().Done():
						return
					}
					send(w, "data: done\n\n")
				})
				res := get(t, tc.client, tc.url+path, "Accept", "text/event-stream")
				opened := time.Now()
				body := newBodyReader(res.Body)
				var beatTimes []time.Time
				deadline := time.Now().Add(10 * e2eInterval)
				for strings.Count(body.String(), beatFrame) < 4 {
					if !body.next(time.Until(deadline)) {
						close(release)
						t.Fatalf("%d beats after %v, want 4 within 5 intervals of %v (with slack); got %q",
							strings.Count(body.String(), beatFrame), time.Since(opened), e2eInterval, body.String())
					}
					for len(beatTimes) < strings.Count(body.String(), beatFrame) {
						beatTimes = append(beatTimes, body.last)
					}
				}
				close(release)
				// timers never fire early: beats are at least the
				// jittered interval apart, less delivery jitter
				for i := 1; i < len(beatTimes); i++ {
					if gap := beatTimes[i].Sub(beatTimes[i-1]); gap < e2eInterval*8/10-250*time.Millisecond {
						t.Errorf("beats %d and %d only %v apart, want about %v", i-1, i, gap, e2eInterval)
					}
				}
				if !body.waitFor(func(s string) bool { return strings.Contains(s, "data: done\n\n") }, 10*time.Second) {
					t.Fatalf("no event after release; got %q", body.String())
				}
				if got := parseEventStream(body.bytes()).Events; !slices.Equal(got, []sseEvent{{Type: "message", Data: "done", ID: ""}}) {
					t.Errorf("events %v, want the one event; body %q", got, body.String())
				}
			})
		}
	})

	// A stream that stalls mid-event for 3 intervals gets no beat until
	// the event ends; then the event arrives whole, and beats resume.
	t.Run("stall mid event", func(t *testing.T) {
		t.Parallel()
		stalled := make(chan time.Duration, 1)
		release := make(chan struct{})
		mux.HandleFunc("/stall", func(w http.ResponseWriter, r *http.Request) {
			streamHead(w)
			send(w, "data: a\n")
			start := time.Now()
			select {
			case <-time.After(3 * e2eInterval): // the stall being tested
			case <-r.Context().Done():
				return
			}
			stalled <- time.Since(start)
			send(w, "data: b\n\n")
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		res := get(t, h1Client(), c.BaseURL()+"/stall", "Accept", "text/event-stream")
		body := newBodyReader(res.Body)
		defer close(release)
		if !body.waitFor(func(s string) bool { return strings.Contains(s, beatFrame) }, 10*time.Second) {
			t.Fatalf("no beat after the event ended; got %q", body.String())
		}
		if d := <-stalled; d < 3*e2eInterval {
			t.Fatalf("upstream stalled only %v", d)
		}
		if want := "data: a\ndata: b\n\n" + beatFrame; !strings.HasPrefix(body.String(), want) {
			t.Errorf("body = %q, want it to start with %q: no beat inside the event", body.String(), want)
		}
		if got := parseEventStream(body.bytes()).Events; !slices.Equal(got, []sseEvent{{Type: "message", Data: "a\nb", ID: ""}}) {
			t.Errorf("events %v, want one event with data \"a\\nb\"", got)
		}
	})

	// A stream with an event every interval/5 is never idle: no beats.
	t.Run("busy stream gets none", func(t *testing.T) {
		t.Parallel()
		for attempt := 1; ; attempt++ {
			path := fmt.Sprintf("/busy/%d", attempt)
			maxGap := make(chan time.Duration, 1)
			var want strings.Builder
			for i := range 25 {
				fmt.Fprintf(&want, "id: %d\ndata: tick %d\n\n", i, i)
			}
			mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
				streamHead(w)
				tick := time.NewTicker(e2eInterval / 5)
				defer tick.Stop()
				var gap time.Duration
				last := time.Now()
				for i := range 25 {
					select {
					case <-tick.C:
					case <-r.Context().Done():
						return
					}
					gap = max(gap, time.Since(last))
					last = time.Now()
					send(w, fmt.Sprintf("id: %d\ndata: tick %d\n\n", i, i))
				}
				maxGap <- gap
			})
			res := get(t, h1Client(), c.BaseURL()+path, "Accept", "text/event-stream")
			got := readAllWithin(t, res.Body, 20*time.Second)
			if gap := <-maxGap; gap > e2eInterval/2 && attempt < 3 {
				// the machine stalled the upstream long enough to make
				// the stream idle: inconclusive, try again
				t.Logf("attempt %d: upstream paused %v between events; retrying", attempt, gap)
				continue
			}
			if got != want.String() {
				t.Errorf("body = %q, want exactly the upstream's events", got)
			}
			return
		}
	})

	// With "heartbeat off", a stream silent for 5 intervals gets nothing.
	t.Run("heartbeat off gets none", func(t *testing.T) {
		t.Parallel()
		mux.HandleFunc("/off/silent", func(w http.ResponseWriter, r *http.Request) {
			streamHead(w)
			select {
			case <-time.After(5 * e2eInterval): // the silence being tested
			case <-r.Context().Done():
				return
			}
			send(w, "data: end\n\n")
		})
		res := get(t, h1Client(), c.BaseURL()+"/off/silent", "Accept", "text/event-stream")
		if got := readAllWithin(t, res.Body, 20*time.Second); got != "data: end\n\n" {
			t.Errorf("body = %q, want only the upstream's event", got)
		}
	})

	// A beat that went out before a late first event starting with a
	// UTF-8 BOM does not cost the event: the BOM is dropped, because a
	// client strips a BOM only at the very start of the stream.
	t.Run("BOM after a beat", func(t *testing.T) {
		t.Parallel()
		sawBeat := make(chan struct{})
		mux.HandleFunc("/bom", func(w http.ResponseWriter, r *http.Request) {
			streamHead(w)
			select {
			case <-sawBeat:
			case <-r.Context().Done():
				return
			}
			send(w, "\xEF\xBB\xBFdata: first\n\n")
			send(w, "data: second\n\n")
		})
		res := get(t, h1Client(), c.BaseURL()+"/bom", "Accept", "text/event-stream")
		body := newBodyReader(res.Body)
		if !body.waitFor(func(s string) bool { return strings.Contains(s, beatFrame) }, 10*time.Second) {
			close(sawBeat)
			t.Fatalf("no beat before the first event; got %q", body.String())
		}
		close(sawBeat)
		if !body.waitFor(func(s string) bool { return strings.Contains(s, "data: second\n\n") }, 10*time.Second) {
			t.Fatalf("events did not arrive; got %q", body.String())
		}
		want := []sseEvent{{Type: "message", Data: "first", ID: ""}, {Type: "message", Data: "second", ID: ""}}
		if got := parseEventStream(body.bytes()).Events; !slices.Equal(got, want) {
			t.Errorf("events %v, want %v; body %q", got, want, body.String())
		}
	})

	// An event stream the upstream gzipped itself reaches the client
	// byte for byte: nothing is injected into it, and it decodes cleanly.
	// The client is fetch-style (no Accept: text/event-stream, so sse
	// leaves its Accept-Encoding alone) and accepts gzip: a client that
	// sends no Accept-Encoding makes reverse_proxy's transport ask for
	// gzip itself and decode it, and sse then sees a plain stream, which
	// may have beats like any other.
	t.Run("upstream gzip gets none", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name           string
			acceptEncoding string
			wantEncoding   string
		}{
			{"client accepts gzip", "gzip", "gzip"},
			{"client sends no Accept-Encoding", "", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				path := "/gzip/" + strings.ReplaceAll(tc.name, " ", "-")
				sent := make(chan []byte, 1)
				mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
					var raw bytes.Buffer
					var gz *gzip.Writer
					w.Header().Set("Content-Encoding", "gzip")
					streamHead(w)
					// idle before the first byte, where any other stream
					// gets beats, and again between the events
					for _, ev := range []string{"data: one\n\n", "data: two\n\n"} {
						select {
						case <-time.After(2 * e2eInterval):
						case <-r.Context().Done():
							return
						}
						if gz == nil {
							gz = gzip.NewWriter(io.MultiWriter(w, &raw))
						}
						io.WriteString(gz, ev)
						gz.Flush()
						http.NewResponseController(w).Flush()
					}
					gz.Close()
					sent <- raw.Bytes()
				})
				hdr := []string{"Accept", "*/*"}
				if tc.acceptEncoding != "" {
					hdr = append(hdr, "Accept-Encoding", tc.acceptEncoding)
				}
				res := get(t, h1Client(), c.BaseURL()+path, hdr...)
				if ce := res.Header.Get("Content-Encoding"); ce != tc.wantEncoding {
					t.Fatalf("Content-Encoding = %q, want %q", ce, tc.wantEncoding)
				}
				got := readAllWithin(t, res.Body, 20*time.Second)
				raw := <-sent
				want := []sseEvent{{Type: "message", Data: "one", ID: ""}, {Type: "message", Data: "two", ID: ""}}
				if tc.wantEncoding == "" {
					if events := parseEventStream([]byte(got)).Events; !slices.Equal(events, want) {
						t.Errorf("events %v, want %v; body %q", events, want, got)
					}
					return
				}
				if got != string(raw) {
					t.Errorf("client got %d bytes, want the upstream's %d bytes unchanged", len(got), len(raw))
				}
				zr, err := gzip.NewReader(strings.NewReader(got))
				if err != nil {
					t.Fatalf("gzip: %v", err)
				}
				plain, err := io.ReadAll(zr)
				if err != nil {
					t.Fatalf("gunzip: %v", err)
				}
				if string(plain) != "data: one\n\ndata: two\n\n" {
					t.Errorf("decoded body = %q", plain)
				}
			})
		}
	})

	// A fetch/POST client that accepts gzip gets the stream, beats
	// included, uncompressed: sse sits inside encode and turns it off for
	// streams, so beats are never buffered in a compressor.
	t.Run("beats pass through encode", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name   string
			client *http.Client
			url    string
		}{
			{"h1", h1Client(), c.BaseURL()},
			{"h2", h2Client(), c.TLSURL()},
		} {
			t.Run(tc.name, func(t *testing.T) {
				path := "/post/" + tc.name
				release := make(chan struct{})
				defer close(release)
				mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
					streamHead(w)
					send(w, "data: hello\n\n")
					select {
					case <-release:
					case <-r.Context().Done():
					}
				})
				res := do(t, tc.client, http.MethodPost, tc.url+path, strings.NewReader(`{"prompt":"hi"}`),
					"Accept-Encoding", "gzip, zstd", "Content-Type", "application/json")
				if ce := res.Header.Get("Content-Encoding"); ce != "" {
					t.Fatalf("Content-Encoding = %q, want none", ce)
				}
				// a fetch/POST client gets the blank frame: two blank lines
				body := newBodyReader(res.Body)
				if !body.waitFor(func(s string) bool { return strings.HasPrefix(s, "data: hello\n\n\n\n\n\n") }, 10*time.Second) {
					t.Fatalf("want the event, then 2 plain beats; got %q", body.String())
				}
				if strings.Trim(strings.TrimPrefix(body.String(), "data: hello"), "\n") != "" {
					t.Errorf("body = %q, want the event, then beats", body.String())
				}
			})
		}
	})

	// Beats are for 200 event streams: a 201 event stream and an extra
	// type (application/x-ndjson) that stay quiet for 2 intervals, before
	// their first line and between their lines, reach
	// the client exactly as the upstream sent them. (HEAD is covered by
	// TestHeartbeatOnlyOn200EventStreams: a HEAD response has no body to
	// look at.)
	t.Run("non-200 and extra types get none", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name, ctype string
			status      int
			first, last string
		}{
			{"201 event stream", "text/event-stream", http.StatusCreated, "data: a\n\n", "data: b\n\n"},
			{"ndjson", "application/x-ndjson", http.StatusOK, "{\"a\":1}\n", "{\"b\":2}\n"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				path := "/quiet/" + strings.ReplaceAll(tc.name, " ", "-")
				mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", tc.ctype)
					w.WriteHeader(tc.status)
					http.NewResponseController(w).Flush()
					// silent before the first line and between the lines
					for _, line := range []string{tc.first, tc.last} {
						select {
						case <-time.After(2 * e2eInterval):
						case <-r.Context().Done():
							return
						}
						send(w, line)
					}
				})
				res := get(t, h1Client(), c.BaseURL()+path)
				if res.StatusCode != tc.status {
					t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
				}
				if got := readAllWithin(t, res.Body, 20*time.Second); got != tc.first+tc.last {
					t.Errorf("body = %q, want %q", got, tc.first+tc.last)
				}
			})
		}
	})
}

// Heartbeats go out only on 200 event streams that are not HEAD and not
// compressed by the upstream: with the stream idle and the timer firing,
// every other response is left as its producer wrote it.
func TestHeartbeatOnlyOn200EventStreams(t *testing.T) {
	d := caddy.Duration(time.Hour)
	// (the line frame, so that beats can be counted in the body)
	h := provisionHandler(t, &Handler{Heartbeat: &d, HeartbeatFrame: frameLine, Types: []string{"application/x-ndjson"}})
	for _, tc := range []struct {
		name, method, ctype, encoding string
		status                        int
		beats                         bool
	}{
		{"200 event stream", http.MethodGet, "text/event-stream", "", 200, true},
		{"200 event stream, POST", http.MethodPost, "text/event-stream; charset=utf-8", "", 200, true},
		{"201 event stream", http.MethodGet, "text/event-stream", "", 201, false},
		{"206 event stream", http.MethodGet, "text/event-stream", "", 206, false},
		{"HEAD", http.MethodHead, "text/event-stream", "", 200, false},
		{"gzip by upstream", http.MethodGet, "text/event-stream", "gzip", 200, false},
		{"identity encoding", http.MethodGet, "text/event-stream", "identity", 200, true},
		{"extra type", http.MethodGet, "application/x-ndjson", "", 200, false},
		{"not a stream", http.MethodGet, "text/plain", "", 200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(tc.method, "/", nil)
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Type", tc.ctype)
				if tc.encoding != "" {
					w.Header().Set("Content-Encoding", tc.encoding)
				}
				w.WriteHeader(tc.status)
				sw := w.(*streamWriter)
				if sw.mode == modeStream {
					fireIdleTimer(sw)
				}
				if tc.method != http.MethodHead {
					io.WriteString(w, "x\n\n")
				}
				if sw.mode == modeStream {
					fireIdleTimer(sw)
				}
				return nil
			})
			if err := h.ServeHTTP(rec, req, next); err != nil {
				t.Fatal(err)
			}
			body := rec.Body.String()
			got := strings.Count(body, beatFrame)
			if tc.beats && got != 2 {
				t.Errorf("body %q: %d beats, want 2", body, got)
			}
			if !tc.beats && got != 0 {
				t.Errorf("body %q: %d beats, want none", body, got)
			}
		})
	}
}

// An upstream that compresses its own event stream gets no heartbeats, and
// the operator is told once, at info, why and how to fix it.
func TestHeartbeatCompressedStreamLoggedOnce(t *testing.T) {
	d := caddy.Duration(time.Hour)
	h := provisionHandler(t, &Handler{Heartbeat: &d, HeartbeatFrame: frameLine})
	core, logs := observer.New(zapcore.DebugLevel)
	useLogger(h, zap.New(core))
	for i, encoding := range []string{"gzip", "", "br", "gzip"} {
		rec := httptest.NewRecorder()
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", "text/event-stream")
			if encoding != "" {
				w.Header().Set("Content-Encoding", encoding)
			}
			w.WriteHeader(http.StatusOK)
			fireIdleTimer(w.(*streamWriter))
			return nil
		})
		if err := h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil), next); err != nil {
			t.Fatal(err)
		}
		if beats := strings.Count(rec.Body.String(), beatFrame); (encoding == "") != (beats == 1) {
			t.Errorf("request %d (Content-Encoding %q): %d beats", i, encoding, beats)
		}
	}
	var notes []observer.LoggedEntry
	for _, e := range logs.All() {
		if strings.Contains(e.Message, "compressed event stream") {
			notes = append(notes, e)
		}
	}
	if len(notes) != 1 {
		t.Fatalf("%d notes about compressed streams, want 1: %v", len(notes), logs.All())
	}
	if notes[0].Level != zapcore.InfoLevel {
		t.Errorf("note logged at %v, want info", notes[0].Level)
	}
	if msg := notes[0].Message; !strings.Contains(msg, "heartbeat") || !strings.Contains(msg, "Accept-Encoding") {
		t.Errorf("note %q should say it gets no heartbeats and how to fix it", msg)
	}
}

// Beats race upstream writes, client disconnects and upstream endings, over
// HTTP/1.1 and HTTP/2, with a 1ms heartbeat: whatever happens, nothing
// panics, and the client's bytes parse to exactly the upstream's events
// (a prefix of them when the stream was cut).
func TestHeartbeatRaces(t *testing.T) {
	const iterations = 40
	var (
		mu      sync.Mutex
		scripts = map[string][][]byte{}
	)
	rng := sseref.NewRand(11)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		writes := scripts[r.URL.Path]
		mu.Unlock()
		streamHead(w)
		abort := r.URL.Query().Get("abort") == "1"
		for i, p := range writes {
			if abort && i == len(writes)/2 {
				panic(http.ErrAbortHandler) // the upstream dies mid-stream
			}
			if send(w, string(p)) != nil {
				return
			}
			if i%3 == 0 {
				// pacing, not synchronisation: leaves the stream idle
				// for a heartbeat interval or two
				time.Sleep(time.Duration(1+i%2) * time.Millisecond)
			}
		}
	})
	c := startCaddy(t, up, `
http://127.0.0.1:{{.HTTP}} {
	sse {
		heartbeat 1ms
	}
	reverse_proxy {{.Upstream}}
}
https://localhost:{{.HTTPS}} {
	tls internal
	sse {
		heartbeat 1ms
	}
	reverse_proxy {{.Upstream}}
}
`)
	for _, tc := range []struct {
		name   string
		client *http.Client
		url    string
		proto  int
	}{
		{"h1", h1Client(), c.BaseURL(), 1},
		{"h2", h2Client(), c.TLSURL(), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var injected int
			for i := range iterations {
				var upstream []byte
				var writes [][]byte
				for range 4 {
					stream := randomStream(rng)
					upstream = append(upstream, stream...)
					writes = append(writes, sseref.RandomSplit(rng, stream)...)
				}
				path := fmt.Sprintf("/race/%s/%d", tc.name, i)
				mu.Lock()
				scripts[path] = writes
				mu.Unlock()
				mode := i % 4 // 0, 1: whole stream; 2: upstream aborts; 3: client leaves
				url := tc.url + path
				if mode == 2 {
					url += "?abort=1"
				}
				ctx, cancel := context.WithCancel(t.Context())
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				req.Header.Set("Accept", "text/event-stream")
				res, err := tc.client.Do(req)
				if err != nil {
					cancel()
					t.Fatalf("iteration %d: %v", i, err)
				}
				if res.ProtoMajor != tc.proto {
					t.Fatalf("proto %s, want major %d", res.Proto, tc.proto)
				}
				var got []byte
				if mode == 3 {
					got = readSome(res.Body, 1+rng.IntN(len(upstream)+1))
					cancel()
				} else {
					got, err = io.ReadAll(res.Body)
					if mode != 2 && err != nil {
						t.Fatalf("iteration %d: reading: %v", i, err)
					}
				}
				res.Body.Close()
				cancel()
				want, have := parseEventStream(upstream), parseEventStream(got)
				if mode < 2 {
					if !slices.Equal(have.Events, want.Events) || !slices.Equal(have.Retries, want.Retries) {
						t.Fatalf("iteration %d: client events %v retries %q, want %v %q\nupstream %q\nclient   %q",
							i, have.Events, have.Retries, want.Events, want.Retries, upstream, got)
					}
					injected += len(got) - len(upstream)
					continue
				}
				// a cut stream: what the client parsed is a prefix
				if len(have.Events) > len(want.Events) || !slices.Equal(have.Events, want.Events[:len(have.Events)]) {
					t.Fatalf("iteration %d: client events %v are not a prefix of %v\nupstream %q\nclient   %q",
						i, have.Events, want.Events, upstream, got)
				}
			}
			if injected <= 0 {
				t.Errorf("no heartbeat went out in %d streams: nothing raced", iterations)
			}
			t.Logf("%d bytes of heartbeats in the whole streams", injected)
		})
	}
}

// readSome reads until it has at least n bytes, EOF or an error.
func readSome(r io.Reader, n int) []byte {
	var got []byte
	buf := make([]byte, 4096)
	for len(got) < n {
		k, err := r.Read(buf)
		got = append(got, buf[:k]...)
		if err != nil {
			break
		}
	}
	return got
}

// After ServeHTTP returns, nothing is written to the response (HTTP/2
// panics on such a write), whatever the upstream and the client did while
// beats were due every millisecond.
func TestHeartbeatNoWriteAfterReturn(t *testing.T) {
	d := caddy.Duration(time.Millisecond)
	h := provisionHandler(t, &Handler{Heartbeat: &d, HeartbeatFrame: frameLine}) // beats counted in the body
	rng := sseref.NewRand(5)
	var lateWriters []*lateWriteRecorder
	beats := 0
	for i := range 300 {
		lw := &lateWriteRecorder{header: http.Header{}}
		lateWriters = append(lateWriters, lw)
		ctx, cancel := context.WithCancel(context.Background())
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
		writes := sseref.RandomSplit(rng, randomStream(rng))
		cancelAt := -1
		if i%3 == 0 {
			cancelAt = rng.IntN(len(writes) + 1)
		}
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			for j, p := range writes {
				if j == cancelAt {
					cancel() // the client goes away
				}
				if r.Context().Err() != nil {
					return r.Context().Err()
				}
				if _, err := w.Write(p); err != nil {
					return err
				}
				if j%4 == 0 {
					// pacing, not synchronisation: let beats fall due
					time.Sleep(time.Millisecond)
				}
			}
			if i%5 == 1 {
				panic(http.ErrAbortHandler) // the upstream dies
			}
			return nil
		})
		func() {
			defer func() {
				if rec := recover(); rec != nil && rec != http.ErrAbortHandler {
					t.Fatalf("iteration %d: panic %v", i, rec)
				}
			}()
			_ = h.ServeHTTP(lw, req, next)
		}()
		lw.returned.Store(true)
		cancel()
		beats += strings.Count(lw.body(), beatFrame)
	}
	for i, lw := range lateWriters {
		if n := lw.late.Load(); n != 0 {
			t.Errorf("stream %d: %d writes or flushes after ServeHTTP returned", i, n)
		}
	}
	if beats == 0 {
		t.Errorf("no beat in 300 streams: nothing raced")
	}
}

// lateWriteRecorder is a flushable ResponseWriter that counts writes and
// flushes made after it was marked returned.
type lateWriteRecorder struct {
	header   http.Header
	returned atomic.Bool
	late     atomic.Int64
	mu       sync.Mutex
	buf      bytes.Buffer
}

func (lw *lateWriteRecorder) Header() http.Header { return lw.header }
func (lw *lateWriteRecorder) WriteHeader(int)     {}
func (lw *lateWriteRecorder) Write(p []byte) (int, error) {
	if lw.returned.Load() {
		lw.late.Add(1)
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.buf.Write(p)
}
func (lw *lateWriteRecorder) Flush() {
	if lw.returned.Load() {
		lw.late.Add(1)
	}
}
func (lw *lateWriteRecorder) body() string {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.buf.String()
}

// With 1,000 idle streams open through Caddy, heartbeats on (1s) cost no
// goroutine over heartbeats off: an idle stream is a timer, not a
// goroutine (issue 3, "No goroutine per idle stream").
func TestHeartbeatIdleStreamsAddNoGoroutines(t *testing.T) {
	const streams = 1000
	delta := map[string]int{}
	for _, cfg := range []string{"1s", "off"} {
		t.Run("heartbeat "+cfg, func(t *testing.T) {
			release := make(chan struct{})
			up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				streamHead(w)
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			c := startCaddy(t, up, `
http://127.0.0.1:{{.HTTP}} {
	sse {
		heartbeat `+cfg+`
	}
	reverse_proxy {{.Upstream}}
}
`)
			defer close(release)
			before := stableGoroutines(t)
			conns := openRawStreams(t, c.HTTP, streams)
			defer func() {
				for _, rc := range conns {
					rc.conn.Close()
				}
			}()
			// let every stream be idle for more than an interval: with
			// heartbeats on, the sampled streams must have had a beat
			idleUntil := time.Now().Add(1500 * time.Millisecond)
			if cfg != "off" {
				for i := range 5 {
					if got := conns[i].readUntil(beatFrame, 10*time.Second); !strings.Contains(got, beatFrame) {
						t.Fatalf("stream %d got no beat: %q", i, got)
					}
				}
			}
			<-time.After(time.Until(idleUntil)) // idle time, not synchronisation
			delta[cfg] = stableGoroutines(t) - before
			t.Logf("heartbeat %s: %d goroutines for %d idle streams", cfg, delta[cfg], streams)
		})
	}
	if diff := delta["1s"] - delta["off"]; diff > 10 || diff < -10 {
		t.Errorf("heartbeats on added %d goroutines over off for %d idle streams (on %d, off %d), want about 0",
			diff, streams, delta["1s"], delta["off"])
	}
	if delta["off"] < streams {
		t.Errorf("only %d goroutines for %d streams: were they open?", delta["off"], streams)
	}
}

// rawStream is an HTTP/1.1 event stream read without a goroutine.
type rawStream struct {
	conn net.Conn
	br   *bufio.Reader
	body io.Reader
}

// readUntil reads the body until it contains want or timeout passes.
func (s *rawStream) readUntil(want string, timeout time.Duration) string {
	s.conn.SetReadDeadline(time.Now().Add(timeout))
	defer s.conn.SetReadDeadline(time.Time{})
	var got []byte
	buf := make([]byte, 512)
	for !bytes.Contains(got, []byte(want)) {
		n, err := s.body.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	return string(got)
}

// openRawStreams opens n event streams to Caddy over plain TCP connections
// and returns once each has its response header.
func openRawStreams(t *testing.T, port, n int) []*rawStream {
	t.Helper()
	out := make([]*rawStream, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				s, err := openRawStream(port, i)
				if err != nil {
					errs <- fmt.Errorf("stream %d: %w", i, err)
					continue
				}
				out[i] = s
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		for _, s := range out {
			if s != nil {
				s.conn.Close()
			}
		}
		t.Fatal(err)
	}
	return out
}

func openRawStream(port, i int) (*rawStream, error) {
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/idle/%d", port, i), nil)
	req.Header.Set("Accept", "text/event-stream")
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	if res.StatusCode != http.StatusOK {
		conn.Close()
		return nil, errors.New(res.Status)
	}
	return &rawStream{conn: conn, br: br, body: res.Body}, nil
}

// stableGoroutines waits until the goroutine count stops moving and
// returns it.
func stableGoroutines(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	prev := runtime.NumGoroutine()
	for steady := 0; steady < 3; {
		select {
		case <-time.After(100 * time.Millisecond): // polling a condition
		case <-t.Context().Done():
			return prev
		}
		n := runtime.NumGoroutine()
		if d := n - prev; d >= -2 && d <= 2 {
			steady++
		} else {
			steady = 0
		}
		prev = n
		if time.Now().After(deadline) {
			break
		}
	}
	return prev
}

// bodyReader accumulates a response body read in the background.
type bodyReader struct {
	ch   <-chan chunk
	buf  bytes.Buffer
	last time.Time // when the last chunk arrived
	eof  bool
}

func newBodyReader(body io.Reader) *bodyReader { return &bodyReader{ch: readChunks(body)} }

func (b *bodyReader) String() string { return b.buf.String() }
func (b *bodyReader) bytes() []byte  { return b.buf.Bytes() }

// next waits for one more chunk; it reports false on EOF or timeout.
func (b *bodyReader) next(timeout time.Duration) bool {
	if b.eof {
		return false
	}
	select {
	case c, ok := <-b.ch:
		if !ok {
			b.eof = true
			return false
		}
		b.buf.Write(c.data)
		b.last = c.at
		return true
	case <-time.After(max(timeout, 0)):
		return false
	}
}

// waitFor reads until cond holds for the bytes so far, EOF or timeout.
func (b *bodyReader) waitFor(cond func(string) bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !cond(b.String()) {
		if !b.next(time.Until(deadline)) {
			return cond(b.String())
		}
	}
	return true
}

// readAllWithin reads body to EOF, failing the test after timeout.
func readAllWithin(t *testing.T, body io.Reader, timeout time.Duration) string {
	t.Helper()
	b := newBodyReader(body)
	deadline := time.Now().Add(timeout)
	for b.next(time.Until(deadline)) {
	}
	if !b.eof {
		t.Fatalf("body did not end within %v; got %q", timeout, b.String())
	}
	return b.String()
}
