package caddysse

// Tests of the concurrent-stream limits (issue 4), through a real Caddy with
// a real reverse_proxy where the contract is about the wire, and against a
// directly provisioned Handler where it is about the counters. The helpers
// at the end: a scripted upstream that counts requests and open streams,
// clients that speak like a browser EventSource or like a fetch client, and
// access to the limit counters.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Over a limit, a stream is refused in a form its client survives. An
// EventSource-style request (GET, Accept: text/event-stream) gets 200,
// text/event-stream, a single retry field of retry to 1.5*retry and the end
// of the response, and never reaches the upstream: a browser's EventSource
// reconnects later instead of giving up for good. Any other request whose
// response is an event stream gets refuse_status (503 by default, 429 when
// configured) with Retry-After, as an error that handle_errors can shape.
// After a stream ends, the next one is admitted. Issue 4.
func TestLimitRefusal(t *testing.T) {
	const retry = 2 * time.Second
	u := startLimUpstream(t)
	c := startCaddy(t, u.addr, `
http://127.0.0.1:{{.HTTP}} {
	handle /default/* {
		sse {
			limit 1
			retry 2s
		}
		reverse_proxy {{.Upstream}}
	}
	handle /429/* {
		sse {
			limit 1
			retry 2s
			refuse_status 429
		}
		reverse_proxy {{.Upstream}}
	}
}
http://shaped.test:{{.HTTP}} {
	encode gzip
	sse {
		limit 1
		retry 2s
	}
	reverse_proxy {{.Upstream}}
	handle_errors {
		respond "busy {err.status_code}"
	}
}
`)
	client := limClient()
	base := c.BaseURL()

	// fill every limit with one stream
	held := map[string]<-chan chunk{}
	for _, rq := range []limReq{
		{path: "/default/?id=hold-default"},
		{path: "/429/?id=hold-429"},
		{path: "/?id=hold-shaped", host: "shaped.test"},
	} {
		rq.eventSource = true
		res, _ := limOpen(t, client, base, rq)
		held[rq.path] = limCheckStream(t, res)
	}
	if n := u.gauge.open.Load(); n != 3 {
		t.Fatalf("upstream has %d streams open, want 3", n)
	}

	for _, tc := range []struct {
		name       string
		rq         limReq
		wantStatus int    // 0: the EventSource retry answer
		wantBody   string // for refusals with a status, if set
	}{
		{name: "EventSource", rq: limReq{path: "/default/?id=es", eventSource: true}},
		{name: "EventSource with Accept list", rq: limReq{path: "/default/?id=es",
			header: []string{"Accept", "text/html;q=0.9, Text/Event-Stream; q=1"}}},
		{name: "EventSource behind encode and handle_errors", rq: limReq{path: "/?id=es", host: "shaped.test", eventSource: true,
			header: []string{"Accept-Encoding", "gzip"}}},
		{name: "fetch GET", rq: limReq{path: "/default/?id=get"}, wantStatus: http.StatusServiceUnavailable},
		{name: "fetch POST", rq: limReq{method: http.MethodPost, path: "/default/?id=post", eventSource: true},
			wantStatus: http.StatusServiceUnavailable},
		{name: "refuse_status 429", rq: limReq{path: "/429/?id=get"}, wantStatus: http.StatusTooManyRequests},
		{name: "handle_errors shapes it", rq: limReq{path: "/?id=get", host: "shaped.test"},
			wantStatus: http.StatusServiceUnavailable, wantBody: "busy 503"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits := u.hits.Load()
			res, _ := limOpen(t, client, base, tc.rq)
			if tc.wantStatus == 0 {
				limCheckRetryAnswer(t, res, retry)
				if n := u.hits.Load() - hits; n != 0 {
					t.Errorf("the upstream got %d requests for a refused EventSource, want 0", n)
				}
				return
			}
			body := limReadAll(t, res.Body)
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("status = %d, want %d (body %q)", res.StatusCode, tc.wantStatus, body)
			}
			if tc.wantBody != "" && body != tc.wantBody {
				t.Errorf("body = %q, want %q from handle_errors", body, tc.wantBody)
			}
			if strings.Contains(body, "data: open") {
				t.Errorf("body = %q: the refused stream's events reached the client", body)
			}
			ra, err := strconv.Atoi(res.Header.Get("Retry-After"))
			if err != nil || ra < 2 || ra > 3 {
				t.Errorf("Retry-After = %q, want 2 or 3 (seconds, retry 2s with jitter)", res.Header.Get("Retry-After"))
			}
			// the refused response was an upstream stream: it must
			// not stay open behind the refusal
			limWaitFor(t, "the refused request's upstream stream to end", func() bool {
				return u.gauge.open.Load() == 3
			})
		})
	}

	// after the stream ends, the next one is admitted at once: the slot
	// is free before the client sees the end of the first
	u.end("hold-default")
	if got := limCheckEOF(t, held["/default/?id=hold-default"]); !strings.Contains(got, "data: bye") {
		t.Fatalf("first stream ended with %q, want its last event", got)
	}
	res, _ := limOpen(t, client, base, limReq{path: "/default/?id=next", eventSource: true})
	limCheckStream(t, res)
	res, _ = limOpen(t, client, base, limReq{path: "/default/?id=over", eventSource: true})
	limCheckRetryAnswer(t, res, retry)
}

