package caddysse

// Integration tests through a real in-process Caddy, with real encode (gzip
// and zstd), sse and reverse_proxy to a real streaming upstream, over
// HTTP/1.1, HTTP/2 and HTTP/3 (issue 2).

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// flushUpstream is the streaming upstream of these tests. Requests carry an
// id query parameter; gate(id) is the channel a gated stream waits on
// before each event after the first, so the test decides when the next
// event is written.
type flushUpstream struct {
	mu    sync.Mutex
	gates map[string]chan struct{}
	ae    map[string]string       // Accept-Encoding seen, by id
	wrote map[string]*atomic.Bool // the first event was written, by id
}

func newFlushUpstream() *flushUpstream {
	return &flushUpstream{
		gates: make(map[string]chan struct{}),
		ae:    make(map[string]string),
		wrote: make(map[string]*atomic.Bool),
	}
}

func (u *flushUpstream) gate(id string) chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gates[id] == nil {
		u.gates[id] = make(chan struct{})
	}
	return u.gates[id]
}

func (u *flushUpstream) wroteFirst(id string) *atomic.Bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.wrote[id] == nil {
		u.wrote[id] = new(atomic.Bool)
	}
	return u.wrote[id]
}

func (u *flushUpstream) acceptEncoding(id string) (string, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	v, ok := u.ae[id]
	return v, ok
}

// wait blocks until the test opens the gate or the request ends.
func (u *flushUpstream) wait(r *http.Request) bool {
	select {
	case <-u.gate(r.URL.Query().Get("id")):
		return true
	case <-r.Context().Done():
		return false
	}
}

// Events, bodies and lines the upstream sends.
var (
	bigEvent  = "data: " + strings.Repeat("compress me, compress me. ", 160) + "\n\n"
	plainBody = strings.Repeat("plain text compresses well. ", 300)
	// each line is longer than encode's minimum_length (512), so encode
	// decides to compress on the first write when it may
	ndLines = []string{
		`{"n":1,"text":"` + strings.Repeat("a", 1000) + `"}` + "\n",
		`{"n":2,"text":"` + strings.Repeat("b", 1000) + `"}` + "\n",
		`{"n":3,"text":"` + strings.Repeat("c", 1000) + `"}` + "\n",
	}
)

func stepEvent(i int) string { return fmt.Sprintf("id: %d\ndata: step %d\n\n", i, i) }

func (u *flushUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	u.mu.Lock()
	u.ae[id] = r.Header.Get("Accept-Encoding")
	u.mu.Unlock()
	switch path := r.URL.Path; {
	case path == "/steps":
		streamHead(w)
		for i := 1; i <= 3; i++ {
			if i > 1 && !u.wait(r) {
				return
			}
			if send(w, stepEvent(i)) != nil {
				return
			}
		}
	case path == "/slowhead":
		streamHead(w)
		select {
		case <-u.gate(id):
		case <-time.After(2 * time.Second): // the slow upstream of the contract
		case <-r.Context().Done():
			return
		}
		u.wroteFirst(id).Store(true)
		send(w, "data: first\n\n")
	case path == "/big":
		streamHead(w)
		send(w, bigEvent)
	case path == "/plain":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, plainBody)
	case path == "/hop":
		streamHead(w,
			"Keep-Alive", "timeout=5",
			"Proxy-Connection", "keep-alive",
			"Upgrade", "h2c",
			"Te", "gzip",
			"Connection", "X-Hop",
			"X-Hop", "1")
		send(w, "data: hop\n\n")
	case path == "/cc":
		body := "data: a\n\n"
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "private, max-age=0")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		io.WriteString(w, body)
	case path == "/ndjson":
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		for i, line := range ndLines {
			if i > 0 && r.URL.Query().Get("gated") != "" && !u.wait(r) {
				return
			}
			if send(w, line) != nil {
				return
			}
		}
	case strings.HasPrefix(path, "/header_down/"):
		streamHead(w)
		send(w, "data: down\n\n")
	default:
		http.NotFound(w, r)
	}
}

