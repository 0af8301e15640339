package caddysse

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/limit"
	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// churnStreams is how many streams TestChurn opens; SSE_CHURN_STREAMS
// overrides it for longer local runs.
func churnStreams(t *testing.T) int {
	if v := os.Getenv("SSE_CHURN_STREAMS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SSE_CHURN_STREAMS=%q: want a positive whole number", v)
		}
		return n
	}
	return 20000
}

// Tens of thousands of streams opened and closed through a real Caddy, with
// heartbeats every millisecond and a limit low enough to refuse streams,
// while clients abort at random and upstreams die mid-event (a panic with
// http.ErrAbortHandler, a hijacked and closed connection), leave nothing
// behind: the open-streams gauge and every limit counter are back to 0,
// goroutines and heap are back to their baseline. Every stream that ended
// normally reached its client byte for byte, with heartbeats only between
// events; every stream cut short by its upstream reached its client as a
// truncated prefix, with an error rather than a clean end.
func TestChurn(t *testing.T) {
	n := churnStreams(t)
	up := startUpstream(t, churnUpstream)
	c := startCaddy(t, up, `
http://127.0.0.1:{{.HTTP}} {
	sse {
		heartbeat 1ms
		limit 35
	}
	reverse_proxy {{.Upstream}} {
		transport http {
			keepalive 500ms
		}
	}
}
`)
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64, MaxConnsPerHost: 0}
	client := &http.Client{Transport: tr}
	base := c.BaseURL() + "/churn"

	// warm up once so lazily started goroutines exist in the baseline
	res := get(t, client, base+"?mode=normal&events=1&req=0", "Accept", "text/event-stream")
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	tr.CloseIdleConnections()
	goBase := settledGoroutines(t, -1)
	heapBase := heapInUse()
	beatsBefore := sumSeries(metrics.heartbeats)
	refusedBefore := sumSeries(metrics.refused, "reason", "limit")

	var counts sync.Map // outcome → *atomic.Int64
	count := func(what string) {
		v, _ := counts.LoadOrStore(what, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	var failures atomic.Int64
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}

	start := time.Now()
	work := make(chan int)
	var wg sync.WaitGroup
	for w := range 50 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range work {
				churnOne(client, base, i, rng, count, fail)
			}
		})
	}
	for i := 1; i <= n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)

	var summary []string
	counts.Range(func(k, v any) bool {
		summary = append(summary, fmt.Sprintf("%s=%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	t.Logf("%d streams in %v: %s", n, elapsed.Round(time.Millisecond), strings.Join(summary, " "))
	for _, what := range []string{"complete", "refused-eventsource", "refused-fetch", "client-abort", "upstream-panic", "upstream-hijack"} {
		if v, ok := counts.Load(what); !ok || v.(*atomic.Int64).Load() == 0 {
			t.Errorf("no stream had outcome %q: the churn did not exercise it", what)
		}
	}
	if d := sumSeries(metrics.heartbeats) - beatsBefore; d == 0 {
		t.Error("no heartbeat was sent during the churn")
	}
	if d := sumSeries(metrics.refused, "reason", "limit") - refusedBefore; d == 0 {
		t.Error("caddy_sse_streams_refused_total{reason=limit} did not grow")
	}

	// the server may finish a stream a moment after its client saw the end
	waitFor(t, 10*time.Second, "caddy_sse_streams_open back to 0", func() bool {
		return sumSeries(metrics.open) == 0
	})
	zones.Range(func(key, v any) bool {
		if n := zoneEntries(v.(*limit.Counters)); n != 0 {
			t.Errorf("zone %v holds %d counters after every stream ended", key, n)
		}
		return true
	})
	scraped := scrapeUnlabeled(t, c)
	if v := scraped["caddy_sse_streams_open"]; v != 0 {
		t.Errorf("/metrics: caddy_sse_streams_open = %v, want 0", v)
	}

	tr.CloseIdleConnections()
	goAfter := settledGoroutines(t, goBase+churnGoroutineSlack)
	if goAfter > goBase+churnGoroutineSlack {
		t.Errorf("goroutines: %d after the churn, %d before (slack %d)", goAfter, goBase, churnGoroutineSlack)
	}
	heapAfter := heapInUse()
	t.Logf("goroutines %d → %d; heap in use %.1f → %.1f MiB; /metrics go_goroutines %v",
		goBase, goAfter, float64(heapBase)/(1<<20), float64(heapAfter)/(1<<20), scraped["go_goroutines"])
	if heapAfter > heapBase+churnHeapSlack {
		t.Errorf("heap in use grew from %d to %d bytes over %d streams (slack %d)", heapBase, heapAfter, n, churnHeapSlack)
	}
}

const (
	// churnGoroutineSlack allows for goroutines that come and go in the
	// background (the transport's idle-connection closer, Caddy's own).
	churnGoroutineSlack = 8
	// churnHeapSlack is far below what leaking one small object per
	// stream would cost over 20000 streams.
	churnHeapSlack = 8 << 20
)

// churnOne opens one stream of a randomly chosen kind and checks what the
// client sees.
func churnOne(client *http.Client, base string, i int, rng *rand.Rand, count func(string), fail func(string, ...any)) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mode := "normal"
	switch p := rng.IntN(100); {
	case p < 15:
		mode = "panic"
	case p < 30:
		mode = "hijack"
	case p < 45:
		mode = "hold"
	}
	events := 1 + rng.IntN(4)
	url := fmt.Sprintf("%s?mode=%s&events=%d&req=%d", base, mode, events, i)
	fetch := mode == "normal" && rng.IntN(4) == 0 // a POST client, not EventSource-style
	method := http.MethodGet
	if fetch {
		method = http.MethodPost
	}
	req, _ := http.NewRequestWithContext(ctx, method, url, nil)
	if !fetch {
		req.Header.Set("Accept", "text/event-stream")
	}
	res, err := client.Do(req)
	if err != nil {
		fail("request %d (%s): %v", i, mode, err)
		return
	}
	defer res.Body.Close()

	if fetch && res.StatusCode == http.StatusServiceUnavailable {
		if res.Header.Get("Retry-After") == "" {
			fail("request %d: a refused fetch client got no Retry-After", i)
		}
		io.Copy(io.Discard, res.Body)
		count("refused-fetch")
		return
	}
	if res.StatusCode != http.StatusOK {
		fail("request %d (%s): status %d", i, mode, res.StatusCode)
		return
	}
	if mode == "hold" {
		// read the first event, then go away
		br := bufio.NewReader(res.Body)
		line, err := br.ReadString('\n')
		if strings.HasPrefix(line, "retry:") {
			count("refused-eventsource")
			return
		}
		if err != nil {
			fail("request %d (hold): %v after %q", i, err, line)
			return
		}
		cancel()
		count("client-abort")
		return
	}
	body, err := io.ReadAll(res.Body)
	if bytes.HasPrefix(body, []byte("retry:")) {
		if err != nil || !isRetryAnswer(body) {
			fail("request %d: refusal answer %q, %v", i, body, err)
		}
		count("refused-eventsource")
		return
	}
	want := churnEvents(i, events)
	// heartbeat_frame auto: a comment line for EventSource-style clients,
	// two blank lines for the others
	frame := defaultFrame
	if fetch {
		frame = []byte("\n\n")
	}
	switch mode {
	case "normal":
		if err != nil {
			fail("request %d: %v", i, err)
			return
		}
		if err := matchStream(body, []byte(want), frame, false); err != nil {
			fail("request %d: %v", i, err)
			return
		}
		count("complete")
	case "panic", "hijack":
		if err == nil {
			fail("request %d (%s): the stream ended cleanly, want an error: the upstream died mid-event", i, mode)
			return
		}
		if err := matchStream(body, []byte(want+"data: cut sh"), frame, true); err != nil {
			fail("request %d (%s): %v", i, mode, err)
			return
		}
		count("upstream-" + mode)
	}
}

// churnEvents is what the churn upstream sends for request i.
func churnEvents(i, n int) string {
	var b strings.Builder
	for k := range n {
		fmt.Fprintf(&b, "id: %d\ndata: event %d of request %d\n\n", k, k, i)
	}
	return b.String()
}

// churnUpstream serves /churn?mode=&events=&req=.
func churnUpstream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	i, _ := strconv.Atoi(q.Get("req"))
	n, _ := strconv.Atoi(q.Get("events"))
	streamHead(w)
	for k := range n {
		if send(w, fmt.Sprintf("id: %d\ndata: event %d of request %d\n\n", k, k, i)) != nil {
			return
		}
		pause(r, time.Duration(rand.IntN(2000))*time.Microsecond) // room for heartbeats
	}
	switch q.Get("mode") {
	case "hold":
		<-r.Context().Done()
	case "panic":
		send(w, "data: cut sh")
		pause(r, time.Millisecond)
		panic(http.ErrAbortHandler)
	case "hijack":
		send(w, "data: cut sh")
		pause(r, time.Millisecond)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}
}

// pause waits for d or the end of the request, whichever comes first. It
// gives the stream quiet time, it synchronises nothing.
func pause(r *http.Request, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

// isRetryAnswer reports whether body is the answer to a refused
// EventSource: a retry field and nothing else.
func isRetryAnswer(body []byte) bool {
	s, ok := strings.CutPrefix(string(body), "retry: ")
	if !ok {
		return false
	}
	ms, rest, ok := strings.Cut(s, "\n")
	_, err := strconv.Atoi(ms)
	return ok && err == nil && (rest == "\n" || rest == "")
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
}

// settledGoroutines waits until the goroutine count is at most target
// (or, with target < 0, stops changing) and returns it.
func settledGoroutines(t testing.TB, target int) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	last, stable := -1, 0
	for {
		runtime.GC()
		n := runtime.NumGoroutine()
		if target >= 0 && n <= target {
			return n
		}
		if n == last {
			stable++
		} else {
			last, stable = n, 0
		}
		if (target < 0 && stable >= 20) || time.Now().After(deadline) {
			return n
		}
		time.Sleep(25 * time.Millisecond) // polling a condition
	}
}

// heapInUse is the heap in use after two full collections.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// scrapeUnlabeled reads Caddy's admin /metrics and returns each family's
// value summed over its series (the caddy_sse_ ones are labeled by server).
func scrapeUnlabeled(t testing.TB, c *testCaddy) map[string]float64 {
	t.Helper()
	res, err := http.Get(fmt.Sprintf("http://localhost:%d/metrics", c.Admin))
	if err != nil {
		t.Fatalf("scraping /metrics: %v", err)
	}
	defer res.Body.Close()
	out := make(map[string]float64)
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		// a labeled series counts toward its family's total; the value
		// follows the last space (Caddy writes no timestamps)
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name, val := line[:i], line[i+1:]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] += v
		}
	}
	if _, ok := out["caddy_sse_streams_open"]; !ok {
		t.Fatal("/metrics has no caddy_sse_streams_open")
	}
	return out
}