// Several limits apply together and every one must admit a stream: a cap
// per host, one per client IP ({client_ip}, which honours trusted_proxies)
// and one per user (a request header). Each refusal is logged once at info
// with the limit's max and key template. Issue 4.
func TestLimitPerClientAndPerHost(t *testing.T) {
	u := startLimUpstream(t)
	sites := `
http://127.0.0.1:{{.HTTP}} {
	sse {
		limit 4
		limit 2 per {client_ip}
		limit 1 per {header.X-User}
		retry 1s
	}
	reverse_proxy {{.Upstream}}
}
`
	c := startCaddy(t, u.addr, sites)
	logPath := filepath.Join(t.TempDir(), "sse.log")
	limAdminLoad(t, c, limPatchedConfig(t, c, sites, func(cfg map[string]any) {
		limTrustLoopback(cfg)
		limLogTo(logPath)(cfg)
	}))
	client := limClient()
	base := c.BaseURL()

	for i, step := range []struct {
		ip, user string
		admit    bool
		per      string // the limit that refuses, if any
		max      float64
	}{
		{ip: "10.0.0.1", user: "alice", admit: true},
		{ip: "10.0.0.1", user: "alice", per: "{http.request.header.X-User}", max: 1},
		{ip: "10.0.0.1", user: "bob", admit: true},
		{ip: "10.0.0.1", user: "carol", per: "{http.vars.client_ip}", max: 2},
		{ip: "10.0.0.2", user: "carol", admit: true},
		{ip: "10.0.0.3", user: "dave", admit: true},
		{ip: "10.0.0.4", user: "erin", per: "{http.request.host}", max: 4},
	} {
		before := len(limLogEntries(t, logPath, "stream limit reached"))
		res, _ := limOpen(t, client, base, limReq{
			path:        fmt.Sprintf("/?id=%s-%s", step.ip, step.user),
			eventSource: true,
			header:      []string{"X-Forwarded-For", step.ip, "X-User", step.user},
		})
		if step.admit {
			limCheckStream(t, res)
			continue
		}
		limCheckRetryAnswer(t, res, time.Second)
		var entries []map[string]any
		limWaitFor(t, "the refusal to be logged", func() bool {
			entries = limLogEntries(t, logPath, "stream limit reached")
			return len(entries) > before
		})
		e := entries[len(entries)-1]
		if len(entries) != before+1 || e["level"] != "info" || e["per"] != step.per || e["limit"] != step.max {
			t.Errorf("step %d (%s %s): log = %v (%d new entries), want one info entry with per %s and limit %v",
				i, step.ip, step.user, e, len(entries)-before, step.per, step.max)
		}
		if _, ok := e["key"]; ok {
			t.Errorf("step %d: the key was logged without log_key: %v", i, e)
		}
	}
	if n := u.gauge.open.Load(); n != 4 {
		t.Errorf("upstream has %d streams open, want the 4 admitted", n)
	}
}

// The limit key (a client IP, a user name) is personal data: a refusal's
// log entry carries it only with log_key. Issue 4.
func TestLimitLogKey(t *testing.T) {
	u := startLimUpstream(t)
	sites := `
http://127.0.0.1:{{.HTTP}} {
	handle /quiet/* {
		sse {
			limit 1 per {client_ip}
		}
		reverse_proxy {{.Upstream}}
	}
	handle /keyed/* {
		sse {
			limit 2 per {client_ip}
			log_key
		}
		reverse_proxy {{.Upstream}}
	}
}
`
	c := startCaddy(t, u.addr, sites)
	logPath := filepath.Join(t.TempDir(), "sse.log")
	limAdminLoad(t, c, limPatchedConfig(t, c, sites, limLogTo(logPath)))
	client := limClient()
	for _, tc := range []struct {
		name    string
		path    string
		max     int
		wantKey any // nil: no key field
	}{
		{"without log_key", "/quiet/", 1, nil},
		{"with log_key", "/keyed/", 2, "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range tc.max {
				res, _ := limOpen(t, client, c.BaseURL(), limReq{path: fmt.Sprintf("%s?id=%d", tc.path, i), eventSource: true})
				limCheckStream(t, res)
			}
			before := len(limLogEntries(t, logPath, "stream limit reached"))
			res, _ := limOpen(t, client, c.BaseURL(), limReq{path: tc.path + "?id=over"})
			if body := limReadAll(t, res.Body); res.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("status = %d (%q), want 503", res.StatusCode, body)
			}
			var entries []map[string]any
			limWaitFor(t, "the refusal to be logged", func() bool {
				entries = limLogEntries(t, logPath, "stream limit reached")
				return len(entries) > before
			})
			e := entries[len(entries)-1]
			if e["limit"] != float64(tc.max) || e["per"] != "{http.vars.client_ip}" {
				t.Errorf("log = %v, want limit %d per {http.vars.client_ip}", e, tc.max)
			}
			if e["key"] != tc.wantKey {
				t.Errorf("key = %v, want %v", e["key"], tc.wantKey)
			}
		})
	}
}

