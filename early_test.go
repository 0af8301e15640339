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

// open_after through a real Caddy with encode and reverse_proxy: streams
// opened before a slow upstream answers, over HTTP/1.1 and HTTP/2; the
// upstream's answer after it (a stream, an error in each API's dialect, a
// failure); requests that do not ask for a stream, and fast upstreams,
// untouched; limits, metrics, access log and admin API.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/dialect"
	"github.com/caddy-sse/caddy-sse/internal/sseref"
)

// gatedUpstream answers each request (by its id query parameter) only
// once the test opens its gate: as an event stream of tokens, or with the
// status and body the path asks for.
type gatedUpstream struct {
	mu     sync.Mutex
	gates  map[string]chan struct{}
	seen   map[string]chan struct{}
	bodies map[string][32]byte // sha256 of each request's body as the upstream read it
}

func newGatedUpstream() *gatedUpstream {
	return &gatedUpstream{gates: map[string]chan struct{}{}, seen: map[string]chan struct{}{}, bodies: map[string][32]byte{}}
}

func (u *gatedUpstream) chans(id string) (gate, seen chan struct{}) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gates[id] == nil {
		u.gates[id], u.seen[id] = make(chan struct{}), make(chan struct{})
	}
	return u.gates[id], u.seen[id]
}

// open lets request id answer; it may be called again.
func (u *gatedUpstream) open(id string) {
	gate, _ := u.chans(id)
	u.mu.Lock()
	defer u.mu.Unlock()
	select {
	case <-gate:
	default:
		close(gate)
	}
}

// opened reports whether request id was let answer.
func (u *gatedUpstream) opened(id string) bool {
	gate, _ := u.chans(id)
	select {
	case <-gate:
		return true
	default:
		return false
	}
}

// openLater lets request id answer after d, so a test whose header never
// comes early fails instead of waiting for ever.
func (u *gatedUpstream) openLater(t *testing.T, id string, d time.Duration) {
	tm := time.AfterFunc(d, func() { u.open(id) })
	t.Cleanup(func() { tm.Stop() })
}

// arrived is closed once request id reached the upstream.
func (u *gatedUpstream) arrived(id string) <-chan struct{} {
	_, seen := u.chans(id)
	return seen
}

func (u *gatedUpstream) bodySum(id string) [32]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.bodies[id]
}

// gatedTokens is the event stream the upstream sends once its gate opens.
func gatedTokens(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "data: {\"token\":%d}\n\n", i)
	}
	return b.String()
}