// A client cannot grow the handler's state by sending new keys: a million
// distinct limit keys (Host headers, header values), admitted and released
// with up to a thousand open at once, leave the counters holding only the
// open streams at any time and nothing at the end; and fifty thousand
// streams served with distinct Host headers leave no counter, no tracked
// stream and no new metric label behind.
func TestHostileKeys(t *testing.T) {
	h := fuzzHandler(t, `{"heartbeat": "1h", "limits": [{"max": 1}, {"max": 3, "per": "{http.request.header.X-Key}"}]}`)

	t.Run("a million keys", func(t *testing.T) {
		const total, window = 1_000_000, 1000
		open := make([]*streamWriter, 0, window)
		// one replacer whose values change per request: what Caddy's
		// replacer would read from each request
		repl := caddy.NewReplacer()
		req := (&http.Request{Method: http.MethodGet, Header: http.Header{}}).
			WithContext(context.WithValue(context.Background(), caddy.ReplacerCtxKey, repl))
		for i := range total {
			repl.Set("http.request.host", "h"+strconv.Itoa(i)+".example")
			repl.Set("http.request.header.X-Key", strconv.Itoa(i%5000))
			sw := &streamWriter{h: h, req: req}
			if ref := admitted(sw); ref != nil {
				t.Fatalf("key %d refused (%+v) though no other stream shares its host", i, ref)
			}
			open = append(open, sw)
			if len(open) == window {
				if n := zoneEntries(h.lim.counters); n > 2*window {
					t.Fatalf("%d counters for %d open streams", n, window)
				}
				for _, sw := range open {
					sw.hold.Release()
				}
				open = open[:0]
			}
		}
		for _, sw := range open {
			sw.hold.Release()
		}
		if n := zoneEntries(h.lim.counters); n != 0 {
			t.Fatalf("%d counters left after every stream was released", n)
		}
	})

	t.Run("served streams", func(t *testing.T) {
		total := 50_000
		if testing.Short() {
			total = 10_000
		}
		refusedLabels := testutil.CollectAndCount(metrics.refused)
		endedLabels := testutil.CollectAndCount(metrics.ended)
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", "text/event-stream")
			_, err := io.WriteString(w, "data: x\n\n")
			return err
		})
		for i := range total {
			req := fuzzRequest(http.MethodGet, i%2 == 0)
			req.Host = fmt.Sprintf("%x.%d.attacker.example", rand.Uint64(), i)
			req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer).Set("http.request.host", req.Host)
			rec := httptest.NewRecorder()
			if err := h.ServeHTTP(rec, req, next); err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
			if rec.Body.String() != "data: x\n\n" {
				t.Fatalf("stream %d: body %q", i, rec.Body.String())
			}
		}
		if n := zoneEntries(h.lim.counters); n != 0 {
			t.Errorf("%d counters left", n)
		}
		if n := h.streams.group.Open(); n != 0 {
			t.Errorf("%d streams still tracked", n)
		}
		if got := testutil.CollectAndCount(metrics.refused); got != refusedLabels {
			t.Errorf("caddy_sse_streams_refused_total has %d label sets, had %d", got, refusedLabels)
		}
		if got := testutil.CollectAndCount(metrics.ended); got != endedLabels {
			t.Errorf("caddy_sse_streams_ended_total has %d label sets, had %d", got, endedLabels)
		}
	})
}

