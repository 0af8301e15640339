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

package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

const (
	testIdle      = time.Second
	testHeartbeat = 300 * time.Millisecond
	testBuffer    = 4096
)

// TestDemo runs the demo's two chains with short durations and checks what
// the page shows: through stock Caddy and the hop, events wait in the hop
// until its buffer is full, and the stream is cut after the idle period,
// dropping what the hop held; through Caddy with sse and the hop, each
// event arrives before the backend sends the next, heartbeats arrive in
// the quiet stretch, and the stream outlives the idle period. It also
// checks the response header on both sides of the hop, and that the demo
// writes nothing to the home directory and leaves nothing running.
func TestDemo(t *testing.T) {
	home := isolateHome(t)
	autosaveExisted := exists(caddy.ConfigAutosavePath)
	before := goroutineIDs()

	d, err := start(t.Context(), settings{
		addr:      "127.0.0.1:0",
		idle:      testIdle,
		bufSize:   testBuffer,
		heartbeat: testHeartbeat,
	})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	addrs := []string{d.backendAddr, d.stock.caddy, d.sse.caddy, hostOf(t, d.stock.URL), hostOf(t, d.sse.URL), hostOf(t, d.pageURL)}
	for _, a := range addrs {
		if !strings.HasPrefix(a, "127.0.0.1:") {
			t.Errorf("listener on %s, want 127.0.0.1 only", a)
		}
	}
	t.Cleanup(func() {
		client.CloseIdleConnections()
		d.close()
		checkClosed(t, addrs)
		checkNoGoroutines(t, before)
		if entries, err := os.ReadDir(home); err != nil || len(entries) > 0 {
			t.Errorf("the demo wrote to the home directory: %v %v", names(entries), err)
		}
		if !autosaveExisted && exists(caddy.ConfigAutosavePath) {
			t.Errorf("Caddy autosaved its config to %s", caddy.ConfigAutosavePath)
		}
	})

	t.Run("StockHeldUntilCut", func(t *testing.T) { testStockHeldUntilCut(t, d, client) })
	t.Run("StockWholeBuffersOnly", func(t *testing.T) { testStockWholeBuffers(t, d, client) })
	t.Run("SSELive", func(t *testing.T) { testSSELive(t, d, client) })
	t.Run("Page", func(t *testing.T) { testPage(t, d, client) })
}

// testStockHeldUntilCut: a few events, less than a buffer, reach the stock
// chain's hop; the client gets nothing, not even the response header,
// until the hop cuts the stream after the idle period, and then no event:
// the hop drops what it held, as nginx does.
func testStockHeldUntilCut(t *testing.T, d *demo, client *http.Client) {
	from := d.feed.lastSeq() + 1
	for i := range 3 {
		d.feed.publish(1, " token"+strconv.Itoa(i), false)
	}
	cutsBefore := d.stock.hop.cuts.Load()
	began := time.Now()
	res := get(t, client, d.stock.URL, from-1)
	defer res.Body.Close()
	if cuts := d.stock.hop.cuts.Load(); cuts != cutsBefore+1 {
		t.Errorf("the response header arrived before the hop cut the stream (cuts %d, want %d): the hop did not hold it", cuts, cutsBefore+1)
	}
	body, err := io.ReadAll(res.Body)
	if len(body) != 0 {
		t.Errorf("got %d body bytes, want none: the hop passed on what it should hold (or sent it at the cut)", len(body))
	}
	if err == nil {
		t.Error("the body ended cleanly, want it cut (an incomplete chunked body)")
	}
	if since := time.Since(began); since < testIdle {
		t.Errorf("stream ended %v after the request, before the hop's idle timeout %v", since, testIdle)
	}
	checkStockHeader(t, d, res.Header)
}

// testStockWholeBuffersOnly: many events, more than a buffer once
// compressed; the client gets whole buffers only, and the events in the
// last, partial buffer never reach it.
func testStockWholeBuffers(t *testing.T, d *demo, client *http.Client) {
	const n = 400
	from := d.feed.lastSeq() + 1
	// tokens that compress poorly: the hop reads these events in a few
	// large pieces, which gzip well when they look alike
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		d.feed.publish(2, fmt.Sprintf(" %016x%016x", rnd.Uint64(), rnd.Uint64()), i == n-1)
	}
	cutsBefore := d.stock.hop.cuts.Load()
	res := get(t, client, d.stock.URL, from-1)
	defer res.Body.Close()
	checkStockHeader(t, d, res.Header)
	body, err := io.ReadAll(res.Body)
	if err == nil {
		t.Error("the body ended cleanly, want it cut after the idle period")
	}
	if cuts := d.stock.hop.cuts.Load(); cuts != cutsBefore+1 {
		t.Errorf("the hop cut %d streams, want 1", cuts-cutsBefore)
	}
	if len(body) == 0 || len(body)%testBuffer != 0 {
		t.Fatalf("got %d body bytes, want a positive multiple of the hop's %d-byte buffer", len(body), testBuffer)
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	text, err := io.ReadAll(zr)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("decompressing what the hop sent: %v, want an unexpected EOF (a stream cut short)", err)
	}
	var ids []int64
	for ev := range strings.SplitSeq(string(text), "\n\n") {
		if id, ok := strings.CutPrefix(ev, "id: "); ok {
			if nl := strings.IndexByte(id, '\n'); nl >= 0 && strings.Contains(ev, "\ndata: ") {
				v, _ := strconv.ParseInt(id[:nl], 10, 64)
				ids = append(ids, v)
			}
		}
	}
	if len(ids) == 0 || len(ids) >= n {
		t.Fatalf("the client got %d of the %d events, want some but not all: the last buffer must stay in the hop", len(ids), n)
	}
	for i, id := range ids {
		if id != from+int64(i) {
			t.Fatalf("event %d has id %d, want %d", i, id, from+int64(i))
		}
	}
	t.Logf("stock: %d of %d events arrived, in %d bytes (%d buffers); the rest was dropped at the cut", len(ids), n, len(body), len(body)/testBuffer)
}

