package caddysse

// Tests of how sse ends streams on purpose (max_duration, idle_timeout),
// the warnings it logs at provision, and the log line of each stream's
// end. Issue 5; DESIGN.md section 6.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// upstreamRequest is what a test upstream saw of one request.
type upstreamRequest struct {
	path        string
	lastEventID string
	canceled    chan struct{} // closed when the request's context ends
}

// eventUpstream serves numbered events ("id: N", "data: event N") every
// `every`, each split over several flushed writes so that Caddy sees events
// in pieces. It resumes after the Last-Event-ID it receives and never ends a
// stream by itself. Every request is reported on reqs.
type eventUpstream struct {
	every time.Duration
	reqs  chan upstreamRequest
}

func newEventUpstream(every time.Duration) *eventUpstream {
	return &eventUpstream{every: every, reqs: make(chan upstreamRequest, 512)}
}

func (u *eventUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	next := 1
	last := r.Header.Get("Last-Event-ID")
	if n, err := strconv.Atoi(last); err == nil {
		next = n + 1
	}
	canceled := make(chan struct{})
	go func() {
		<-r.Context().Done()
		close(canceled)
	}()
	u.reqs <- upstreamRequest{path: r.URL.Path, lastEventID: last, canceled: canceled}
	streamHead(w)
	// a pause between the pieces of one event, so that a deadline often
	// falls inside an event
	pause := time.NewTimer(0)
	defer pause.Stop()
	for i := next; ; i++ {
		for _, part := range []string{fmt.Sprintf("id: %d\n", i), "data: event ", fmt.Sprintf("%d\n", i), "\n"} {
			if send(w, part) != nil {
				return
			}
			pause.Reset(u.every / 4)
			select {
			case <-r.Context().Done():
				return
			case <-pause.C:
			}
		}
		pause.Reset(u.every / 4)
		select {
		case <-r.Context().Done():
			return
		case <-pause.C:
		}
	}
}

// nextRequest waits for the upstream to receive a request.
func (u *eventUpstream) nextRequest(t testing.TB) upstreamRequest {
	t.Helper()
	select {
	case r := <-u.reqs:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream got no request within 10s")
		return upstreamRequest{}
	}
}

// waitCanceled fails the test unless the upstream request ends within 5s.
func waitCanceled(t testing.TB, r upstreamRequest) {
	t.Helper()
	select {
	case <-r.canceled:
	case <-time.After(5 * time.Second):
		t.Errorf("the upstream request for %s was not canceled within 5s of the end of the stream", r.path)
	}
}

// streamResult is one whole stream as a client read it.
type streamResult struct {
	body    string
	err     error         // nil for a clean end (io.EOF)
	elapsed time.Duration // from just before the request to the end of the body
}

// readStream sends an EventSource-style GET and reads the body to its end,
// for at most limit.
func readStream(t testing.TB, client *http.Client, url string, limit time.Duration, hdr ...string) streamResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	req := newEventSourceRequest(t, ctx, url, hdr...)
	start := time.Now()
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200", url, res.StatusCode)
	}
	b, err := io.ReadAll(res.Body) // nil error means io.EOF: a clean end
	return streamResult{body: string(b), err: err, elapsed: time.Since(start)}
}

// newEventSourceRequest makes a GET that accepts text/event-stream, with
// headers given as name, value pairs; "Host" sets the request's Host.
func newEventSourceRequest(t testing.TB, ctx context.Context, url string, hdr ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return req
}

var retryAtEnd = regexp.MustCompile(`retry: (\d+)\n(\n?)$`)