// A stream holds its slot from admission until its response ends, however
// it ends: the client goes away, the upstream ends the stream, or the
// upstream dies mid-stream (reverse_proxy then aborts the response with
// http.ErrAbortHandler). Streams admitted before the upstream is contacted
// (EventSource-style) and when their response turns out to be a stream
// (fetch) alike. Issue 4.
func TestLimitSlotReleased(t *testing.T) {
	u := startLimUpstream(t)
	c := startCaddy(t, u.addr, `
http://127.0.0.1:{{.HTTP}} {
	sse {
		limit 1 per {header.X-Case}
	}
	reverse_proxy {{.Upstream}}
}
`)
	client := limClient()
	base := c.BaseURL()
	for _, tc := range []struct {
		name        string
		eventSource bool
		how         string // client, end, kill
	}{
		{"EventSource, client goes away", true, "client"},
		{"EventSource, upstream ends", true, "end"},
		{"EventSource, upstream dies", true, "kill"},
		{"fetch, client goes away", false, "client"},
		{"fetch, upstream ends", false, "end"},
		{"fetch, upstream dies", false, "kill"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := strings.ReplaceAll(tc.name, " ", "")
			rq := limReq{path: "/?id=" + id, eventSource: tc.eventSource, header: []string{"X-Case", id}}
			res, drop := limOpen(t, client, base, rq)
			ch := limCheckStream(t, res)

			over, _ := limOpen(t, client, base, limReq{path: "/?id=over", eventSource: true, header: []string{"X-Case", id}})
			limCheckRetryAnswer(t, over, defaultRetry)

			switch tc.how {
			case "client":
				drop()
			case "end":
				u.end(id)
				limCheckEOF(t, ch)
			case "kill":
				u.kill(id)
			}
			limAwaitAdmission(t, client, base, limReq{path: "/?id=after", header: []string{"X-Case", id}})
		})
	}
}

// A stream's slot is released however the handler inside sse ends it: it
// returns when the client has gone, it returns at the end of the stream,
// it fails before or after the header, it aborts the response
// (panic(http.ErrAbortHandler), as reverse_proxy does when the upstream or
// the client dies mid-stream), or it panics for any other reason, in which
// case the panic goes on up to the server. Issue 4.
func TestLimitSlotReleasedByHandler(t *testing.T) {
	errUpstream := caddyhttp.Error(http.StatusBadGateway, errors.New("upstream died"))
	for _, tc := range []struct {
		name        string
		eventSource bool
		header      bool  // the inner handler writes a stream header first
		clientGone  bool  // the client goes away, then the inner handler returns
		err         error // what the inner handler returns
		panic       any   // what the inner handler panics with, if not nil
	}{
		{name: "client gone, EventSource", eventSource: true, header: true, clientGone: true},
		{name: "client gone, fetch", header: true, clientGone: true},
		{name: "client gone with an error, fetch", header: true, clientGone: true, err: context.Canceled},
		{name: "stream ends, EventSource", eventSource: true, header: true},
		{name: "stream ends, fetch", header: true},
		{name: "upstream error mid-stream, EventSource", eventSource: true, header: true, err: errUpstream},
		{name: "upstream error mid-stream, fetch", header: true, err: errUpstream},
		{name: "upstream error before the header, EventSource", eventSource: true, err: errUpstream},
		{name: "abort, EventSource", eventSource: true, header: true, panic: http.ErrAbortHandler},
		{name: "abort, fetch", header: true, panic: http.ErrAbortHandler},
		{name: "abort before the header, EventSource", eventSource: true, panic: http.ErrAbortHandler},
		{name: "panic, EventSource", eventSource: true, header: true, panic: "boom"},
		{name: "panic, fetch", header: true, panic: "boom"},
		{name: "panic before the header, EventSource", eventSource: true, panic: "boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := limHandler(t, &Handler{Limits: []Limit{{Max: 1}}, Zone: "ending " + tc.name})
			ctx, clientGone := context.WithCancel(context.Background())
			defer clientGone()
			req := httptest.NewRequestWithContext(ctx, http.MethodGet, "http://example.com/events", nil)
			if tc.eventSource {
				req.Header.Set("Accept", "text/event-stream")
			}
			held := -1
			var recovered any
			var err error
			func() {
				defer func() { recovered = recover() }()
				_, err = limServe(h, req, func(w http.ResponseWriter, r *http.Request) error {
					if tc.header {
						if err := limStreamNext(w, r); err != nil {
							return err
						}
					}
					held = limTotal(h.lim.counters)
					if tc.clientGone {
						clientGone()
						<-r.Context().Done()
					}
					if tc.panic != nil {
						panic(tc.panic)
					}
					return tc.err
				})
			}()
			if recovered != tc.panic {
				t.Errorf("recovered %v, want the inner handler's panic %v to go on", recovered, tc.panic)
			}
			if tc.panic == nil && tc.header && !errors.Is(err, tc.err) {
				t.Errorf("ServeHTTP returned %v, want the inner handler's %v", err, tc.err)
			}
			if held != 1 {
				t.Fatalf("counters held %d streams while the stream was open, want 1", held)
			}
			if counts := limCounts(h.lim.counters); len(counts) != 0 {
				t.Errorf("counters after the stream = %v, want none", counts)
			}
		})
	}
}