// flushSites is the site of these tests, on plain HTTP (HTTP/1.1) and on
// HTTPS (HTTP/2, HTTP/3): encode gzip zstd, sse, and three producers of
// event streams: reverse_proxy, reverse_proxy with header_down re-adding
// hop-by-hop fields, and respond with header setting Keep-Alive. With
// withSSE false, the same site without sse, as stock Caddy serves it.
func flushSites(withSSE bool) string {
	sse := "\tsse\n"
	if !withSSE {
		sse = ""
	}
	return `
(site) {
	encode gzip zstd
` + sse + `	handle /respond {
		header Keep-Alive "timeout=5"
		header Content-Type text/event-stream
		respond <<BODY
			data: from respond


			BODY 200
	}
	handle /header_down/* {
		reverse_proxy {{.Upstream}} {
			header_down Keep-Alive "timeout=5"
			header_down Proxy-Connection keep-alive
			header_down Upgrade h2c
			header_down Te gzip
			header_down Connection "X-Hop, Alt-Svc"
			header_down X-Hop 1
		}
	}
	handle {
		reverse_proxy {{.Upstream}}
	}
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

// startFlushCaddy starts the upstream and Caddy with flushSites.
func startFlushCaddy(t *testing.T) (*testCaddy, *flushUpstream) {
	t.Helper()
	u := newFlushUpstream()
	c := startCaddy(t, startUpstream(t, u.ServeHTTP), flushSites(true))
	return c, u
}

// flushProto is one protocol to reach the site with.
type flushProto struct {
	name   string
	client *http.Client
	base   string
	major  int
}

func flushProtos(t *testing.T, c *testCaddy) []flushProto {
	return []flushProto{
		{"h1", h1Client(), c.BaseURL(), 1},
		{"h2", h2Client(), c.TLSURL(), 2},
		{"h3", h3Client(t), c.TLSURL(), 3},
	}
}

// checkProto fails the test if res did not use p's protocol.
func (p flushProto) checkProto(t *testing.T, res *http.Response) {
	t.Helper()
	if res.ProtoMajor != p.major {
		t.Fatalf("response over %s, want HTTP/%d", res.Proto, p.major)
	}
}

// Every event reaches the client before the upstream writes the next one,
// over HTTP/1.1, HTTP/2 and HTTP/3, through encode with a client that
// accepts gzip and zstd: nothing on the way buffers the stream.
func TestEventsArriveOneByOne(t *testing.T) {
	c, u := startFlushCaddy(t)
	for _, p := range flushProtos(t, c) {
		t.Run(p.name, func(t *testing.T) {
			id := "steps-" + p.name
			res := get(t, p.client, p.base+"/steps?id="+id,
				"Accept", "text/event-stream", "Accept-Encoding", "gzip, zstd")
			p.checkProto(t, res)
			if ce := res.Header.Get("Content-Encoding"); ce != "" {
				t.Fatalf("Content-Encoding = %q, want none", ce)
			}
			chunks := readChunks(res.Body)
			var got bytes.Buffer
			for i := 1; i <= 3; i++ {
				if i > 1 {
					// the upstream writes event i only now
					select {
					case u.gate(id) <- struct{}{}:
					case <-time.After(10 * time.Second):
						t.Fatalf("upstream did not wait for event %d", i)
					}
				}
				if !readUntil(t, chunks, &got, stepEvent(i), 10*time.Second) {
					t.Fatalf("event %d did not arrive before the upstream wrote the next; got %q", i, got.String())
				}
			}
			if want := stepEvent(1) + stepEvent(2) + stepEvent(3); got.String() != want {
				t.Errorf("body = %q, want %q", got.String(), want)
			}
		})
	}
}

// The response header reaches the client at once, while the upstream is
// still waiting (2 s) before its first event, so EventSource's open fires
// and the client knows the stream is up.
func TestHeadersArriveBeforeFirstEvent(t *testing.T) {
	c, u := startFlushCaddy(t)
	for _, p := range flushProtos(t, c) {
		t.Run(p.name, func(t *testing.T) {
			id := "slowhead-" + p.name
			res := get(t, p.client, p.base+"/slowhead?id="+id, "Accept", "text/event-stream")
			if u.wroteFirst(id).Load() {
				t.Fatal("the response header arrived only after the upstream wrote its first event")
			}
			p.checkProto(t, res)
			if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("Content-Type = %q, want text/event-stream", ct)
			}
			close(u.gate(id))
			var got bytes.Buffer
			if !readUntil(t, readChunks(res.Body), &got, "data: first\n\n", 10*time.Second) {
				t.Fatalf("body = %q, want the first event", got.String())
			}
		})
	}
}

// No event stream is ever compressed by encode, whatever compression the
// client accepts (gzip, zstd, br or all of them), for EventSource-style GETs
// and for fetch-style POSTs that do not ask for text/event-stream, on every
// protocol. An EventSource-style request reaches the upstream without an
// Accept-Encoding offering compression. A response that is not a stream,
// on the same site, is still compressed.
func TestStreamsNeverCompressed(t *testing.T) {
	c, u := startFlushCaddy(t)
	encodings := []string{"gzip", "zstd", "br", "gzip, deflate, br, zstd"}
	for _, p := range flushProtos(t, c) {
		for _, ae := range encodings {
			for _, style := range []string{"eventsource", "fetch"} {
				name := p.name + "/" + style + "/" + ae
				t.Run(name, func(t *testing.T) {
					target := p.base + "/big?id=" + url.QueryEscape(name)
					var res *http.Response
					if style == "eventsource" {
						res = get(t, p.client, target,
							"Accept", "text/event-stream", "Accept-Encoding", ae)
					} else {
						res = do(t, p.client, http.MethodPost, target,
							strings.NewReader(`{"prompt":"hi"}`),
							"Content-Type", "application/json", "Accept-Encoding", ae)
					}
					p.checkProto(t, res)
					if res.StatusCode != http.StatusOK {
						t.Fatalf("status = %s, want 200", res.Status)
					}
					if ce := res.Header.Get("Content-Encoding"); ce != "" {
						t.Errorf("Content-Encoding = %q, want none", ce)
					}
					body, err := io.ReadAll(res.Body)
					if err != nil {
						t.Fatalf("reading body: %v", err)
					}
					if string(body) != bigEvent {
						t.Errorf("body = %d bytes starting %q, want the event as sent (%d bytes)",
							len(body), body[:min(len(body), 20)], len(bigEvent))
					}
					if style == "eventsource" {
						seen, ok := u.acceptEncoding(name)
						if !ok {
							t.Fatal("the request did not reach the upstream")
						}
						if seen != "" && seen != "identity" {
							t.Errorf("upstream got Accept-Encoding %q, want none (or identity)", seen)
						}
					}
				})
			}
		}
	}
	t.Run("non-stream still gzipped", func(t *testing.T) {
		res := get(t, h1Client(), c.BaseURL()+"/plain", "Accept-Encoding", "gzip")
		if ce := res.Header.Get("Content-Encoding"); ce != "gzip" {
			t.Fatalf("Content-Encoding = %q, want gzip", ce)
		}
		if got := gunzipString(t, res.Body); got != plainBody {
			t.Errorf("decoded body = %d bytes, want %d", len(got), len(plainBody))
		}
	})
	t.Run("control: without sse encode compresses the stream", func(t *testing.T) {
		c.load(t, flushSites(false))
		res := get(t, h1Client(), c.BaseURL()+"/big", "Accept", "text/event-stream", "Accept-Encoding", "gzip")
		if ce := res.Header.Get("Content-Encoding"); ce != "gzip" {
			t.Fatalf("Content-Encoding = %q, want gzip: the test above would prove nothing", ce)
		}
		if got := gunzipString(t, res.Body); got != bigEvent {
			t.Errorf("decoded body = %d bytes, want %d", len(got), len(bigEvent))
		}
	})
}

// gunzipString decodes a gzip body.
func gunzipString(t *testing.T, body io.Reader) string {
	t.Helper()
	zr, err := gzip.NewReader(body)
	if err != nil {
		t.Fatalf("gzip: %v", err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gzip: %v", err)
	}
	return string(b)
}

// strippedHopFields are the hop-by-hop fields the tests put on streams.
var strippedHopFields = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Upgrade", "Te", "X-Hop"}

// A stream reaches the client without hop-by-hop fields over HTTP/1.1,
// HTTP/2 and HTTP/3, whether the upstream set them, header_down re-added
// them, or header set them on a stream that respond produced; Caddy's own
// Alt-Svc stays, even when Connection names it. HTTP/2 and HTTP/3 clients
// (curl, quic-go) then accept the stream; without sse they fail.
func TestHopByHopFieldsStripped(t *testing.T) {
	c, _ := startFlushCaddy(t)
	sources := []struct {
		name, path, event string
	}{
		{"set by upstream", "/hop", "data: hop\n\n"},
		{"re-added by header_down", "/header_down/stream", "data: down\n\n"},
		{"set by header on respond", "/respond", "data: from respond\n\n"},
	}
	for _, p := range flushProtos(t, c) {
		for _, src := range sources {
			t.Run(p.name+"/"+src.name, func(t *testing.T) {
				req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, p.base+src.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Accept", "text/event-stream")
				res, err := p.client.Do(req)
				if err != nil {
					t.Fatalf("GET %s: %v", src.path, err)
				}
				defer res.Body.Close()
				p.checkProto(t, res)
				for _, name := range strippedHopFields {
					if v, ok := res.Header[name]; ok {
						t.Errorf("%s: %q reached the client", name, v)
					}
				}
				// Caddy advertises HTTP/3 on HTTP/2 responses (not over
				// HTTP/3 itself, nor on plain HTTP)
				if p.major == 2 && res.Header.Get("Alt-Svc") == "" {
					t.Errorf("Alt-Svc is gone; header %v", res.Header)
				}
				body, err := io.ReadAll(res.Body)
				if err != nil {
					t.Fatalf("reading body: %v", err)
				}
				if !strings.Contains(string(body), src.event) {
					t.Errorf("body = %q, want %q", body, src.event)
				}
			})
		}
	}
	for _, src := range sources {
		t.Run("curl-h2/"+src.name, func(t *testing.T) {
			out, stderr, err := curlHTTP2(t, curlPath(t), c, src.path)
			if err != nil {
				t.Fatalf("curl --http2: %v: %s", err, stderr)
			}
			if !strings.Contains(out, src.event) {
				t.Errorf("curl got %q, want %q", out, src.event)
			}
		})
	}

	// The control: stock Caddy sends Keep-Alive on HTTP/2 and HTTP/3,
	// and both clients fail, which is what the tests above guard against.
	c.load(t, flushSites(false))
	t.Run("control without sse/h3 rejects the response", func(t *testing.T) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, c.TLSURL()+"/respond", nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := h3Client(t).Do(req)
		if err == nil {
			res.Body.Close()
			t.Fatalf("HTTP/3 without sse: got %s, want an invalid header field error", res.Status)
		}
		if !strings.Contains(err.Error(), `invalid header field name: "keep-alive"`) {
			t.Errorf("HTTP/3 without sse: error %q, want an invalid header field name error for keep-alive", err)
		}
	})
	t.Run("control without sse/curl h2 fails", func(t *testing.T) {
		_, stderr, err := curlHTTP2(t, curlPath(t), c, "/respond")
		if err == nil {
			t.Fatal("curl --http2 without sse succeeded, want PROTOCOL_ERROR")
		}
		if !strings.Contains(stderr, "PROTOCOL_ERROR") {
			t.Errorf("curl --http2 without sse: %v: %q, want PROTOCOL_ERROR", err, stderr)
		}
	})
}

// curlPath returns curl's path. Without curl the test fails in CI
// (CI=true) and is skipped elsewhere.
func curlPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/curl", "curl"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("curl not found; CI must install it")
	}
	t.Skip("curl not found")
	return ""
}

// curlHTTP2 fetches path from the HTTPS site with curl over HTTP/2.
func curlHTTP2(t *testing.T, curl string, c *testCaddy, path string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, curl, "-sS", "-N", "--http2", "-k",
		"--resolve", fmt.Sprintf("localhost:%d:127.0.0.1", c.HTTPS),
		c.TLSURL()+path)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// The next hop is told not to buffer or transform a stream: Cache-Control
// gains no-cache and no-transform (what the producer set is kept),
// X-Accel-Buffering is no, and no Content-Length goes on the wire, even
// when the producer set one.
func TestStreamHeaderOnTheWire(t *testing.T) {
	c, _ := startFlushCaddy(t)
	for _, p := range flushProtos(t, c) {
		for _, tc := range []struct {
			name, path, cacheControl, body string
		}{
			{"upstream", "/cc", "private, max-age=0, no-cache, no-transform", "data: a\n\n"},
			{"respond", "/respond", "no-cache, no-transform", "data: from respond\n\n"},
		} {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				res := get(t, p.client, p.base+tc.path, "Accept-Encoding", "gzip")
				p.checkProto(t, res)
				if got := res.Header.Values("Cache-Control"); len(got) != 1 || got[0] != tc.cacheControl {
					t.Errorf("Cache-Control = %q, want %q", got, tc.cacheControl)
				}
				if got := res.Header.Values("X-Accel-Buffering"); len(got) != 1 || got[0] != "no" {
					t.Errorf("X-Accel-Buffering = %q, want no", got)
				}
				if v, ok := res.Header["Content-Length"]; ok || res.ContentLength != -1 {
					t.Errorf("Content-Length = %q (length %d), want none", v, res.ContentLength)
				}
				body, err := io.ReadAll(res.Body)
				if err != nil {
					t.Fatalf("reading body: %v", err)
				}
				if string(body) != tc.body {
					t.Errorf("body = %q, want %q", body, tc.body)
				}
			})
		}
	}
}

// Extra streaming media types (types application/x-ndjson) get the stream
// treatment: every write is flushed at once and encode does not compress
// them. Without types, the same ndjson response is compressed by an encode
// that matches it.
func TestExtraTypesStreamed(t *testing.T) {
	sites := func(sse string) string {
		return `
http://127.0.0.1:{{.HTTP}} {
	encode gzip zstd {
		match {
			header Content-Type text/*
			header Content-Type application/x-ndjson*
		}
	}
	` + sse + `
	reverse_proxy {{.Upstream}}
}
`
	}
	typed := sites("sse {\n\t\ttypes application/x-ndjson\n\t}")
	u := newFlushUpstream()
	c := startCaddy(t, startUpstream(t, u.ServeHTTP), typed)

	t.Run("with types", func(t *testing.T) {
		res := do(t, h1Client(), http.MethodPost, c.BaseURL()+"/ndjson?gated=1&id=nd",
			strings.NewReader(`{"prompt":"hi"}`), "Accept-Encoding", "gzip, zstd")
		if ce := res.Header.Get("Content-Encoding"); ce != "" {
			t.Fatalf("Content-Encoding = %q, want none", ce)
		}
		if got := res.Header.Get("X-Accel-Buffering"); got != "no" {
			t.Errorf("X-Accel-Buffering = %q, want no", got)
		}
		chunks := readChunks(res.Body)
		var got bytes.Buffer
		for i, line := range ndLines {
			if i > 0 {
				select {
				case u.gate("nd") <- struct{}{}:
				case <-time.After(10 * time.Second):
					t.Fatalf("upstream did not wait for line %d", i+1)
				}
			}
			if !readUntil(t, chunks, &got, line, 10*time.Second) {
				t.Fatalf("line %d did not arrive before the upstream wrote the next; got %q", i+1, got.String())
			}
		}
	})
	t.Run("without types", func(t *testing.T) {
		c.load(t, sites("sse"))
		res := do(t, h1Client(), http.MethodPost, c.BaseURL()+"/ndjson",
			strings.NewReader(`{"prompt":"hi"}`), "Accept-Encoding", "gzip")
		if ce := res.Header.Get("Content-Encoding"); ce != "gzip" {
			t.Fatalf("Content-Encoding = %q, want gzip", ce)
		}
		if got, want := gunzipString(t, res.Body), strings.Join(ndLines, ""); got != want {
			t.Errorf("decoded body = %q, want %q", got, want)
		}
	})
}