// checkEndsWithRetry checks that body is whole events (or heartbeat
// comments, in either frame) followed by one retry field in
// [retry, 1.5 retry] ms, and nothing else: the stream ended at an event
// boundary with a reconnection hint. The retry field is framed like the
// heartbeats: a line alone for the EventSource-style clients of these tests
// (heartbeat_frame auto). It returns the blocks before the retry field,
// heartbeats left out.
func checkEndsWithRetry(t testing.TB, body string, retry time.Duration) []string {
	t.Helper()
	events := withoutBeats(body)
	m := retryAtEnd.FindStringSubmatchIndex(events)
	if m == nil {
		t.Fatalf("body does not end with a retry field:\n%q", tail(body))
	}
	rest := events[:m[0]]
	if rest != "" && !strings.HasSuffix(rest, "\n\n") {
		t.Fatalf("the retry field does not follow a whole event (ended mid-event):\n%q", tail(body))
	}
	ms, _ := strconv.Atoi(events[m[2]:m[3]])
	if lo, hi := retry.Milliseconds(), retry.Milliseconds()*3/2; int64(ms) < lo || int64(ms) > hi {
		t.Errorf("retry: %d, want within [%d, %d] ms", ms, lo, hi)
	}
	if rest == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(rest, "\n\n"), "\n\n")
}

// withoutBeats removes the heartbeat comments, in either frame, from a
// stream body that starts at an event boundary.
func withoutBeats(body string) string {
	var b strings.Builder
	atStart, afterBeat := true, false
	for _, line := range strings.SplitAfter(body, "\n") {
		switch {
		case atStart && line == ": heartbeat\n":
			afterBeat = true
			continue
		case afterBeat && line == "\n": // the blank line of a block frame
			afterBeat = false
			continue
		}
		afterBeat = false
		b.WriteString(line)
		atStart = line == "\n"
	}
	return b.String()
}

// eventIDs checks that blocks are whole numbered events from eventUpstream
// (heartbeat comments allowed) and returns their ids in order.
func eventIDs(t testing.TB, blocks []string) []int {
	t.Helper()
	var ids []int
	for _, b := range blocks {
		if strings.HasPrefix(b, ":") && !strings.Contains(b, "\n") {
			continue // heartbeat
		}
		var id, n int
		if _, err := fmt.Sscanf(b, "id: %d\ndata: event %d", &id, &n); err != nil || id != n ||
			b != fmt.Sprintf("id: %d\ndata: event %d", id, id) {
			t.Fatalf("block %q is not a whole event", b)
		}
		ids = append(ids, id)
	}
	return ids
}

// tail returns the end of s, for failure messages.
func tail(s string) string {
	if len(s) > 300 {
		return "…" + s[len(s)-300:]
	}
	return s
}

// A stream with max_duration 2s ends after 80-100 % of 2s, at an event
// boundary (the upstream writes each event in pieces), with a retry field
// as the last thing before a clean end of the response, over HTTP/1.1 and
// HTTP/2; the upstream sees its request canceled; and an EventSource-style
// reconnect with Last-Event-ID resumes where the first stream stopped, with
// no event lost or seen twice.
func TestMaxDurationEndsCleanlyAndResumes(t *testing.T) {
	up := newEventUpstream(80 * time.Millisecond)
	addr := startUpstream(t, up.ServeHTTP)
	c := startCaddy(t, addr, `
http://127.0.0.1:{{.HTTP}} {
	sse {
		max_duration 2s
		retry 1s
	}
	reverse_proxy {{.Upstream}}
}
https://localhost:{{.HTTPS}} {
	tls internal
	sse {
		max_duration 2s
		retry 1s
	}
	reverse_proxy {{.Upstream}}
}
`)
	const (
		maxDur = 2 * time.Second
		lower  = maxDur * 8 / 10
		slack  = 1500 * time.Millisecond // scheduling on a loaded machine, plus the rest of an event
	)
	for _, tc := range []struct {
		name   string
		client *http.Client
		url    string
	}{
		{"http1", h1Client(), c.BaseURL() + "/events"},
		{"http2", h2Client(), c.TLSURL() + "/events"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var all []int
			lastID := ""
			for conn := 1; conn <= 2; conn++ {
				var hdr []string
				if lastID != "" {
					hdr = []string{"Last-Event-ID", lastID}
				}
				res := readStream(t, tc.client, tc.url, 15*time.Second, hdr...)
				ur := up.nextRequest(t)
				if ur.lastEventID != lastID {
					t.Errorf("connection %d: upstream got Last-Event-ID %q, want %q", conn, ur.lastEventID, lastID)
				}
				if res.err != nil {
					t.Fatalf("connection %d: body ended with %v, want a clean EOF; body:\n%q", conn, res.err, tail(res.body))
				}
				if res.elapsed < lower || res.elapsed > maxDur+slack {
					t.Errorf("connection %d: stream lasted %v, want within [%v, %v]", conn, res.elapsed, lower, maxDur+slack)
				}
				ids := eventIDs(t, checkEndsWithRetry(t, res.body, time.Second))
				if len(ids) == 0 {
					t.Fatalf("connection %d: no events", conn)
				}
				waitCanceled(t, ur)
				all = append(all, ids...)
				lastID = strconv.Itoa(ids[len(ids)-1])
			}
			for i, id := range all {
				if id != i+1 {
					t.Fatalf("events across both connections = %v, want 1..%d each once, in order", all, len(all))
				}
			}
		})
	}
}