// Admission is atomic: with many clients racing for the slots of one
// limit, never more than max streams are open at once, and exactly max are
// admitted while they are all held. Run with -race. Issue 4.
func TestLimitRacingAdmission(t *testing.T) {
	const (
		clients = 200
		limit   = 10
		rounds  = 3
		churn   = 4 // requests per client in the churn phase
	)
	u := startLimUpstream(t)
	c := startCaddy(t, u.addr, fmt.Sprintf(`
http://127.0.0.1:{{.HTTP}} {
	sse {
		limit %d
	}
	reverse_proxy {{.Upstream}}
}
`, limit))
	client := limClient()
	base := c.BaseURL()

	// outcome of one client's request: admitted, refused or failed
	type outcome struct {
		admitted bool
		ch       <-chan chunk
		err      string
	}
	race := func(id string) []outcome {
		out := make([]outcome, clients)
		var start, done sync.WaitGroup
		start.Add(1)
		for i := range clients {
			done.Add(1)
			go func() {
				defer done.Done()
				start.Wait()
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/?id="+id, nil)
				req.Header.Set("Accept", "text/event-stream")
				res, err := client.Do(req)
				if err != nil {
					out[i].err = err.Error()
					return
				}
				t.Cleanup(func() { res.Body.Close() })
				ch := readChunks(res.Body)
				var got bytes.Buffer
				readUntil(t, ch, &got, "\n\n", limWait)
				switch {
				case strings.HasPrefix(got.String(), "data: open\n\n"):
					out[i] = outcome{admitted: true, ch: ch}
				case retryFieldRE.MatchString(got.String()) && res.StatusCode == http.StatusOK:
				default:
					out[i].err = fmt.Sprintf("status %d, body %q", res.StatusCode, got.String())
				}
			}()
		}
		start.Done()
		done.Wait()
		return out
	}

	// rounds: every admitted stream stays open until all clients have
	// their answer, so exactly max are admitted; ending them frees all
	// the slots for the next round
	for r := range rounds {
		id := fmt.Sprintf("round%d", r)
		hits := u.hits.Load()
		out := race(id)
		admitted := 0
		for _, o := range out {
			if o.err != "" {
				t.Fatalf("round %d: %s", r, o.err)
			}
			if o.admitted {
				admitted++
			}
		}
		if admitted != limit {
			t.Errorf("round %d: %d streams admitted, want exactly %d", r, admitted, limit)
		}
		if n := u.hits.Load() - hits; n != int64(admitted) {
			t.Errorf("round %d: the upstream got %d requests for %d admitted streams", r, n, admitted)
		}
		u.end(id)
		for _, o := range out {
			if o.admitted {
				limCheckEOF(t, o.ch)
			}
		}
	}

	// churn: streams end as soon as they open, so admissions race with
	// releases; the upstream sees a stream after its admission and ends
	// it before its release, so it never sees more than max at once
	u.end("churn")
	var wg sync.WaitGroup
	var admitted atomic.Int64
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range churn {
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/?id=churn", nil)
				req.Header.Set("Accept", "text/event-stream")
				res, err := client.Do(req)
				if err != nil {
					t.Errorf("churn: %v", err)
					return
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil {
					t.Errorf("churn: %v", err)
					return
				}
				if bytes.HasPrefix(b, []byte("data: open\n\n")) {
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if m := u.gauge.max.Load(); m != limit {
		t.Errorf("the upstream saw up to %d streams open at once, want %d (the limit)", m, limit)
	}
	if admitted.Load() == 0 {
		t.Error("no stream admitted in the churn phase")
	}
	t.Logf("churn: %d of %d streams admitted", admitted.Load(), clients*churn)
}

// The Host header is client-controlled: counters whose count drops to 0
// are forgotten, so after 100,000 streams to distinct hosts have ended,
// no counter is left, and memory stays bounded by the open streams.
// Issue 4.
func TestLimitForgetsKeys(t *testing.T) {
	const streams = 100_000
	h, _ := limHandler(t, &Handler{Limits: []Limit{{Max: 1}}, Zone: "forget"})
	for i := range streams {
		host := fmt.Sprintf("h%d.example", i)
		req := httptest.NewRequest(http.MethodGet, "http://"+host+"/events", nil)
		if i%2 == 0 {
			req.Header.Set("Accept", "text/event-stream") // admitted before next
		}
		var held map[string]int
		rec, err := limServe(h, req, func(w http.ResponseWriter, r *http.Request) error {
			err := limStreamNext(w, r)
			if i%10_000 == 0 {
				held = limCounts(h.lim.counters)
			}
			return err
		})
		if err != nil || rec.Body.String() != "data: x\n\n" {
			t.Fatalf("stream %d: err %v, body %q: not admitted", i, err, rec.Body.String())
		}
		if i%10_000 == 0 {
			if len(held) != 1 || !strings.HasSuffix(limOnlyKey(held), host) || held[limOnlyKey(held)] != 1 {
				t.Fatalf("stream %d: counters while open = %v, want one for %s", i, held, host)
			}
		}
	}
	if counts := limCounts(h.lim.counters); len(counts) != 0 {
		t.Errorf("%d counters left after every stream ended, want 0", len(counts))
	}
}

// A 10 KB Host header is counted under a short hashed key, and still
// counts: a second stream to the same long host is refused, and logged
// once at info, with the short key under log_key. Issue 4.
func TestLimitLongHostHashed(t *testing.T) {
	h, logs := limHandler(t, &Handler{Limits: []Limit{{Max: 1}}, Zone: "long host", LogKey: true})
	host := strings.Repeat("a", 10<<10) + ".example"
	newReq := func() *http.Request {
		req := httptest.NewRequest(http.MethodGet, "http://example.com/events", nil)
		req.Host = host
		req.Header.Set("Accept", "text/event-stream")
		return req
	}
	var held map[string]int
	var second *httptest.ResponseRecorder
	_, err := limServe(h, newReq(), func(w http.ResponseWriter, r *http.Request) error {
		held = limCounts(h.lim.counters)
		var err error
		second, err = limServe(h, newReq(), limStreamNext)
		if err != nil {
			return err
		}
		return limStreamNext(w, r)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 1 {
		t.Fatalf("counters = %d keys, want 1", len(held))
	}
	if k := limOnlyKey(held); len(k) > 2*limit.MaxKeyLen || strings.Contains(k, "aaaaaaaa") {
		t.Errorf("counter key = %d bytes (%.40q...), want a short hash", len(k), k)
	}
	if !retryFieldRE.MatchString(second.Body.String()) {
		t.Errorf("second stream to the same long host got %q, want the retry answer", second.Body.String())
	}
	if counts := limCounts(h.lim.counters); len(counts) != 0 {
		t.Errorf("counters after the streams = %v, want none", counts)
	}
	entries := logs.FilterMessage("stream limit reached").All()
	if len(entries) != 1 {
		t.Fatalf("%d refusals logged, want 1", len(entries))
	}
	e := entries[0]
	fields := e.ContextMap()
	if key, _ := fields["key"].(string); e.Level != zapcore.InfoLevel || fields["limit"] != int64(1) ||
		fields["per"] != "{http.request.host}" || !strings.HasPrefix(key, "sha256:") || len(key) > limit.MaxKeyLen {
		t.Errorf("log = %s %v, want info with limit 1, per {http.request.host} and a short hashed key", e.Level, fields)
	}
}

// When the upstream is down, reverse_proxy fails before anything is
// written: 502 when it cannot connect, 504 when no answer comes in time. An
// EventSource-style client gets the 200 + retry answer instead, so the
// browser reconnects when the upstream is back; other clients get the
// status; with upstream_errors pass, EventSource clients get it too. Either
// way the stream's slot is given back. Issue 4.
func TestLimitUpstreamDown(t *testing.T) {
	silent := limSilentAddr(t)
	c := startCaddy(t, limClosedAddr(t), `
http://127.0.0.1:{{.HTTP}} {
	handle /retry/* {
		sse {
			limit 1
			retry 1s
		}
		reverse_proxy {{.Upstream}}
	}
	handle /pass/* {
		sse {
			upstream_errors pass
		}
		reverse_proxy {{.Upstream}}
	}
	handle /timeout/* {
		sse {
			retry 1s
		}
		reverse_proxy `+silent+` {
			transport http {
				response_header_timeout 200ms
			}
		}
	}
}
`)
	client := limClient()
	for _, tc := range []struct {
		name       string
		rq         limReq
		wantStatus int // 0: the EventSource retry answer
	}{
		{"EventSource", limReq{path: "/retry/", eventSource: true}, 0},
		{"EventSource again: the first gave its slot back", limReq{path: "/retry/", eventSource: true}, 0},
		{"fetch GET", limReq{path: "/retry/"}, http.StatusBadGateway},
		{"fetch POST", limReq{method: http.MethodPost, path: "/retry/", eventSource: true}, http.StatusBadGateway},
		{"EventSource, upstream_errors pass", limReq{path: "/pass/", eventSource: true}, http.StatusBadGateway},
		{"EventSource, upstream timeout", limReq{path: "/timeout/", eventSource: true}, 0},
		{"fetch, upstream timeout", limReq{path: "/timeout/"}, http.StatusGatewayTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := limOpen(t, client, c.BaseURL(), tc.rq)
			if tc.wantStatus == 0 {
				limCheckRetryAnswer(t, res, time.Second)
			} else if body := limReadAll(t, res.Body); res.StatusCode != tc.wantStatus {
				t.Errorf("status = %d (%q), want %d", res.StatusCode, body, tc.wantStatus)
			}
			z := limZone("srv0#1")
			if z == nil {
				t.Fatal("no counters for the first sse handler")
			}
			if counts := limCounts(z); len(counts) != 0 {
				t.Errorf("counters after the request = %v, want none", counts)
			}
		})
	}
}

// Every Caddyfile mistake in a limit or in retry is refused at adapt time
// with a message that names the mistake and the file and line. Issue 4.
func TestLimitCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string // the sse block's lines; the last one is wrong
		want  string
	}{
		{"limit 0", []string{"limit 0"}, "max must be at least 1, got 0"},
		{"limit -1", []string{"limit -1"}, "max must be at least 1, got -1"},
		{"limit x", []string{"limit x"}, `max "x" is not a whole number`},
		{"limit without max", []string{"limit"}, "want <max> [per <key>], got 0 arguments"},
		{"per without key", []string{"limit 5 per"}, "want <max> [per <key>], got 2 arguments"},
		{"per without placeholder", []string{"limit 5 per host"}, `"host" has no placeholder`},
		{"unknown placeholder", []string{"limit 5 per {nope}"}, "unknown placeholder {nope}"},
		{"unclosed placeholder", []string{"limit 5 per {http.request.host"}, "unclosed placeholder"},
		{"not per", []string{"limit 5 by {host}"}, `want "per" after the max, got "by"`},
		{"bad limit after a good one", []string{"limit 100", "limit 5 per {client_ip}", "limit 0 per {header.X-User}"},
			"max must be at least 1, got 0"},
		{"retry not a duration", []string{"retry soon"}, `retry: invalid duration "soon"`},
		{"retry negative", []string{"retry -1s"}, "retry: must not be negative"},
		{"retry 0", []string{"retry 0"}, "retry: must be more than 0"},
		{"retry missing", []string{"retry"}, "retry: missing value"},
		{"retry twice", []string{"retry 1s", "retry 2s"}, "retry already specified"},
		{"retry two values", []string{"retry 1s 2s"}, `retry: one value expected, got extra "2s"`},
		{"refuse_status 200", []string{"refuse_status 200"}, "refuse_status: must be a 4xx or 5xx status code, such as 503 or 429, got "},
		{"refuse_status word", []string{"refuse_status busy"}, "refuse_status: must be a 4xx or 5xx status code, such as 503 or 429, got "},
		{"upstream_errors unknown", []string{"upstream_errors never"}, `upstream_errors: must be "retry" or "pass"`},
		{"log_key with a value", []string{"log_key yes"}, `log_key takes no arguments`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "http://127.0.0.1:8080 {\n\tsse {\n\t\t" + strings.Join(tc.lines, "\n\t\t") +
				"\n\t}\n\treverse_proxy 127.0.0.1:9\n}\n"
			_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src),
				map[string]any{"filename": "/etc/caddy/Caddyfile.limits"})
			if err == nil {
				t.Fatalf("adapt accepted\n%s", src)
			}
			where := fmt.Sprintf("/etc/caddy/Caddyfile.limits:%d", 2+len(tc.lines))
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), where) {
				t.Errorf("error = %q, want it to contain %q and %q", err, tc.want, where)
			}
		})
	}
}