// checkStockHeader checks the stock chain's header before and after the
// hop: Caddy compresses the stream and sends Keep-Alive; the hop forwards
// Content-Encoding and drops Keep-Alive, as nginx does.
func checkStockHeader(t *testing.T, d *demo, got http.Header) {
	t.Helper()
	fromCaddy := d.stock.hop.stats().FromCaddy
	if v := fromCaddy.Get("Content-Encoding"); v != "gzip" {
		t.Errorf("stock Caddy sent Content-Encoding %q, want gzip", v)
	}
	if v := fromCaddy.Get("Keep-Alive"); v != "timeout=5" {
		t.Errorf("stock Caddy sent Keep-Alive %q, want timeout=5", v)
	}
	if v := fromCaddy.Get("X-Accel-Buffering"); v != "" {
		t.Errorf("stock Caddy sent X-Accel-Buffering %q, want none", v)
	}
	if v := got.Get("Content-Encoding"); v != "gzip" {
		t.Errorf("through the hop, Content-Encoding %q, want gzip", v)
	}
	if v := got.Get("Keep-Alive"); v != "" {
		t.Errorf("through the hop, Keep-Alive %q, want none (nginx drops it)", v)
	}
}

// testSSELive: through Caddy with sse, each event reaches the client
// before the backend publishes the next; in a quiet stretch three times
// the hop's idle timeout, heartbeats arrive and the stream is not cut; an
// event after it arrives on the same connection.
func testSSELive(t *testing.T, d *demo, client *http.Client) {
	from := d.feed.lastSeq() + 1
	cutsBefore := d.sse.hop.cuts.Load()
	res := get(t, client, d.sse.URL, from-1)
	r := readSSE(t, res.Body)

	fromCaddy := d.sse.hop.stats().FromCaddy
	for _, f := range []string{"Content-Encoding", "Keep-Alive"} {
		if v := fromCaddy.Get(f); v != "" {
			t.Errorf("Caddy + sse sent %s %q, want none", f, v)
		}
		if v := res.Header.Get(f); v != "" {
			t.Errorf("through the hop, %s %q, want none", f, v)
		}
	}
	if v := fromCaddy.Get("X-Accel-Buffering"); v != "no" {
		t.Errorf("Caddy + sse sent X-Accel-Buffering %q, want no", v)
	}
	if v := res.Header.Get("X-Accel-Buffering"); v != "" {
		t.Errorf("through the hop, X-Accel-Buffering %q, want none (the hop consumes it)", v)
	}
	if v := res.Header.Get("Cache-Control"); !strings.Contains(v, "no-transform") {
		t.Errorf("through the hop, Cache-Control %q, want no-transform in it", v)
	}

	// each event is published only after the client saw the one before
	for i := range 5 {
		seq := d.feed.publish(3, " token"+strconv.Itoa(i), false)
		r.waitEvent(t, seq)
	}
	quietFrom := time.Now()
	beats := 0
	for time.Since(quietFrom) < 3*testIdle {
		it := r.next(t)
		if it.err != nil {
			t.Fatalf("stream ended %v into the quiet stretch, after %d heartbeats: %v", time.Since(quietFrom), beats, it.err)
		}
		if it.id != 0 {
			t.Fatalf("unexpected event %d in the quiet stretch", it.id)
		}
		beats++
	}
	if beats < 3 {
		t.Errorf("got %d heartbeats in a %v quiet stretch, want at least 3", beats, 3*testIdle)
	}
	seq := d.feed.publish(3, " after", true)
	r.waitEvent(t, seq)
	if cuts := d.sse.hop.cuts.Load(); cuts != cutsBefore {
		t.Errorf("the hop cut %d sse streams, want none", cuts-cutsBefore)
	}
}