// When max_duration falls while an event is half written, the stream ends
// right after that event is finished, not in the middle of it; if the event
// is never finished, the stream ends anyway once it has waited stream.MaxEventWait
// (2s), without a retry field in the middle of the event.
func TestMaxDurationMidEvent(t *testing.T) {
	const maxDur = 2 * time.Second
	finishAfter := maxDur + 500*time.Millisecond // after the latest deadline
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		streamHead(w)
		send(w, "id: 1\ndata: begin")
		if r.URL.Path == "/never" {
			<-r.Context().Done()
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(finishAfter):
		}
		if send(w, " end\n") != nil || send(w, "\n") != nil {
			return
		}
		// the stream should end on the blank line; if it did not, a
		// next event shows it (sent apart, so it is never read together
		// with the first)
		select {
		case <-r.Context().Done():
			return
		case <-time.After(time.Second):
		}
		send(w, "id: 2\ndata: after the end\n\n")
		<-r.Context().Done()
	})
	c := startCaddy(t, up, `
http://127.0.0.1:{{.HTTP}} {
	sse {
		max_duration 2s
		retry 1s
	}
	reverse_proxy {{.Upstream}}
}
`)
	for _, tc := range []struct {
		name     string
		path     string
		min, max time.Duration
		check    func(t *testing.T, body string)
	}{
		{
			name: "event finishes after the deadline",
			path: "/later",
			min:  finishAfter,
			max:  finishAfter + 2*time.Second,
			check: func(t *testing.T, body string) {
				blocks := checkEndsWithRetry(t, body, time.Second)
				if want := []string{"id: 1\ndata: begin end"}; strings.Join(blocks, "|") != strings.Join(want, "|") {
					t.Errorf("events = %q, want %q (the whole event, and nothing after the end)", blocks, want)
				}
			},
		},
		{
			name: "event never finishes",
			path: "/never",
			min:  maxDur*8/10 + stream.MaxEventWait,
			max:  maxDur + stream.MaxEventWait + 2*time.Second,
			check: func(t *testing.T, body string) {
				if body != "id: 1\ndata: begin" {
					t.Errorf("body = %q, want the unfinished event and no retry field inside it", body)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := readStream(t, h1Client(), c.BaseURL()+tc.path, 20*time.Second)
			if res.err != nil {
				t.Fatalf("body ended with %v, want a clean EOF; body %q", res.err, res.body)
			}
			if res.elapsed < tc.min || res.elapsed > tc.max {
				t.Errorf("stream lasted %v, want within [%v, %v]", res.elapsed, tc.min, tc.max)
			}
			tc.check(t, res.body)
		})
	}
}