// A JSON config with a bad limit fails validation with a message that
// names the field as it is written in JSON. Issue 4.
func TestLimitValidateJSON(t *testing.T) {
	for _, tc := range []struct {
		name, json, want string // want "": valid
	}{
		{"valid", `{"limits":[{"max":5},{"max":1,"per":"{http.vars.client_ip}"}]}`, ""},
		{"max missing", `{"limits":[{}]}`, "limits[0].max: must be at least 1, got 0"},
		{"max 0", `{"limits":[{"max":0}]}`, "limits[0].max: must be at least 1, got 0"},
		{"max negative", `{"limits":[{"max":-1}]}`, "limits[0].max: must be at least 1, got -1"},
		{"second limit", `{"limits":[{"max":5},{"max":0,"per":"{http.vars.client_ip}"}]}`, "limits[1].max"},
		{"per without placeholder", `{"limits":[{"max":5,"per":"host"}]}`, `limits[0].per: "host" has no placeholder`},
		{"per unknown placeholder", `{"limits":[{"max":5,"per":"{client_ip}"}]}`, "limits[0].per: unknown placeholder {client_ip}"},
		{"retry negative", `{"retry":"-1s"}`, "retry: must not be negative"},
		{"refuse_status 200", `{"refuse_status":200}`, "refuse_status: must be a 4xx or 5xx status code, such as 503 or 429, got 200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			if err := json.Unmarshal([]byte(tc.json), &h); err != nil {
				t.Fatal(err)
			}
			err := h.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate(%s) = %v, want nil", tc.json, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate(%s) = %v, want an error containing %q", tc.json, err, tc.want)
			}
		})
	}
}