// testPage: the page, its config and its status are served.
func testPage(t *testing.T, d *demo, client *http.Client) {
	for _, path := range []string{"", "config.json", "status.json"} {
		res, err := client.Get(d.pageURL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("GET /%s: %d %v", path, res.StatusCode, err)
		}
		switch path {
		case "":
			if !bytes.Contains(b, []byte("EventSource")) {
				t.Errorf("the page has no EventSource")
			}
		case "config.json":
			var c pageConfig
			if err := json.Unmarshal(b, &c); err != nil {
				t.Fatal(err)
			}
			if len(c.Sides) != 2 || strings.Contains(c.Sides[0].Site, "sse") || !strings.Contains(c.Sides[1].Site, "heartbeat 300ms") {
				t.Errorf("config.json: %s", b)
			}
		case "status.json":
			var s pageStatus
			if err := json.Unmarshal(b, &s); err != nil {
				t.Fatal(err)
			}
			if s.Hops["stock"].FromCaddy.Get("Content-Encoding") != "gzip" || s.Hops["sse"].FromCaddy.Get("X-Accel-Buffering") != "no" {
				t.Errorf("status.json hops: %+v", s.Hops)
			}
		}
	}
}

// get opens a stream the way a browser's EventSource does after
// receiving event lastID, with a browser's Accept-Encoding. The stream
// fails after 20 idle periods: a hop that never cuts fails the test
// instead of hanging it.
func get(t *testing.T, client *http.Client, base string, lastID int64) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeoutCause(t.Context(), 20*testIdle, errors.New("no response, or no end of it, in 20 idle periods"))
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("Last-Event-ID", strconv.FormatInt(lastID, 10))
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%v (%v)", err, context.Cause(ctx))
	}
	if res.StatusCode != http.StatusOK {
		res.Body.Close()
		t.Fatalf("status %d", res.StatusCode)
	}
	return res
}

// item is one thing read from a stream: an event (id > 0), a comment (id
// 0), or the end (err).
type item struct {
	id  int64
	err error
}

type sseReader struct {
	items chan item
}

// readSSE parses body in a goroutine that ends, and closes body, when the
// test ends.
func readSSE(t *testing.T, body io.ReadCloser) *sseReader {
	r := &sseReader{items: make(chan item)}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(done)
		body.Close()
		wg.Wait()
	})
	wg.Go(func() {
		send := func(it item) bool {
			select {
			case r.items <- it:
				return true
			case <-done:
				return false
			}
		}
		sc := bufio.NewScanner(body)
		var id int64
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, ":"):
				if !send(item{}) {
					return
				}
			case strings.HasPrefix(line, "id: "):
				id, _ = strconv.ParseInt(line[len("id: "):], 10, 64)
			case line == "" && id != 0:
				if !send(item{id: id}) {
					return
				}
				id = 0
			}
		}
		err := sc.Err()
		if err == nil {
			err = io.EOF
		}
		send(item{err: err})
	})
	return r
}

func (r *sseReader) next(t *testing.T) item {
	t.Helper()
	select {
	case it := <-r.items:
		return it
	case <-t.Context().Done():
		t.Fatal("test ended")
		return item{}
	}
}

// waitEvent reads until event id, allowing heartbeats before it.
func (r *sseReader) waitEvent(t *testing.T, id int64) {
	t.Helper()
	for {
		it := r.next(t)
		switch {
		case it.err != nil:
			t.Fatalf("stream ended before event %d arrived: %v (the hop held it, then cut the stream?)", id, it.err)
		case it.id == id:
			return
		case it.id != 0:
			t.Fatalf("got event %d, want %d", it.id, id)
		}
	}
}

// isolateHome points HOME and the XDG directories at an empty directory.
func isolateHome(t *testing.T) string {
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, v := range []string{"XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"} {
		t.Setenv(v, "") // Caddy treats empty as unset
	}
	return home
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func names(entries []os.DirEntry) []string {
	var s []string
	for _, e := range entries {
		s = append(s, e.Name())
	}
	return s
}

func hostOf(t *testing.T, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return p.Host
}

// checkClosed fails if anything still listens on addrs.
func checkClosed(t *testing.T, addrs []string) {
	t.Helper()
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Errorf("%s is still in use after the demo stopped: %v", a, err)
			continue
		}
		ln.Close()
	}
}

// goroutineIDs returns the IDs of the goroutines running now.
func goroutineIDs() map[string]bool {
	ids := make(map[string]bool)
	for _, g := range goroutineStacks() {
		ids[strings.Fields(g)[1]] = true
	}
	return ids
}

func goroutineStacks() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Split(strings.TrimSpace(string(buf[:n])), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// checkNoGoroutines fails if goroutines started after before are still
// running, other than the test's own. Goroutines end a little after the
// connections they serve are closed: it polls for a few seconds.
func checkNoGoroutines(t *testing.T, before map[string]bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for _, g := range goroutineStacks() {
			if before[strings.Fields(g)[1]] || strings.Contains(g, "testing.tRunner") || strings.Contains(g, "testing.(*T).") {
				continue
			}
			left = append(left, g)
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d goroutines left after the demo stopped:\n\n%s", len(left), strings.Join(left, "\n\n"))
			return
		}
		time.Sleep(20 * time.Millisecond) // polling for goroutines to exit
	}
}