// A stream's slots are given back exactly once, and a refused stream gives
// back nothing: finishing or releasing a stream twice never lowers a
// counter another stream holds, and a refusal never frees a slot, so a
// limit is never exceeded and a counter never goes below 0.
func TestSlotsReleasedOnce(t *testing.T) {
	h := fuzzHandler(t, `{"heartbeat": "1h", "limits": [{"max": 2}]}`)
	newStream := func() *streamWriter {
		req := fuzzRequest(http.MethodGet, true)
		return &streamWriter{h: h, req: req, cancel: func(error) {}}
	}
	count := func() int {
		for _, n := range h.lim.counters.Snapshot() {
			if n < 0 {
				t.Fatalf("a counter went negative: %d", n)
			}
			return n
		}
		return 0
	}

	a, b := newStream(), newStream()
	if admitted(a) != nil || admitted(b) != nil {
		t.Fatal("the first two streams were refused at max 2")
	}
	refused := newStream()
	if admitted(refused) == nil {
		t.Fatal("a third stream was admitted at max 2")
	}
	refused.finish(stream.EndUpstream)
	refused.finish(stream.EndUpstream)
	refused.hold.Release()
	if got := count(); got != 2 {
		t.Fatalf("count = %d after a refused stream finished, want 2: a refusal freed a slot", got)
	}

	a.finish(stream.EndClient)
	a.finish(stream.EndClient)
	a.hold.Release()
	if got := count(); got != 1 {
		t.Fatalf("count = %d after one of two streams finished twice, want 1", got)
	}
	c, d := newStream(), newStream()
	if admitted(c) != nil {
		t.Fatal("a stream was refused with one slot free")
	}
	if admitted(d) == nil {
		t.Fatal("a stream was admitted over the limit: a double release freed a slot it did not hold")
	}
	for _, sw := range []*streamWriter{b, c, b, c, d} {
		sw.finish(stream.EndUpstream)
		sw.hold.Release()
	}
	if n := zoneEntries(h.lim.counters); n != 0 {
		t.Fatalf("%d counters left after every stream finished", n)
	}
}