// ServeHTTP: /stream answers a 200 event stream of 5 tokens with its own
// header fields (with hold, it ends once the test opens id+"/end"), and
// so do Gemini's :streamGenerateContent paths; /json answers 200
// application/json; /drop closes the connection without an answer. With
// fail=<code>, any path answers that status with the JSON body of the
// error query parameter.
func (u *gatedUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	gate, seen := u.chans(id)
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.bodies[id] = sha256.Sum256(body)
	u.mu.Unlock()
	close(seen)
	select {
	case <-gate:
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Set-Cookie", "session=up")
	w.Header().Set("X-Request-Id", "req-"+id)
	if fail := r.URL.Query().Get("fail"); fail != "" {
		var code int
		fmt.Sscan(fail, &code)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, r.URL.Query().Get("error"))
		return
	}
	switch p := r.URL.Path; {
	case p == "/stream" || strings.HasSuffix(p, ":streamGenerateContent"):
		streamHead(w)
		for _, ev := range strings.SplitAfter(gatedTokens(5), "\n\n") {
			if ev != "" && send(w, ev) != nil {
				return
			}
		}
		if r.URL.Query().Has("hold") { // until the test opens id's end
			end, _ := u.chans(id + "/end")
			select {
			case <-end:
			case <-r.Context().Done():
			}
		}
	case p == "/json":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"choices":[]}`)
	case p == "/drop":
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}
}

// earlySites is one site over HTTP and HTTPS: a header set before sse,
// encode, sse with the given block, and reverse_proxy to the upstream.
func earlySites(block string) string {
	return `
(site) {
	header X-Site before-sse
	encode gzip
	sse {
		heartbeat 200ms
` + block + `
	}
	reverse_proxy {{.Upstream}}
}
http://127.0.0.1:{{.HTTP}} {
	import site
}
https://localhost:{{.HTTPS}} {
	tls internal
	import site
}
`
}

// earlyRequest sends a request; the response returns once its header
// arrived.
func earlyRequest(t *testing.T, client *http.Client, method, url, body string, hdr ...string) *http.Response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	return do(t, client, method, url, rd, hdr...)
}

// earlyProtos are HTTP/1.1 and HTTP/2 to c.
func earlyProtos(c *testCaddy) []flushProto {
	return []flushProto{
		{"h1", h1Client(), c.BaseURL(), 1},
		{"h2", h2Client(), c.TLSURL(), 2},
	}
}

// An EventSource whose upstream is slow to answer gets sse's header and
// heartbeats while it waits, shows as waiting in the admin API, and then
// every event of the upstream's stream; the upstream's header fields are
// lost, the ones set before sse kept. The default opens it after the
// heartbeat interval.
func TestOpenEarlyEventSource(t *testing.T) {
	u := newGatedUpstream()
	logPath := filepath.Join(t.TempDir(), "access.log")
	c := startCaddy(t, startUpstream(t, u.ServeHTTP), strings.Replace(earlySites(""), "(site) {", fmt.Sprintf("(site) {\n\tlog {\n\t\toutput file %s\n\t\tformat json\n\t}", logPath), 1))
	before := scrapeMetrics(t, c)
	for _, p := range earlyProtos(c) {
		t.Run(p.name, func(t *testing.T) {
			id := "es-" + p.name
			u.openLater(t, id, 10*time.Second)
			res := earlyRequest(t, p.client, "GET", p.base+"/stream?hold&id="+id, "", "Accept", "text/event-stream")
			p.checkProto(t, res)
			if u.opened(id) {
				t.Fatal("the response header arrived only once the upstream answered")
			}
			if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("opened early: status %d, Content-Type %q; want 200 text/event-stream", res.StatusCode, res.Header.Get("Content-Type"))
			}
			if got := res.Header.Get("X-Site"); got != "before-sse" {
				t.Errorf("X-Site = %q: the fields set before sse ran must be in an early header", got)
			}
			if got := res.Header.Get("Cache-Control"); !strings.Contains(got, "no-transform") {
				t.Errorf("Cache-Control = %q, want no-transform", got)
			}
			ch := readChunks(res.Body)
			var got bytes.Buffer
			if !readUntil(t, ch, &got, ": heartbeat\n", 5*time.Second) {
				t.Fatalf("no heartbeat while the upstream was waiting; got %q", got.String())
			}
			var streams []streamStatus
			adminGet(t, c, "/sse/streams", &streams)
			if len(streams) != 1 || !streams[0].OpenedEarly || !streams[0].Waiting {
				t.Errorf("/sse/streams while the upstream waits = %+v, want one stream opened early and waiting", streams)
			}
			u.open(id)
			if !readUntil(t, ch, &got, gatedTokens(5), 5*time.Second) {
				t.Fatalf("the upstream's events did not follow: %q", got.String())
			}
			adminGet(t, c, "/sse/streams", &streams)
			if len(streams) != 1 || streams[0].Waiting {
				t.Errorf("/sse/streams after the upstream answered = %+v, want it no longer waiting", streams)
			}
			u.open(id + "/end")
			for range ch {
			}
			if res.Header.Get("Set-Cookie") != "" || res.Header.Get("X-Request-Id") != "" {
				t.Errorf("the upstream's header fields reached the client after an early open: %v", res.Header)
			}
			ev := sseref.Parse(got.Bytes()).Events
			if len(ev) != 5 || ev[0].Data != `{"token":0}` || ev[4].Data != `{"token":4}` {
				t.Errorf("events = %v, want the 5 tokens", ev)
			}
		})
	}
	after := waitStreamsEnded(t, c, before, 2)
	checkDeltas(t, before, after,
		d("caddy_sse_streams_opened_early_total", 2),
		d("caddy_sse_early_answers_total", 2, "answer", "stream"),
		d("caddy_sse_early_answers_total", 0, "answer", "error"))
	line := accessLogByPath(t, logPath)["/stream"]
	if line["sse_opened_early"] != true || line["sse_upstream_answer"] != "stream" || line["sse_upstream_status"] != float64(200) {
		t.Errorf("access log line = %v, want sse_opened_early, sse_upstream_answer stream, sse_upstream_status 200", line)
	}
}

// A fast upstream's answer is untouched with open_after set: its status
// and every header field, for an event stream and for a 204.
func TestOpenEarlyFastUpstreamUntouched(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Set-Cookie", "session=up")
		w.Header().Set("X-Request-Id", "fast")
		w.Header().Set("Access-Control-Allow-Origin", "https://app.test")
		if r.URL.Path == "/none" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		streamHead(w)
		send(w, "data: one\n\n")
	})
	c := startCaddy(t, up, earlySites("open_after 1s"))
	for _, p := range earlyProtos(c) {
		for _, path := range []string{"/stream", "/none"} {
			res := earlyRequest(t, p.client, "GET", p.base+path, "", "Accept", "text/event-stream")
			b, _ := io.ReadAll(res.Body)
			want := map[string]int{"/stream": 200, "/none": 204}[path]
			if res.StatusCode != want {
				t.Errorf("%s %s: status %d, want the upstream's %d", p.name, path, res.StatusCode, want)
			}
			for _, f := range []string{"Set-Cookie", "X-Request-Id", "Access-Control-Allow-Origin", "X-Site"} {
				if res.Header.Get(f) == "" {
					t.Errorf("%s %s: %s missing: %v", p.name, path, f, res.Header)
				}
			}
			if path == "/stream" && string(b) != "data: one\n\n" {
				t.Errorf("%s %s: body %q", p.name, path, b)
			}
		}
	}
}

// A POST that asks for a stream ("stream": true, or Gemini's
// :streamGenerateContent?alt=sse) is opened early and gets every token;
// its body reaches the upstream byte for byte. A "stream": false POST on
// the same route, one whose "stream" comes after the first 64 KiB, and
// one without an API's body get the upstream's answer untouched.
func TestOpenEarlyPOST(t *testing.T) {
	u := newGatedUpstream()
	c := startCaddy(t, startUpstream(t, u.ServeHTTP), earlySites("open_after 300ms"))
	big := strings.Repeat("x", dialect.MaxPrefix)
	for _, p := range earlyProtos(c) {
		for _, tc := range []struct {
			name, path, body string
			hdr              []string
			early            bool
		}{
			{"openai", "/stream", `{"stream":true,"model":"m","messages":[{"role":"user","content":"` + big + `"}]}`, nil, true},
			{"anthropic", "/stream", `{"model":"m","max_tokens":5,"stream":true}`, []string{"Anthropic-Version", "2023-06-01"}, true},
			{"gemini", "/v1beta/models/g:streamGenerateContent", `{"contents":[]}`, nil, true},
			{"stream false", "/json", `{"model":"m","stream":false}`, nil, false},
			{"stream too far", "/json", `{"messages":[{"content":"` + big + `"}],"stream":true}`, nil, false},
			{"form", "/json", `stream=true`, []string{"Content-Type", "application/x-www-form-urlencoded"}, false},
		} {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				id := strings.ReplaceAll(p.name+"-"+tc.name, " ", "-")
				url := p.base + tc.path + "?id=" + id
				if tc.name == "gemini" {
					url += "&alt=sse"
				}
				hdr := append([]string{"Content-Type", "application/json"}, tc.hdr...)
				if tc.early {
					u.openLater(t, id, 10*time.Second)
				} else {
					// the upstream answers well after open_after
					u.openLater(t, id, time.Second)
				}
				res := earlyRequest(t, p.client, "POST", url, tc.body, hdr...)
				if tc.early {
					if u.opened(id) {
						t.Fatal("the response header arrived only once the upstream answered")
					}
					if res.StatusCode != 200 || res.Header.Get("X-Request-Id") != "" || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
						t.Fatalf("status %d, header %v: want sse's own 200 event stream header", res.StatusCode, res.Header)
					}
					u.open(id)
				}
				b, err := io.ReadAll(res.Body)
				if err != nil {
					t.Fatalf("reading the body: %v", err)
				}
				if got, want := u.bodySum(id), sha256.Sum256([]byte(tc.body)); got != want {
					t.Errorf("the upstream got another body than the client sent")
				}
				if !tc.early {
					if res.Header.Get("X-Request-Id") != "req-"+id || res.Header.Get("Set-Cookie") == "" || res.Header.Get("Content-Type") != "application/json" || string(b) != `{"choices":[]}` {
						t.Errorf("not asking for a stream: got %d %v %q, want the upstream's answer untouched", res.StatusCode, res.Header, b)
					}
					return
				}
				ev := sseref.Parse(b).Events
				if len(ev) != 5 {
					t.Errorf("events = %v, want the 5 tokens", ev)
				}
			})
		}
	}
}

// After an early open, an answer that is not a stream reaches each
// client in its own dialect, with the upstream's status and message: an
// error event for the SDKs' APIs, a retry field for an EventSource; then
// the stream ends. A failed upstream (reverse_proxy's 502) the same.
func TestOpenEarlyErrors(t *testing.T) {
	u := newGatedUpstream()
	logPath := filepath.Join(t.TempDir(), "access.log")
	c := startCaddy(t, startUpstream(t, u.ServeHTTP), strings.Replace(earlySites("open_after 300ms"), "(site) {", fmt.Sprintf("(site) {\n\tlog {\n\t\toutput file %s\n\t\tformat json\n\t}", logPath), 1))
	before := scrapeMetrics(t, c)
	const (
		openaiErr    = `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`
		anthropicErr = `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`
		geminiErr    = `{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}`
	)
	q := url.QueryEscape
	for _, tc := range []struct {
		name, method, path, body string
		hdr                      []string
		want                     string // the body after sse's header, heartbeats aside
	}{
		{"openai 429", "POST", "/v1/chat/completions?fail=429&error=" + q(openaiErr), `{"stream":true}`, nil,
			string(dialect.ErrorEvent(dialect.OpenAI, 429, "application/json", []byte(openaiErr)))},
		{"anthropic 529", "POST", "/v1/messages?fail=529&error=" + q(anthropicErr), `{"stream":true}`, []string{"Anthropic-Version", "2023-06-01"},
			string(dialect.ErrorEvent(dialect.Anthropic, 529, "application/json", []byte(anthropicErr)))},
		{"gemini 503", "POST", "/v1beta/models/g:streamGenerateContent?alt=sse&fail=503&error=" + q(geminiErr), `{}`, nil,
			string(dialect.ErrorEvent(dialect.Gemini, 503, "application/json", []byte(geminiErr)))},
		{"openai json 200", "POST", "/json?", `{"stream":true}`, nil,
			string(dialect.ErrorEvent(dialect.OpenAI, 200, "application/json", []byte(`{"choices":[]}`)))},
		{"openai dropped", "POST", "/drop?", `{"stream":true}`, nil,
			string(dialect.ErrorEvent(dialect.OpenAI, 502, "", nil))},
		{"eventsource 503", "GET", "/events?fail=503", "", []string{"Accept", "text/event-stream"}, "retry: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := strings.ReplaceAll(tc.name, " ", "-")
			url := c.BaseURL() + tc.path + "&id=" + id
			u.openLater(t, id, 10*time.Second)
			res := earlyRequest(t, h1Client(), tc.method, url, tc.body, append([]string{"Content-Type", "application/json"}, tc.hdr...)...)
			if u.opened(id) || res.StatusCode != 200 {
				t.Fatalf("status %d: want sse's own 200 before the upstream answered", res.StatusCode)
			}
			u.open(id)
			b, _ := io.ReadAll(res.Body)
			// the SDKs' heartbeats are blank lines, the EventSource's comments
			rest := strings.TrimLeft(strings.ReplaceAll(string(b), ": heartbeat\n", ""), "\n")
			if tc.want == "retry: " {
				if r := sseref.Parse(b).Retries; len(r) != 1 || !strings.HasPrefix(rest, "retry: ") {
					t.Errorf("EventSource got %q, want a retry field and the end", b)
				}
				return
			}
			if rest != tc.want {
				t.Errorf("after the heartbeats got %q\nwant %q", rest, tc.want)
			}
		})
	}
	after := waitStreamsEnded(t, c, before, 6)
	checkDeltas(t, before, after, d("caddy_sse_early_answers_total", 6, "answer", "error"), d("caddy_sse_streams_ended_total", 1, "reason", "error"))
	line := accessLogByPath(t, logPath)["/v1/chat/completions"]
	if line["sse_opened_early"] != true || line["sse_upstream_answer"] != "error" || line["sse_upstream_status"] != float64(429) {
		t.Errorf("access log line = %v, want sse_opened_early, sse_upstream_answer error, sse_upstream_status 429", line)
	}
}

// A request from another origin is not opened early (its CORS fields come
// from the upstream, and a browser rejects a response without them),
// unless Access-Control-Allow-Origin was set before sse ran.
func TestOpenEarlyCrossOrigin(t *testing.T) {
	u := newGatedUpstream()
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "https://app.test")
		u.ServeHTTP(w, r)
	})
	c := startCaddy(t, up, `