// The retry hint a refused EventSource gets is the retry value jittered
// up to 50 % above it, so clients refused together do not all come back
// at once, and never below it. Issue 4.
func TestLimitRetryHintJitter(t *testing.T) {
	h, _ := limHandler(t, &Handler{Retry: ptr(caddy.Duration(2 * time.Second))})
	seen := map[int64]bool{}
	for range 1000 {
		m := retryFieldRE.FindSubmatch(h.streams.retryField(stream.FrameBlock))
		if m == nil {
			t.Fatalf("retryField() = %q, want one retry field", h.streams.retryField(stream.FrameBlock))
		}
		ms, _ := strconv.ParseInt(string(m[1]), 10, 64)
		if ms < 2000 || ms > 3000 {
			t.Fatalf("retry hint = %dms, want within [2000, 3000]", ms)
		}
		seen[ms] = true
	}
	if len(seen) < 100 {
		t.Errorf("1000 retry hints took %d values, want them spread over the jitter range", len(seen))
	}
}

// Browsers reach Caddy over HTTP/2 and HTTP/3 as often as HTTP/1.1: the
// refusal forms are the same on every protocol. Issue 4.
func TestLimitRefusalOverEveryProtocol(t *testing.T) {
	u := startLimUpstream(t)
	c := startCaddy(t, u.addr, `
https://localhost:{{.HTTPS}} {
	tls internal
	sse {
		limit 1 per {header.X-Proto}
	}
	reverse_proxy {{.Upstream}}
}
`)
	for _, tc := range []struct {
		name   string
		client *http.Client
		proto  int
	}{
		{"h2", h2Client(), 2},
		{"h3", h3Client(t), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := []string{"X-Proto", tc.name}
			res, _ := limOpen(t, tc.client, c.TLSURL(), limReq{path: "/?id=" + tc.name, eventSource: true, header: hdr})
			if res.ProtoMajor != tc.proto {
				t.Fatalf("proto = %s, want major %d", res.Proto, tc.proto)
			}
			limCheckStream(t, res)

			hits := u.hits.Load()
			res, _ = limOpen(t, tc.client, c.TLSURL(), limReq{path: "/?id=es", eventSource: true, header: hdr})
			limCheckRetryAnswer(t, res, defaultRetry)
			if u.hits.Load() != hits {
				t.Error("the refused EventSource reached the upstream")
			}

			res, _ = limOpen(t, tc.client, c.TLSURL(), limReq{method: http.MethodPost, path: "/?id=post", header: hdr})
			if body := limReadAll(t, res.Body); res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
				t.Errorf("fetch: status %d, Retry-After %q, body %q; want 503 with Retry-After",
					res.StatusCode, res.Header.Get("Retry-After"), body)
			}
		})
	}
}

// limWait is how long the limit tests wait for anything: generous, for a
// loaded machine.
const limWait = 15 * time.Second

// limGauge counts what is open now and the most that was ever open at once.
type limGauge struct {
	open, max atomic.Int64
}