// A handler serving streams of every kind (heartbeats every millisecond,
// refusals, aborts, upstream errors) starts no goroutine that outlives its
// requests: once they are done, no goroutine is left, Caddy's background
// ones aside.
func TestNoGoroutineLeak(t *testing.T) {
	before := goroutineIDs()
	h := fuzzHandler(t, `{"heartbeat": "1ms", "idle_timeout": "20ms", "limits": [{"max": 3}]}`)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			defer func() {
				if rec := recover(); rec != nil && rec != http.ErrAbortHandler {
					t.Errorf("panic: %v", rec)
				}
			}()
			req := fuzzRequest(http.MethodGet, i%3 != 0)
			ctx, cancel := context.WithCancel(req.Context())
			defer cancel()
			req = req.WithContext(ctx)
			_ = h.ServeHTTP(newGuardedRecorder(), req, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusOK)
				for k := range 3 {
					if _, err := fmt.Fprintf(w, "data: %d\n\n", k); err != nil {
						return err
					}
					pause(r, 2*time.Millisecond)
				}
				switch i % 4 {
				case 0:
					cancel() // the client goes away
					<-r.Context().Done()
					return r.Context().Err()
				case 1:
					panic(http.ErrAbortHandler)
				case 2:
					return caddyhttp.Error(http.StatusBadGateway, errors.New("upstream died"))
				}
				<-r.Context().Done() // until idle_timeout ends it
				return nil
			}))
		})
	}
	wg.Wait()
	if n := zoneEntries(h.lim.counters); n != 0 {
		t.Errorf("%d counters left", n)
	}
	verifyNoNewGoroutines(t, before)
}