http://127.0.0.1:{{.HTTP}} {
	sse {
		heartbeat 200ms
	}
	reverse_proxy {{.Upstream}}
}
http://localhost:{{.HTTP}} {
	header Access-Control-Allow-Origin *
	sse {
		heartbeat 200ms
	}
	reverse_proxy {{.Upstream}}
}
`)
	for _, tc := range []struct {
		name, host, origin string
		early              bool
	}{
		{"same origin", "127.0.0.1", "http://127.0.0.1:%d", true},
		{"other origin", "127.0.0.1", "https://app.test", false},
		{"other origin, CORS set before sse", "localhost", "https://app.test", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := strings.ReplaceAll(tc.name, " ", "-")
			origin := tc.origin
			if strings.Contains(origin, "%d") {
				origin = fmt.Sprintf(origin, c.HTTP)
			}
			if tc.early {
				u.openLater(t, id, 10*time.Second)
			} else {
				u.openLater(t, id, time.Second) // well after the heartbeat interval
			}
			res := earlyRequest(t, h1Client(), "GET", fmt.Sprintf("http://%s:%d/stream?id=%s", tc.host, c.HTTP, id), "",
				"Accept", "text/event-stream", "Origin", origin)
			early := !u.opened(id)
			u.open(id)
			b, _ := io.ReadAll(res.Body)
			if early != tc.early || early != (res.Header.Get("X-Request-Id") == "") {
				t.Errorf("opened early = %v, want %v (header %v)", early, tc.early, res.Header)
			}
			if tc.name != "same origin" && res.Header.Get("Access-Control-Allow-Origin") == "" {
				t.Errorf("no Access-Control-Allow-Origin: a browser would reject the stream")
			}
			if ev := sseref.Parse(b).Events; len(ev) != 5 {
				t.Errorf("events = %v, want the 5 tokens", ev)
			}
		})
	}
}

// Limits count a request that may be opened early before the upstream
// sees it: one over the limit is refused at once (the SDK's 503 with
// Retry-After, the EventSource's retry answer) and never reaches the
// upstream; the slot of an early stream is freed when it ends.
func TestOpenEarlyLimits(t *testing.T) {
	u := newGatedUpstream()
	c := startCaddy(t, startUpstream(t, u.ServeHTTP), `