func (g *limGauge) enter() {
	n := g.open.Add(1)
	for {
		m := g.max.Load()
		if n <= m || g.max.CompareAndSwap(m, n) {
			return
		}
	}
}

func (g *limGauge) leave() { g.open.Add(-1) }

// limUpstream is an event-stream upstream. Every request opens a stream that
// sends "data: open" at once and then waits: the test ends it normally
// (end), drops the connection mid-stream (kill), or the request is
// cancelled. Streams are grouped by the id query parameter.
type limUpstream struct {
	addr  string
	hits  atomic.Int64 // requests received
	gauge limGauge     // streams open
	mu    sync.Mutex
	ends  map[string]chan struct{}
	kills map[string]chan struct{}
}

func startLimUpstream(t testing.TB) *limUpstream {
	t.Helper()
	u := &limUpstream{ends: map[string]chan struct{}{}, kills: map[string]chan struct{}{}}
	u.addr = startUpstream(t, u.serve)
	return u
}

func (u *limUpstream) chans(id string) (end, kill chan struct{}) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ends[id] == nil {
		u.ends[id] = make(chan struct{})
		u.kills[id] = make(chan struct{})
	}
	return u.ends[id], u.kills[id]
}

// end makes the streams with this id end normally, now and later.
func (u *limUpstream) end(id string) {
	end, _ := u.chans(id)
	close(end)
}

// kill makes the streams with this id drop their connection mid-stream.
func (u *limUpstream) kill(id string) {
	_, kill := u.chans(id)
	close(kill)
}

func (u *limUpstream) serve(w http.ResponseWriter, r *http.Request) {
	u.hits.Add(1)
	_, _ = io.Copy(io.Discard, r.Body)
	u.gauge.enter()
	defer u.gauge.leave()
	end, kill := u.chans(r.URL.Query().Get("id"))
	streamHead(w)
	if send(w, "data: open\n\n") != nil {
		return
	}
	select {
	case <-end:
		_ = send(w, "data: bye\n\n")
	case <-kill:
		// net/http closes the connection without ending the chunked
		// body: the proxy sees the upstream die mid-stream
		panic(http.ErrAbortHandler)
	case <-r.Context().Done():
	}
}

// limClient is an HTTP/1.1 client that opens a new connection for every
// request, so no request rides on a connection of a config that a reload
// replaced.
func limClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableCompression: true,
		DisableKeepAlives:  true,
	}}
}

// limReq is a request to send.
type limReq struct {
	method      string // default GET
	path        string // appended to the base URL
	host        string // Host header, if set
	eventSource bool   // Accept: text/event-stream, like a browser EventSource
	header      []string
}