// goroutineIDs returns the ids of the goroutines running now.
func goroutineIDs() map[string]bool {
	ids := make(map[string]bool)
	for _, g := range goroutineStacks() {
		ids[g.id] = true
	}
	return ids
}

type goroutineStack struct{ id, stack string }

// goroutineStacks returns every goroutine's id and stack.
func goroutineStacks() []goroutineStack {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []goroutineStack
	for _, g := range strings.Split(string(buf), "\n\n") {
		// "goroutine 18 [running]:\n..."
		head, _, _ := strings.Cut(g, " [")
		if id, ok := strings.CutPrefix(head, "goroutine "); ok {
			out = append(out, goroutineStack{id: id, stack: g})
		}
	}
	return out
}

// verifyNoNewGoroutines fails t if goroutines other than those in before
// (and the caller's own) are still running once they have had up to 10 s to
// wind down: a goroutine that exits after its request returned (a timer
// callback finishing) is given the time, one that never exits is reported
// with its stack.
func verifyNoNewGoroutines(t *testing.T, before map[string]bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var extra []string
		for _, g := range goroutineStacks() {
			if !before[g.id] && !strings.Contains(g.stack, "verifyNoNewGoroutines") {
				extra = append(extra, g.stack)
			}
		}
		if len(extra) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines outlived their requests:\n\n%s", len(extra), strings.Join(extra, "\n\n"))
		}
		<-tick.C
	}
}

// admitted admits sw's request as its writer does, and returns the
// refusal, if any.
func admitted(sw *streamWriter) *limit.Refusal {
	sw.admit()
	return sw.refusal
}