// idle_timeout ends a stream whose upstream has sent nothing for that long,
// even though heartbeats keep going to the client (they do not count as
// activity), with a retry field; a stream whose upstream keeps sending is
// never ended by it.
func TestIdleTimeout(t *testing.T) {
	const idle = time.Second
	busy := newEventUpstream(100 * time.Millisecond)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/busy" {
			busy.ServeHTTP(w, r)
			return
		}
		streamHead(w)
		send(w, "id: 1\ndata: event 1\n\n")
		<-r.Context().Done()
	})
	c := startCaddy(t, up, `
http://127.0.0.1:{{.HTTP}} {
	sse {
		heartbeat 200ms
		idle_timeout 1s
		retry 1s
	}
	reverse_proxy {{.Upstream}}
}
`)

	t.Run("silent upstream ends on time", func(t *testing.T) {
		res := readStream(t, h1Client(), c.BaseURL()+"/silent", 15*time.Second)
		if res.err != nil {
			t.Fatalf("body ended with %v, want a clean EOF; body %q", res.err, res.body)
		}
		if max := idle + 2*time.Second; res.elapsed < idle || res.elapsed > max {
			t.Errorf("stream lasted %v, want within [%v, %v]", res.elapsed, idle, max)
		}
		blocks := checkEndsWithRetry(t, res.body, time.Second)
		if ids := eventIDs(t, blocks); len(ids) != 1 {
			t.Errorf("events %v, want only event 1", ids)
		}
		if beats := strings.Count(res.body, beatFrame); beats < 2 {
			t.Errorf("%d heartbeats before the end, want at least 2 (heartbeat 200ms, idle_timeout 1s)", beats)
		}
	})

	t.Run("busy upstream is never ended", func(t *testing.T) {
		res := get(t, h1Client(), c.BaseURL()+"/busy", "Accept", "text/event-stream")
		ch := readChunks(res.Body)
		window := time.NewTimer(3 * idle)
		defer window.Stop()
		var got strings.Builder
	read:
		for {
			select {
			case ck, ok := <-ch:
				if !ok {
					t.Fatalf("a busy stream ended within %v; body:\n%q", 3*idle, tail(got.String()))
				}
				got.Write(ck.data)
			case <-window.C:
				break read
			}
		}
		if n := strings.Count(got.String(), "data: event"); n < 10 {
			t.Errorf("%d events in %v, want a steady stream (10 or more)", n, 3*idle)
		}
		if strings.Contains(got.String(), "retry:") {
			t.Errorf("a busy stream got a retry field: %q", tail(got.String()))
		}
	})
}

// loadLogged reloads c with sites, Caddy's default log written as JSON at
// DEBUG level to logFile, after mutate has changed the JSON config.
func loadLogged(t testing.TB, c *testCaddy, sites, logFile string, mutate func(cfg map[string]any)) {
	t.Helper()
	var cfg map[string]any
	if err := json.Unmarshal(c.adapt(t, sites), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["logging"] = map[string]any{"logs": map[string]any{"default": map[string]any{
		"writer":  map[string]any{"output": "file", "filename": logFile},
		"encoder": map[string]any{"format": "json"},
		"level":   "DEBUG",
	}}}
	if mutate != nil {
		mutate(cfg)
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(b, true); err != nil {
		t.Fatalf("loading config: %v\n%s", err, b)
	}
}

// logEntry is one line of Caddy's JSON log.
type logEntry struct {
	Level  string `json:"level"`
	Logger string `json:"logger"`
	Msg    string `json:"msg"`
	raw    string
}

// readLog returns the entries of a JSON log file.
func readLog(t testing.TB, path string) []logEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("reading log: %v", err)
	}
	defer f.Close()
	var entries []logEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e logEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			e.raw = sc.Text()
			entries = append(entries, e)
		}
	}
	return entries
}

// servers applies f to every HTTP server of a JSON config.
func servers(cfg map[string]any, f func(srv map[string]any)) {
	apps, _ := cfg["apps"].(map[string]any)
	httpApp, _ := apps["http"].(map[string]any)
	srvs, _ := httpApp["servers"].(map[string]any)
	for _, s := range srvs {
		f(s.(map[string]any))
	}
}