// limOpen sends rq and returns the response and a function that drops the
// connection (a client going away). Both are cleaned up when the test ends.
func limOpen(t testing.TB, client *http.Client, base string, rq limReq) (*http.Response, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	method := rq.method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"prompt":"hi"}`)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+rq.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if rq.host != "" {
		req.Host = rq.host
	}
	if rq.eventSource {
		req.Header.Set("Accept", "text/event-stream")
	}
	for i := 0; i+1 < len(rq.header); i += 2 {
		req.Header.Set(rq.header[i], rq.header[i+1])
	}
	res, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("%s %s: %v", method, rq.path, err)
	}
	t.Cleanup(func() {
		cancel()
		res.Body.Close()
	})
	return res, cancel
}

// limReadAll reads body to EOF, failing the test if that takes too long.
func limReadAll(t testing.TB, body io.Reader) string {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(body)
		ch <- result{b, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("reading body: %v (got %q)", r.err, r.b)
		}
		return string(r.b)
	case <-time.After(limWait):
		t.Fatalf("body did not end within %s", limWait)
		return ""
	}
}

// retryFieldRE is a retry field alone, in either frame: the line frame for
// EventSource-style clients (heartbeat_frame auto), the block frame for others.
var retryFieldRE = regexp.MustCompile(`^retry: ([0-9]+)\n\n?$`)

// limCheckRetryAnswer checks the answer an EventSource gets when it must
// come back later: 200, text/event-stream, exactly one retry field of
// retry to 1.5*retry, and the end of the response.
func limCheckRetryAnswer(t testing.TB, res *http.Response, retry time.Duration) {
	t.Helper()
	if res.StatusCode != http.StatusOK {
		t.Errorf("status = %d, want 200 (any other status makes an EventSource give up)", res.StatusCode)
	}
	if ct := res.Header.Get("Content-Type"); !stream.IsEventStream(ct) {
		t.Errorf("Content-Type = %q, want text/event-stream", ct)
	}
	body := limReadAll(t, res.Body)
	m := retryFieldRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("body = %q, want exactly one \"retry: <ms>\" field", body)
	}
	ms, _ := strconv.ParseInt(m[1], 10, 64)
	if lo, hi := retry.Milliseconds(), retry.Milliseconds()*3/2; ms < lo || ms > hi {
		t.Errorf("retry = %dms, want within [%d, %d]", ms, lo, hi)
	}
}

// limCheckStream checks that res is an admitted stream that carries the
// upstream's first event, and returns the rest of the body as it arrives.
func limCheckStream(t testing.TB, res *http.Response) <-chan chunk {
	t.Helper()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", res.StatusCode)
	}
	ch := readChunks(res.Body)
	var got bytes.Buffer
	if !readUntil(t, ch, &got, "data: open\n\n", limWait) {
		t.Fatalf("body = %q, want the upstream's first event (the stream was not admitted)", got.String())
	}
	return ch
}

// limCheckEOF waits for the end of a stream's body.
func limCheckEOF(t testing.TB, ch <-chan chunk) string {
	t.Helper()
	var got bytes.Buffer
	deadline := time.After(limWait)
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				return got.String()
			}
			got.Write(c.data)
		case <-deadline:
			t.Fatalf("stream did not end within %s; got %q", limWait, got.String())
		}
	}
}

// limAwaitAdmission sends EventSource requests until one is admitted (its
// body starts with the upstream's event rather than a retry field), and
// returns it. It fails the test after limWait.
func limAwaitAdmission(t testing.TB, client *http.Client, base string, rq limReq) <-chan chunk {
	t.Helper()
	rq.eventSource = true
	deadline := time.Now().Add(limWait)
	for {
		res, cancel := limOpen(t, client, base, rq)
		ch := readChunks(res.Body)
		var got bytes.Buffer
		readUntil(t, ch, &got, "\n\n", limWait)
		if strings.HasPrefix(got.String(), "data: open\n\n") {
			return ch
		}
		cancel()
		if !strings.HasPrefix(got.String(), "retry: ") {
			t.Fatalf("status %d, body %q: neither admitted nor refused", res.StatusCode, got.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stream admitted within %s: the slot was never released", limWait)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, not a guess
	}
}

// limWaitFor polls cond until it holds, failing the test after limWait.
func limWaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limWait, what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not a guess
	}
}

// limCounts returns a copy of z's counters.
func limCounts(z *limit.Counters) map[string]int {
	return z.Snapshot()
}

// limTotal returns the number of streams z counts, over all keys.
func limTotal(z *limit.Counters) int {
	n := 0
	for _, c := range limCounts(z) {
		n += c
	}
	return n
}

// limZone returns the counters of the zone with this name, as Caddy holds
// it in the shared pool (default names are "<server>#<n>"), or nil.
func limZone(name string) *limit.Counters {
	var found *limit.Counters
	zones.Range(func(k, v any) bool {
		if k == "sse.zone."+name {
			found = v.(*limit.Counters)
			return false
		}
		return true
	})
	return found
}

// limAdminLoad loads a JSON config through Caddy's admin API, as
// `caddy reload --force` does: the config is reloaded even if unchanged.
func limAdminLoad(t testing.TB, c *testCaddy, cfg []byte) {
	t.Helper()
	url := "http://localhost:" + strconv.Itoa(c.Admin) + "/load"
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(cfg))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Cache-Control", "must-revalidate")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /load: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("POST /load: %s: %s", res.Status, b)
	}
}

// limPatchedConfig adapts sites with the harness's globals and lets patch
// edit the JSON, for settings the harness's global options do not cover.
func limPatchedConfig(t testing.TB, c *testCaddy, sites string, patch func(cfg map[string]any)) []byte {
	t.Helper()
	var cfg map[string]any
	if err := json.Unmarshal(c.adapt(t, sites), &cfg); err != nil {
		t.Fatal(err)
	}
	patch(cfg)
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// limLogTo adds a JSON log of the sse handler's info messages to a file.
func limLogTo(path string) func(map[string]any) {
	return func(cfg map[string]any) {
		logs := cfg["logging"].(map[string]any)["logs"].(map[string]any)
		logs["sselimits"] = map[string]any{
			"writer":  map[string]any{"output": "file", "filename": path},
			"encoder": map[string]any{"format": "json"},
			"level":   "INFO",
			"include": []any{"http.handlers.sse"},
		}
	}
}

// limTrustLoopback makes every server trust X-Forwarded-For from loopback
// peers, so {client_ip} can vary in a test: servers { trusted_proxies
// static 127.0.0.1/8 }.
func limTrustLoopback(cfg map[string]any) {
	servers := cfg["apps"].(map[string]any)["http"].(map[string]any)["servers"].(map[string]any)
	for _, s := range servers {
		s.(map[string]any)["trusted_proxies"] = map[string]any{
			"source": "static",
			"ranges": []any{"127.0.0.1/8"},
		}
	}
}

// limLogEntries returns the JSON log entries in path with this message.
func limLogEntries(t testing.TB, path, msg string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range bytes.Split(b, []byte("\n")) {
		var e map[string]any
		if json.Unmarshal(line, &e) == nil && e["msg"] == msg {
			out = append(out, e)
		}
	}
	return out
}

// limHandler provisions and validates h as Caddy would, outside a server,
// and records what it logs.
func limHandler(t testing.TB, h *Handler) (*Handler, *observer.ObservedLogs) {
	t.Helper()
	provisionTestHandler(t, h)
	// info and up, as Caddy logs by default, kept in memory
	core, logs := observer.New(zapcore.InfoLevel)
	useLogger(h, zap.New(core))
	return h, logs
}

// limServe runs one request through h as Caddy's server would set it up
// (replacer, client IP), with next as the handler inside sse.
func limServe(h *Handler, req *http.Request, next caddyhttp.HandlerFunc) (*httptest.ResponseRecorder, error) {
	rec := httptest.NewRecorder()
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), rec, nil)
	return rec, h.ServeHTTP(rec, req, next)
}

// limStreamNext is an inner handler that answers with an event stream.
func limStreamNext(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	_, err := io.WriteString(w, "data: x\n\n")
	return err
}

// limSilentAddr returns a loopback address that accepts connections and
// never answers, until the test ends.
func limSilentAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// limClosedAddr returns a loopback address nothing listens on.
func limClosedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// limOnlyKey returns a key of m, the only one when m has one.
func limOnlyKey(m map[string]int) string {
	for k := range m {
		return k
	}
	return ""
}