http://127.0.0.1:{{.HTTP}} {
	sse {
		heartbeat 200ms
		open_after 200ms
		limit 1
	}
	reverse_proxy {{.Upstream}}
}
`)
	client := h1Client()
	u.openLater(t, "first", 10*time.Second)
	first := earlyRequest(t, client, "POST", c.BaseURL()+"/stream?hold&id=first", `{"stream":true}`, "Content-Type", "application/json")
	if u.opened("first") || first.StatusCode != 200 {
		t.Fatalf("first: status %d, want opened early", first.StatusCode)
	}
	second := earlyRequest(t, client, "POST", c.BaseURL()+"/stream?id=second", `{"stream":true}`, "Content-Type", "application/json")
	if second.StatusCode != http.StatusServiceUnavailable || second.Header.Get("Retry-After") == "" {
		t.Errorf("second over the limit: status %d, Retry-After %q; want 503 with Retry-After", second.StatusCode, second.Header.Get("Retry-After"))
	}
	es := earlyRequest(t, client, "GET", c.BaseURL()+"/stream?id=third", "", "Accept", "text/event-stream")
	limCheckRetryAnswer(t, es, defaultRetry)
	select {
	case <-u.arrived("second"):
		t.Error("a refused request reached the upstream")
	case <-u.arrived("third"):
		t.Error("a refused request reached the upstream")
	default:
	}
	u.open("first")
	u.open("first/end")
	if b, _ := io.ReadAll(first.Body); len(sseref.Parse(b).Events) != 5 {
		t.Errorf("first: %q, want the 5 tokens", b)
	}
	// the slot is free again: the next one is opened early too
	waitZoneEmpty(t, c)
	u.openLater(t, "fourth", 10*time.Second)
	res := earlyRequest(t, client, "POST", c.BaseURL()+"/stream?id=fourth", `{"stream":true}`, "Content-Type", "application/json")
	if u.opened("fourth") || res.StatusCode != 200 {
		t.Fatalf("after the first ended: status %d, want opened early", res.StatusCode)
	}
	u.open("fourth")
	if b, _ := io.ReadAll(res.Body); len(sseref.Parse(b).Events) != 5 {
		t.Errorf("fourth: %q, want the 5 tokens", b)
	}
}

// waitZoneEmpty waits until /sse/zones shows no open stream, at most 5s.
func waitZoneEmpty(t *testing.T, c *testCaddy) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var zones map[string]map[string]int
		adminGet(t, c, "/sse/zones", &zones)
		if len(zones) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("zones still hold streams: %v", zones)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not a guess
	}
}

// Upstreams that answer around open_after, so the timer and the
// upstream's header race: every response is either the upstream's,
// untouched, or sse's early stream continued by the upstream's; every
// token arrives, whichever won.
func TestOpenEarlyRace(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		delay, _ := time.ParseDuration(r.URL.Query().Get("delay"))
		select {
		case <-time.After(delay): // the upstream's slowness is the scenario
		case <-r.Context().Done():
			return
		}
		w.Header().Set("X-Request-Id", "up")
		streamHead(w)
		for _, ev := range strings.SplitAfter(gatedTokens(3), "\n\n") {
			if ev != "" && send(w, ev) != nil {
				return
			}
		}
	})
	c := startCaddy(t, up, earlySites("open_after 100ms"))
	rng := sseref.NewRand(19)
	var wg sync.WaitGroup
	var early, untouched sync.Map
	for w := range 4 {
		// upstreams well before open_after, around it, and well after
		delays := make([]time.Duration, 15)
		for i := range delays {
			delays[i] = []time.Duration{0, time.Duration(80+rng.IntN(40)) * time.Millisecond, 300 * time.Millisecond}[i%3]
		}
		wg.Go(func() {
			client := h1Client()
			for j, delay := range delays {
				i := w*100 + j
				url := fmt.Sprintf("%s/stream?delay=%s", c.BaseURL(), delay)
				res, err := client.Post(url, "application/json", strings.NewReader(`{"stream":true}`))
				if err != nil {
					t.Errorf("request %d: %v", i, err)
					return
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if ev := sseref.Parse(b).Events; len(ev) != 3 || ev[2].Data != `{"token":2}` {
					t.Errorf("request %d (upstream after %s): %q, want the 3 tokens", i, delay, b)
				}
				if res.Header.Get("X-Request-Id") == "up" {
					untouched.Store(i, true)
				} else {
					early.Store(i, true)
				}
			}
		})
	}
	wg.Wait()
	count := func(m *sync.Map) (n int) {
		m.Range(func(any, any) bool { n++; return true })
		return n
	}
	if e, u := count(&early), count(&untouched); e == 0 || u == 0 {
		t.Errorf("opened early: %d, untouched: %d; want both", e, u)
	}
}

// An upstream's 1xx (103 Early Hints) is an answer: it passes to the
// client, and the response is the upstream's, untouched, however late
// its final header comes.
func TestOpenEarlyInformational(t *testing.T) {
	u := newGatedUpstream()
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		u.ServeHTTP(w, r)
	})
	c := startCaddy(t, up, earlySites("open_after 100ms"))
	var hints []int
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
			hints = append(hints, code)
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", c.BaseURL()+"/stream?id=hints", nil)
	req.Header.Set("Accept", "text/event-stream")
	u.openLater(t, "hints", time.Second) // well after open_after
	res, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if len(hints) != 1 || hints[0] != http.StatusEarlyHints {
		t.Errorf("1xx responses = %v, want the upstream's 103", hints)
	}
	if res.Header.Get("X-Request-Id") != "req-hints" || len(sseref.Parse(b).Events) != 5 {
		t.Errorf("header %v, body %q: want the upstream's response, untouched", res.Header, b)
	}
}