// sse warns at provision about server settings that cut quiet streams
// (write_timeout, write_min_rate) and about response_buffers on a
// reverse_proxy in the same site, and says nothing when none is set.
func TestProvisionWarnings(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	plain := `
http://127.0.0.1:{{.HTTP}} {
	sse
	reverse_proxy {{.Upstream}}
}
`
	c := startCaddy(t, up, plain)
	for _, tc := range []struct {
		name   string
		sites  string
		mutate func(cfg map[string]any)
		want   string // a word of the warning; "" for none
	}{
		{name: "none", sites: plain},
		{
			name:  "write_timeout",
			sites: plain,
			mutate: func(cfg map[string]any) {
				servers(cfg, func(s map[string]any) { s["write_timeout"] = "30s" })
			},
			want: "write_timeout",
		},
		{
			name:  "write_min_rate",
			sites: plain,
			mutate: func(cfg map[string]any) {
				servers(cfg, func(s map[string]any) { s["write_min_rate"] = 1024 })
			},
			want: "write_min_rate",
		},
		{
			name: "response_buffers",
			sites: `
http://127.0.0.1:{{.HTTP}} {
	sse
	reverse_proxy {{.Upstream}} {
		response_buffers 4096
	}
}
`,
			want: "response_buffers",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logFile := filepath.Join(t.TempDir(), "caddy.log")
			loadLogged(t, c, tc.sites, logFile, tc.mutate)
			var warns []string
			for _, e := range readLog(t, logFile) {
				if e.Logger == "http.handlers.sse" && e.Level == "warn" {
					warns = append(warns, e.raw)
				}
			}
			switch {
			case tc.want == "" && len(warns) > 0:
				t.Errorf("warnings %q, want none", warns)
			case tc.want != "" && (len(warns) != 1 || !strings.Contains(warns[0], tc.want)):
				t.Errorf("warnings %q, want one that names %s", warns, tc.want)
			}
		})
	}
}

// Each stream's end is logged once, at DEBUG level, with its duration,
// bytes, events, heartbeats, reason, last event id and protocol; nothing is
// logged per event.
func TestStreamEndLogLine(t *testing.T) {
	const events = 50
	for _, tc := range []struct {
		name       string
		cancelPeer bool // the client goes away before the upstream ends
		wantReason string
	}{
		{name: "upstream ends", wantReason: "upstream"},
		{name: "client goes away", cancelPeer: true, wantReason: "client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			h := provisionTestHandler(t, new(Handler))
			useLogger(h, zap.New(core))

			reqCtx, cancelReq := context.WithCancel(context.Background())
			defer cancelReq()
			req := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(reqCtx)
			req.Header.Set("Accept", "text/event-stream")
			rec := httptest.NewRecorder()
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusOK)
				for i := 1; i <= events; i++ {
					if _, err := fmt.Fprintf(w, "id: %d\ndata: e\n\n", i); err != nil {
						return err
					}
				}
				if tc.cancelPeer {
					cancelReq()
					<-r.Context().Done()
					return r.Context().Err()
				}
				return nil
			})
			_ = h.ServeHTTP(rec, req, next)

			all := logs.All()
			if len(all) != 1 || all[0].Message != "stream ended" || all[0].Level != zapcore.DebugLevel {
				var msgs []string
				for _, e := range all {
					msgs = append(msgs, e.Level.String()+" "+e.Message)
				}
				t.Fatalf("log = %q, want one debug \"stream ended\" line", msgs)
			}
			f := all[0].ContextMap()
			want := map[string]any{
				"reason":        tc.wantReason,
				"bytes":         int64(rec.Body.Len()),
				"events":        int64(events),
				"heartbeats":    int64(0),
				"last_event_id": strconv.Itoa(events),
				"proto":         "HTTP/1.1",
			}
			for k, v := range want {
				if f[k] != v {
					t.Errorf("%s = %#v, want %#v", k, f[k], v)
				}
			}
			if d, ok := f["duration"].(time.Duration); !ok || d <= 0 {
				t.Errorf("duration = %#v, want a positive duration", f["duration"])
			}
		})
	}
}
