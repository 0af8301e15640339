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

package e2e

// What each hop operators put in front of Caddy does to an event stream:
// Debian's haproxy, apache2 (mod_proxy_http, mod_deflate), varnish, squid,
// lighttpd (mod_proxy) and nginx with gzip, each run by the test in the
// foreground on a free loopback port, with every file it writes in the
// test's directory, and its upstream (read) timeout at 3 s. Each proxies to
// one Caddy with two routes to one scripted upstream: /raw/... through a
// stock reverse_proxy (the control), everything else through
// sse { heartbeat 1s }.

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"
)

// hopQuiet is the quiet stretch in the upstream's stream, between events 3
// and 4: about three times the hops' 3 s timeouts.
const hopQuiet = 10 * time.Second

// hopChain is a scripted event-stream upstream behind one Caddy, for a hop
// to proxy to. The upstream writes events 1..n (query n, 5 by default),
// gap apart (query gap, eventGap by default), with a quiet stretch before
// event 4 (query quiet, hopQuiet by default), and ends the response. It
// notes when it wrote each event in the write log of the request's case
// (query case).
type hopChain struct {
	caddy *caddyProc

	mu       sync.Mutex
	writes   map[string]*writeLog
	requests map[string]int
}

// startHopChain starts the upstream and Caddy: /raw/... reaches the
// upstream through a stock reverse_proxy, every other path through sse
// with heartbeats every second.
func startHopChain(t *testing.T) *hopChain {
	t.Helper()
	h := &hopChain{writes: make(map[string]*writeLog), requests: make(map[string]int)}
	upstream := func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		name := q.Get("case")
		log := h.log(name)
		h.mu.Lock()
		h.requests[name]++
		h.mu.Unlock()
		n, gap, quietFor := 5, eventGap, hopQuiet
		if v, err := strconv.Atoi(q.Get("n")); err == nil {
			n = v
		}
		if v, err := time.ParseDuration(q.Get("gap")); err == nil {
			gap = v
		}
		if v, err := time.ParseDuration(q.Get("quiet")); err == nil {
			quietFor = v
		}
		streamHead(w)
		for i := 1; i <= n; i++ {
			wait := gap
			if i == 4 {
				wait = quietFor
			}
			if i > 1 && !quiet(r, wait) {
				return
			}
			id := strconv.Itoa(i)
			at, err := send(w, event{ID: id, Data: "event " + id + " of case " + name}.encode())
			if err != nil {
				return
			}
			log.note(id, at)
		}
	}
	h.caddy = startCaddy(t, startUpstream(t, upstream), `
http://127.0.0.1:{{.HTTP}} {
	handle /raw/* {
		reverse_proxy {{.Upstream}}
	}
	handle {
		sse {
			heartbeat 1s
		}
		reverse_proxy {{.Upstream}}
	}
}`)
	return h
}

// log returns the write log of a case.
func (h *hopChain) log(name string) *writeLog {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.writes[name] == nil {
		h.writes[name] = new(writeLog)
	}
	return h.writes[name]
}

// requestsOf counts the upstream's requests of a case.
func (h *hopChain) requestsOf(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.requests[name]
}

// backend is Caddy's host:port, for the hop's configuration.
func (h *hopChain) backend() string { return fmt.Sprintf("127.0.0.1:%d", h.caddy.HTTP) }

// hopProc is a hop's subprocess. Its exported fields are the template data
// of its configuration file.
type hopProc struct {
	Dir     string // every file the hop writes
	Port    int    // where it listens, on 127.0.0.1
	Alt     int    // a second port, for a second configuration side by side
	Backend string // Caddy's host:port
	// Caddy's host and port apart
	BackendHost, BackendPort string
	Conf                     string // the configuration file
	Root                     bool   // the test runs as root
}

// URL is the address the hop listens on.
func (p *hopProc) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.Port) }

// AltURL is the hop's second address.
func (p *hopProc) AltURL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.Alt) }

// startHop writes the hop's configuration from conf, a template over
// hopProc, runs the command that args makes from it in the foreground until
// the test ends, and waits until both of its ports accept connections. logs
// are the files the hop writes that a failed test prints, relative to Dir.
func startHop(t *testing.T, name, bin, conf string, backend string, prepare func(p *hopProc), args func(p *hopProc) []string, logs ...string) *hopProc {
	t.Helper()
	p := &hopProc{Dir: t.TempDir(), Port: freePort(t), Alt: freePort(t), Backend: backend, Root: os.Geteuid() == 0}
	p.Conf = filepath.Join(p.Dir, name+".conf")
	var err error
	if p.BackendHost, p.BackendPort, err = net.SplitHostPort(backend); err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(p)
	}
	var text strings.Builder
	if err := template.Must(template.New(name).Parse(conf)).Execute(&text, p); err != nil {
		t.Fatalf("%s config template: %v", name, err)
	}
	if err := os.WriteFile(p.Conf, []byte(text.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, l := range logs {
		paths = append(paths, filepath.Join(p.Dir, l))
	}
	t.Cleanup(func() {
		if t.Failed() && conf != "" {
			t.Logf("%s config:\n%s", name, text.String())
		}
	})
	cmd := exec.Command(bin, args(p)...)
	cmd.Dir = p.Dir
	stderr := filepath.Join(p.Dir, "stderr.log")
	exited := startDaemon(t, name, cmd, stderr, paths...)
	deadline := time.Now().Add(30 * time.Second)
	for _, port := range []int{p.Port, p.Alt} {
		for {
			conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
			if err == nil {
				conn.Close()
				break
			}
			select {
			case <-exited:
				b, _ := os.ReadFile(stderr)
				t.Fatalf("%s exited: %s", name, b)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not listening on %d after 30s: %v", name, port, err)
			}
			time.Sleep(50 * time.Millisecond) // polling a condition
		}
	}
	return p
}

// lazyGzip decompresses a gzip body as it arrives: gzip.NewReader reads the
// gzip header, so it is made on the first Read, in the reader's goroutine.
type lazyGzip struct {
	body io.Reader
	zr   *gzip.Reader
}

func (z *lazyGzip) Read(p []byte) (int, error) {
	if z.zr == nil {
		zr, err := gzip.NewReader(z.body)
		if err != nil {
			return 0, err
		}
		z.zr = zr
	}
	return z.zr.Read(p)
}

// hopRequest is a GET sent in the background, so that a test's streams
// run side by side and are checked one after the other: the reader of its
// body stamps each chunk as it arrives, whenever the test looks.
type hopRequest struct {
	done chan struct{} // closed when the response header came, or the request failed
	res  *http.Response
	err  error
	head time.Time  // when the response header came
	r    *sseReader // the body's events, decompressed if it came gzip-encoded
}

// sendHop sends a GET for url with Accept: text/event-stream, and
// Accept-Encoding: gzip if gzip, in the background. The request ends when
// the test does.
func sendHop(t *testing.T, url string, gzip bool) *hopRequest {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if gzip {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	q := &hopRequest{done: make(chan struct{})}
	go func() {
		defer close(q.done)
		q.res, q.err = h1Client().Do(req)
		q.head = time.Now()
		if q.err != nil {
			return
		}
		var body io.Reader = q.res.Body
		if q.res.Header.Get("Content-Encoding") == "gzip" {
			body = &lazyGzip{body: q.res.Body}
		}
		q.r = newSSEReader(body)
	}()
	t.Cleanup(func() {
		cancel()
		<-q.done
		if q.res != nil {
			q.res.Body.Close()
		}
	})
	return q
}

// wait returns the response, once its header came; it fails the test if
// the request failed, or no header came in time.
func (q *hopRequest) wait(t *testing.T, timeout time.Duration) *http.Response {
	t.Helper()
	select {
	case <-q.done:
	case <-time.After(timeout):
		t.Fatalf("no response header after %v", timeout)
	}
	if q.err != nil {
		t.Fatalf("request: %v", q.err)
	}
	return q.res
}

// stream waits for a 200 response and returns the reader of its events.
func (q *hopRequest) stream(t *testing.T) *sseReader {
	t.Helper()
	if res := q.wait(t, hopQuiet+20*time.Second); res.StatusCode != http.StatusOK {
		t.Fatalf("status %s, want 200", res.Status)
	}
	return q.r
}

// hopClient is what a client asks of a hop, and what the stock control
// must show.
type hopClient struct {
	// gzip: the client sends Accept-Encoding: gzip, the hop must answer
	// Content-Encoding: gzip, and the client decompresses as bytes arrive
	gzip bool
	// buffered: without sse, the hop holds event 1 back until event 2 is
	// written
	buffered bool
}

// checkHopStreams runs the stock control and the sse case through a hop
// at base side by side: the first must be cut at the hop's timeout in the
// quiet stretch, the second survive with every event, each before the
// next was written.
func checkHopStreams(t *testing.T, h *hopChain, base string, c hopClient) {
	t.Helper()
	cases := []struct {
		name string
		path string
		sse  bool
		req  *hopRequest
	}{
		{name: "WithSSE", path: "/events", sse: true},
		{name: "WithoutSSE", path: "/raw/events"},
	}
	for i, tc := range cases {
		cases[i].req = sendHop(t, base+tc.path+"?case="+t.Name()+"/"+tc.name, c.gzip)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.req.stream(t)
			res := tc.req.res
			ce, cc := res.Header.Get("Content-Encoding"), res.Header.Get("Cache-Control")
			t.Logf("Content-Encoding %q, Cache-Control %q", ce, cc)
			if c.gzip && ce != "gzip" {
				t.Fatalf("Content-Encoding %q, want gzip", ce)
			}
			if tc.sse && !strings.Contains(cc, "no-transform") {
				t.Errorf("Cache-Control %q, want no-transform from sse", cc)
			}
			if tc.sse {
				checkStreamSurvives(t, r, h.log(t.Name()), hopQuiet)
			} else {
				checkStreamFails(t, r, h.log(t.Name()), hopQuiet, c.buffered)
			}
		})
	}
}

// hopDelays reads n events of a stream and returns each one's delay, from
// the upstream's write to its receipt. It fails the test unless every
// event arrived, each before the next was written.
func hopDelays(t *testing.T, h *hopChain, r *sseReader, name string, n int) []time.Duration {
	t.Helper()
	if !r.next(n, time.Duration(n)*time.Second+20*time.Second) {
		t.Fatalf("got %d events, want %d; end %v; body %q", len(r.events), n, r.end, r.raw.String())
	}
	var delays []time.Duration
	for i, ev := range r.events[:n] {
		if want := strconv.Itoa(i + 1); ev.ID != want {
			t.Fatalf("event %d has id %q, want %s", i, ev.ID, want)
		}
		w, ok := h.log(name).get(ev.ID)
		if !ok {
			t.Fatalf("event %s arrived before the upstream noted its write", ev.ID)
		}
		delays = append(delays, ev.at.Sub(w))
		if i+1 < n {
			if next, ok := h.log(name).get(strconv.Itoa(i + 2)); ok && !ev.at.Before(next) {
				t.Errorf("event %s arrived %v after the upstream wrote the next: held back", ev.ID, ev.at.Sub(next))
			}
		}
	}
	return delays
}

// median is the middle of ds (the upper middle for an even count).
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// rounded rounds each delay to 100 µs, for the log.
func rounded(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(100 * time.Microsecond)
	}
	return out
}

// haproxyConf is HAProxy with 3 s timeouts on both sides in front of
// Caddy: its defaults on Port, option http-no-delay on Alt.
const haproxyConf = `global
	pidfile {{.Dir}}/haproxy.pid
defaults
	mode http
	timeout connect 3s
	timeout client 3s
	timeout server 3s
listen defaults
	bind 127.0.0.1:{{.Port}}
	server caddy {{.Backend}}
listen nodelay
	bind 127.0.0.1:{{.Alt}}
	option http-no-delay
	server caddy {{.Backend}}
`

// startHAProxy runs Debian's haproxy in the foreground (-db) in front of
// Caddy, with the configuration conf, a template over hopProc.
func startHAProxy(t *testing.T, backend, conf string) *hopProc {
	t.Helper()
	bin := requireTool(t, "haproxy", "/usr/sbin/haproxy")
	return startHop(t, "haproxy", bin, conf, backend, nil, func(p *hopProc) []string {
		return []string{"-db", "-f", p.Conf}
	})
}

// TestHopHAProxy runs Debian's HAProxy 2.6 with timeout server 3s (and
// timeout client 3s) in front of Caddy: with sse, every event passes and
// a 10 s quiet stretch survives on heartbeats; the stock route's stream is
// cut at the timeout.
func TestHopHAProxy(t *testing.T) {
	t.Parallel()
	h := startHopChain(t)
	hp := startHAProxy(t, h.backend(), haproxyConf)
	checkHopStreams(t, h, hp.URL(), hopClient{})
}

// TestHopHAProxyDelay measures how long HAProxy 2.6 holds each event of a
// stream written an event every 700 ms (no heartbeat between them), with
// its defaults and with option http-no-delay, through the sse route and
// the stock one. With its defaults HAProxy holds every event but the last,
// which ends the response, for a median of at least 100 ms (about 200 ms
// here); with http-no-delay the median is under 100 ms (under 1 ms here).
// sse changes neither: the delay is HAProxy's.
func TestHopHAProxyDelay(t *testing.T) {
	t.Parallel()
	const n = 6
	h := startHopChain(t)
	hp := startHAProxy(t, h.backend(), haproxyConf)
	cases := []struct {
		name    string
		url     string
		noDelay bool
		req     *hopRequest
	}{
		{name: "Defaults/WithSSE", url: hp.URL() + "/events"},
		{name: "Defaults/WithoutSSE", url: hp.URL() + "/raw/events"},
		{name: "NoDelay/WithSSE", url: hp.AltURL() + "/events", noDelay: true},
		{name: "NoDelay/WithoutSSE", url: hp.AltURL() + "/raw/events", noDelay: true},
	}
	for i, tc := range cases {
		cases[i].req = sendHop(t, tc.url+"?n="+strconv.Itoa(n)+"&gap=700ms&quiet=700ms&case="+t.Name()+"/"+tc.name, false)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			delays := hopDelays(t, h, tc.req.stream(t), t.Name(), n)
			// the last event goes with the end of the response, at once
			m := median(delays[:n-1])
			t.Logf("delays %v; median of events 1-%d %v", rounded(delays), n-1, m.Round(100*time.Microsecond))
			switch {
			case tc.noDelay && m >= 100*time.Millisecond:
				t.Errorf("with option http-no-delay HAProxy held events a median %v, want < 100ms", m)
			case !tc.noDelay && m < 100*time.Millisecond:
				t.Errorf("with its defaults HAProxy held events a median %v, want >= 100ms: it no longer holds them back", m)
			}
		})
	}
}

// haproxyGzipConf is HAProxy compressing text/event-stream responses with
// gzip.
const haproxyGzipConf = `global
	pidfile {{.Dir}}/haproxy.pid
defaults
	mode http
	timeout connect 3s
	timeout client 30s
	timeout server 30s
listen gzip
	bind 127.0.0.1:{{.Port}}
	bind 127.0.0.1:{{.Alt}}
	compression algo gzip
	compression type text/event-stream
	server caddy {{.Backend}}
`

// TestHopHAProxyCompression runs HAProxy with compression algo gzip and
// compression type text/event-stream, and a client that sends
// Accept-Encoding: gzip. HAProxy leaves sse's stream, which says
// Cache-Control: no-transform, uncompressed, and passes each event before
// the next is written. The stock route's stream, which does not say
// no-transform, it compresses, and holds back: event 1 arrives only when
// the response ends, after the upstream wrote event 3.
func TestHopHAProxyCompression(t *testing.T) {
	t.Parallel()
	const n = 3
	h := startHopChain(t)
	hp := startHAProxy(t, h.backend(), haproxyGzipConf)
	query := "?n=" + strconv.Itoa(n) + "&case=" + t.Name()
	withSSE := sendHop(t, hp.URL()+"/events"+query+"/WithSSE", true)
	stock := sendHop(t, hp.URL()+"/raw/events"+query+"/WithoutSSE", true)
	t.Run("WithSSE", func(t *testing.T) {
		r := withSSE.stream(t)
		ce := withSSE.res.Header.Get("Content-Encoding")
		t.Logf("Content-Encoding %q, Cache-Control %q", ce, withSSE.res.Header.Get("Cache-Control"))
		if ce != "" {
			t.Errorf("Content-Encoding %q through HAProxy's compression, want none: the stream says no-transform", ce)
		}
		t.Logf("delays %v", rounded(hopDelays(t, h, r, t.Name(), n)))
	})
	t.Run("WithoutSSE", func(t *testing.T) {
		r := stock.stream(t)
		ce := stock.res.Header.Get("Content-Encoding")
		t.Logf("Content-Encoding %q, Cache-Control %q", ce, stock.res.Header.Get("Cache-Control"))
		if ce != "gzip" {
			t.Fatalf("Content-Encoding %q on the stock stream, want gzip: HAProxy's compression is not on, the control shows nothing", ce)
		}
		if !r.next(n, 20*time.Second) {
			t.Fatalf("got %d events, want %d; end %v; body %q", len(r.events), n, r.end, r.raw.String())
		}
		last, _ := h.log(t.Name()).get(strconv.Itoa(n))
		if r.events[0].at.Before(last) {
			t.Errorf("event 1 of the compressed stream arrived before event %d was written: HAProxy's compression no longer holds events back", n)
		}
		t.Logf("event 1 arrived %v after the upstream wrote event %d", r.events[0].at.Sub(last).Round(100*time.Microsecond), n)
	})
}

// apacheConf is Apache httpd (mod_proxy_http, event MPM) in front of
// Caddy, with ProxyTimeout 3: plain on Port, and with mod_deflate
// compressing text/event-stream on Alt.
const apacheConf = `ServerRoot {{.Dir}}
ServerName 127.0.0.1
Listen 127.0.0.1:{{.Port}}
Listen 127.0.0.1:{{.Alt}}
PidFile {{.Dir}}/apache2.pid
DefaultRuntimeDir {{.Dir}}
ErrorLog {{.Dir}}/error.log
LogLevel warn
Mutex posixsem
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so
LoadModule proxy_http_module /usr/lib/apache2/modules/mod_proxy_http.so
LoadModule filter_module /usr/lib/apache2/modules/mod_filter.so
LoadModule deflate_module /usr/lib/apache2/modules/mod_deflate.so
{{if .Root}}User www-data
Group www-data
{{end}}ProxyTimeout 3
<VirtualHost 127.0.0.1:{{.Port}}>
	ProxyPass / http://{{.Backend}}/
</VirtualHost>
<VirtualHost 127.0.0.1:{{.Alt}}>
	ProxyPass / http://{{.Backend}}/
	AddOutputFilterByType DEFLATE text/event-stream
</VirtualHost>
`

func startApache(t *testing.T, backend string) *hopProc {
	t.Helper()
	bin := requireTool(t, "apache2", "/usr/sbin/apache2")
	return startHop(t, "apache2", bin, apacheConf, backend, nil, func(p *hopProc) []string {
		return []string{"-d", p.Dir, "-f", p.Conf, "-D", "FOREGROUND"}
	}, "error.log")
}

// TestHopApache runs Debian's Apache httpd 2.4 with mod_proxy_http and
// ProxyTimeout 3 in front of Caddy: with sse, every event passes and a
// 10 s quiet stretch survives on heartbeats; the stock route's stream is
// cut at the timeout.
func TestHopApache(t *testing.T) {
	t.Parallel()
	h := startHopChain(t)
	ap := startApache(t, h.backend())
	checkHopStreams(t, h, ap.URL(), hopClient{})
}

// TestHopApacheDeflate runs Apache with mod_deflate compressing
// text/event-stream (AddOutputFilterByType DEFLATE text/event-stream) and a
// client that sends Accept-Encoding: gzip: Apache compresses sse's stream
// although it says Cache-Control: no-transform, and the stream still flows
// event by event (mod_deflate flushes with each flush mod_proxy_http
// passes), survives the quiet stretch on heartbeats and ends cleanly. The
// stock route's stream, compressed too and flowing too, is cut at
// ProxyTimeout.
func TestHopApacheDeflate(t *testing.T) {
	t.Parallel()
	h := startHopChain(t)
	ap := startApache(t, h.backend())
	checkHopStreams(t, h, ap.AltURL(), hopClient{gzip: true})
}

// nginxGzipConf is nginx in front of Caddy over HTTP/1.1 with gzip on for
// text/event-stream and proxy_read_timeout 3s (proxy_buffering on, nginx's
// default).
const nginxGzipConf = `{{if .Root}}user root;
{{end}}worker_processes 1;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log info;
events {
	worker_connections 64;
}
http {
	access_log {{.Dir}}/access.log;
	client_body_temp_path {{.Dir}}/client_body;
	proxy_temp_path {{.Dir}}/proxy;
	fastcgi_temp_path {{.Dir}}/fastcgi;
	uwsgi_temp_path {{.Dir}}/uwsgi;
	scgi_temp_path {{.Dir}}/scgi;
	gzip on;
	gzip_types text/event-stream;
	server {
		listen 127.0.0.1:{{.Port}};
		listen 127.0.0.1:{{.Alt}};
		proxy_read_timeout 3s;
		location / {
			proxy_pass http://{{.Backend}};
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
`

// TestHopNginxGzip runs nginx with gzip on and gzip_types
// text/event-stream in front of Caddy, and a client that sends
// Accept-Encoding: gzip: nginx compresses sse's stream although it says
// Cache-Control: no-transform, and the stream still flows event by event,
// survives the quiet stretch on heartbeats and ends cleanly (sse's
// X-Accel-Buffering: no turns nginx's buffering off, and gzip flushes with
// every unbuffered write). The stock route's stream, compressed too, is
// held back in gzip's buffers, and cut at proxy_read_timeout: its events
// arrive only then.
func TestHopNginxGzip(t *testing.T) {
	t.Parallel()
	bin := requireTool(t, "nginx", "/usr/sbin/nginx")
	h := startHopChain(t)
	ng := startHop(t, "nginx", bin, nginxGzipConf, h.backend(), nil, func(p *hopProc) []string {
		return []string{"-p", p.Dir, "-c", p.Conf, "-g", "daemon off;"}
	}, "error.log")
	checkHopStreams(t, h, ng.URL(), hopClient{gzip: true, buffered: true})
}

// startVarnish runs Debian's varnishd in the foreground in front of
// Caddy, with between_bytes_timeout and first_byte_timeout 3 s, its working
// directory (-n) in the test's directory, no management port, and the
// given parameters (name=value; a later one wins). vcl is a template of the VCL file over
// hopProc, or "" for Varnish's built-in VCL with Caddy as its backend (-b).
func startVarnish(t *testing.T, backend, vcl string, params ...string) *hopProc {
	t.Helper()
	bin := requireTool(t, "varnishd", "/usr/sbin/varnishd")
	// varnishd listens on both ports
	return startHop(t, "varnishd", bin, vcl, backend, nil, func(p *hopProc) []string {
		args := []string{"-F", "-n", filepath.Join(p.Dir, "varnish"), "-T", "none",
			"-a", fmt.Sprintf("127.0.0.1:%d", p.Port), "-a", fmt.Sprintf("127.0.0.1:%d", p.Alt),
			"-s", "malloc,32m", "-p", "between_bytes_timeout=3", "-p", "first_byte_timeout=3"}
		if p.Root {
			// no jail: the unprivileged users of Varnish's unix jail could
			// not read the VCL in the test's private directory
			args = append(args, "-j", "none")
		}
		for _, param := range params {
			args = append(args, "-p", param)
		}
		if vcl == "" {
			return append(args, "-b", p.Backend)
		}
		return append(args, "-f", p.Conf)
	})
}

// TestHopVarnish runs Debian's Varnish 7.1 with its built-in VCL and
// between_bytes_timeout 3 s in front of Caddy: with sse, every event passes
// at once (Varnish streams the fetch, beresp.do_stream is on by default)
// and a 10 s quiet stretch survives on heartbeats; the stock route's stream
// is cut at between_bytes_timeout. idle_send_timeout 3 s, Varnish's limit
// on a single write to the client, does not cut a client that reads.
func TestHopVarnish(t *testing.T) {
	t.Parallel()
	h := startHopChain(t)
	v := startVarnish(t, h.backend(), "", "idle_send_timeout=3")
	checkHopStreams(t, h, v.URL(), hopClient{})
}

// TestHopVarnishSendTimeout runs Varnish with its built-in VCL and
// send_timeout 5 s: Varnish cuts sse's stream about 5 s after it began,
// heartbeats or not, before the quiet stretch ends. send_timeout bounds a
// whole HTTP/1 response through Varnish (600 s by default), not a quiet
// stretch, so no stream through Varnish outlives it.
func TestHopVarnishSendTimeout(t *testing.T) {
	t.Parallel()
	h := startHopChain(t)
	v := startVarnish(t, h.backend(), "", "send_timeout=5")
	name := t.Name()
	start := time.Now()
	res, _ := openStream(t, h1Client(), v.URL()+"/events?case="+name, "Accept", "text/event-stream")
	r := newSSEReader(res.Body)
	end := r.waitEnd(hopQuiet + 20*time.Second)
	if end == nil {
		t.Fatalf("stream did not end; events %d", len(r.events))
	}
	if _, ok := h.log(name).get("4"); ok || len(r.events) > 3 {
		t.Errorf("stream outlived send_timeout: %d events", len(r.events))
	}
	if len(r.events) != 3 {
		t.Errorf("got %d events before the cut, want 3", len(r.events))
	}
	w3, _ := h.log(name).get("3")
	if n := r.commentsBetween(w3, end.at); n < 2 {
		t.Errorf("got %d heartbeats before the cut, want >= 2: the stream was not kept busy", n)
	}
	if cut := end.at.Sub(start); cut < 4*time.Second || cut > 8*time.Second {
		t.Errorf("stream ended %v after it began, want about 5s (send_timeout)", cut)
	}
	t.Logf("sse's stream cut %v after it began, %d heartbeats before (%v)",
		end.at.Sub(start).Round(time.Millisecond), len(r.comments), end.err)
}

// varnishPipeVCL hands requests that accept text/event-stream to pipe
// mode, where Varnish copies bytes both ways without send_timeout or
// between_bytes_timeout; pipe_timeout bounds a quiet stretch instead.
const varnishPipeVCL = `vcl 4.1;
backend caddy {
	.host = "{{.BackendHost}}";
	.port = "{{.BackendPort}}";
}
sub vcl_recv {
	if (req.http.Accept ~ "text/event-stream") {
		return (pipe);
	}
}
`

// TestHopVarnishPipe runs Varnish with a VCL that pipes event-stream
// requests, send_timeout 5 s, pipe_timeout 3 s and between_bytes_timeout
// back at its default, 60 s: with sse the stream outlives send_timeout and
// survives the 10 s quiet stretch on heartbeats; the stock route's stream
// is cut at pipe_timeout.
func TestHopVarnishPipe(t *testing.T) {
	t.Parallel()
	h := startHopChain(t)
	v := startVarnish(t, h.backend(), varnishPipeVCL, "send_timeout=5", "pipe_timeout=3", "between_bytes_timeout=60")
	checkHopStreams(t, h, v.URL(), hopClient{})
}

// TestHopVarnishShares runs two clients for the same URL through
// Varnish's built-in VCL, the second opened once the first has its second
// event. The stock stream, which has no Cache-Control, Varnish caches (its
// default TTL, 120 s): the second client gets the first client's stream
// from the one fetch the upstream saw, events 1 and 2 at once. sse's
// stream says no-cache: Varnish fetches it anew for the second client.
func TestHopVarnishShares(t *testing.T) {
	t.Parallel()
	h := startHopChain(t)
	v := startVarnish(t, h.backend(), "")
	for _, tc := range []struct {
		name string
		path string
		sse  bool
	}{
		{"WithSSE", "/events", true},
		{"WithoutSSE", "/raw/events", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each second client opens while its first stream is live
			url := v.URL() + tc.path + "?n=3&gap=1s&quiet=1s&case=" + t.Name()
			first := sendHop(t, url, false).stream(t)
			if !first.next(2, 20*time.Second) {
				t.Fatalf("first client: got %d events, want 2; end %v", len(first.events), first.end)
			}
			opened := time.Now()
			req := sendHop(t, url, false)
			second := req.stream(t)
			if !second.next(3, 20*time.Second) {
				t.Fatalf("second client: got %d events, want 3; end %v", len(second.events), second.end)
			}
			fetches := h.requestsOf(t.Name())
			var at []time.Duration
			for _, ev := range second.events {
				at = append(at, ev.at.Sub(opened).Round(time.Millisecond))
			}
			t.Logf("upstream fetches %d; the second client's events %v after it opened; Age %q, X-Varnish %q",
				fetches, at, req.res.Header.Get("Age"), req.res.Header.Get("X-Varnish"))
			if tc.sse {
				if fetches != 2 {
					t.Errorf("upstream fetches %d, want 2: Varnish shared an sse stream", fetches)
				}
				return
			}
			if fetches != 1 {
				t.Errorf("upstream fetches %d, want 1: Varnish did not share the stock stream, the control shows nothing", fetches)
			}
			// events 1 and 2 are the cached ones, replayed at once; a stream
			// of its own would bring event 2 a second after event 1
			if d := second.events[1].at.Sub(opened); d > 500*time.Millisecond {
				t.Errorf("the second client's event 2 arrived %v after it opened, want at once: not replayed from the cache", d)
			}
		})
	}
}

// squidConf is Squid as a reverse proxy (accel) in front of Caddy, with
// read_timeout 3 seconds, no disk cache, nothing in shared memory, every
// file in Dir, and its DNS client's UDP socket on the loopback too
// (udp_incoming_address).
const squidConf = `http_port 127.0.0.1:{{.Port}} accel
http_port 127.0.0.1:{{.Alt}} accel
cache_peer {{.BackendHost}} parent {{.BackendPort}} 0 no-query originserver name=caddy
cache_peer_access caddy allow all
http_access allow all
read_timeout 3 seconds
pid_filename {{.Dir}}/squid.pid
cache_log {{.Dir}}/cache.log
access_log stdio:{{.Dir}}/access.log
cache_store_log none
coredump_dir {{.Dir}}
netdb_filename none
memory_cache_shared off
collapsed_forwarding_shared_entries_limit 0
shutdown_lifetime 1 seconds
udp_incoming_address 127.0.0.1
`

// startSquid runs Debian's squid in the foreground (-N) in front of Caddy.
// As root, Squid works as the proxy user (cache_effective_user): the test's
// directory is then its, and the directory above it open to it.
func startSquid(t *testing.T, backend string) *hopProc {
	t.Helper()
	bin := requireTool(t, "squid", "/usr/sbin/squid")
	return startHop(t, "squid", bin, squidConf, backend, func(p *hopProc) {
		if !p.Root {
			return
		}
		u, err := user.Lookup("proxy")
		if err != nil {
			t.Fatalf("squid's user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(p.Dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Dir(p.Dir), 0o711); err != nil {
			t.Fatal(err)
		}
	}, func(p *hopProc) []string {
		// -n: the service name, which names Squid's shared memory
		// segments, is the test's own
		return []string{"-N", "-n", fmt.Sprintf("sse%d", p.Port), "-f", p.Conf}
	}, "cache.log")
}

// TestHopSquid runs Debian's Squid 5 as a reverse proxy with read_timeout
// 3 seconds in front of Caddy: with sse, every event passes and a 10 s
// quiet stretch survives on heartbeats; the stock route's stream is cut at
// read_timeout.
func TestHopSquid(t *testing.T) {
	t.Parallel()
	h := startHopChain(t)
	sq := startSquid(t, h.backend())
	checkHopStreams(t, h, sq.URL(), hopClient{})
}

// lighttpdConf is lighttpd with mod_proxy in front of Caddy, read-timeout
// 3 s: with its default server.stream-response-body (0) on Port, with
// server.stream-response-body = 2 on Alt.
const lighttpdConf = `server.document-root = "{{.Dir}}"
server.bind = "127.0.0.1"
server.port = {{.Port}}
server.errorlog = "{{.Dir}}/error.log"
server.modules = ("mod_proxy")
proxy.server = ("" => ((
	"host" => "{{.BackendHost}}",
	"port" => {{.BackendPort}},
	"read-timeout" => 3,
)))
$SERVER["socket"] == "127.0.0.1:{{.Alt}}" {
	server.stream-response-body = 2
}
`

func startLighttpd(t *testing.T, backend string) *hopProc {
	t.Helper()
	bin := requireTool(t, "lighttpd", "/usr/sbin/lighttpd")
	return startHop(t, "lighttpd", bin, lighttpdConf, backend, nil, func(p *hopProc) []string {
		return []string{"-D", "-f", p.Conf}
	}, "error.log")
}

// TestHopLighttpd runs Debian's lighttpd 1.4 with mod_proxy,
// server.stream-response-body = 2 and read-timeout 3 s in front of Caddy:
// with sse, every event passes and a 10 s quiet stretch survives on
// heartbeats; the stock route's stream is cut at read-timeout.
func TestHopLighttpd(t *testing.T) {
	t.Parallel()
	h := startHopChain(t)
	lt := startLighttpd(t, h.backend())
	checkHopStreams(t, h, lt.AltURL(), hopClient{})
}

// TestHopLighttpdBuffers shows what lighttpd 1.4 does to an event stream
// with its default server.stream-response-body (0): it holds the whole
// response, header included, until the upstream ends it, and sends it
// then with a Content-Length; sse's X-Accel-Buffering: no does not change
// that. Through a quiet stretch sse's heartbeats keep read-timeout from
// firing, but they too reach the client only at the end; the stock
// stream's quiet stretch ends in an error status at read-timeout, nothing
// of the stream sent. With server.stream-response-body = 2 each event
// arrives before the next is written, with sse or without.
func TestHopLighttpdBuffers(t *testing.T) {
	t.Parallel()
	const short = "n=3&quiet=500ms" // three events 500 ms apart, then the end
	h := startHopChain(t)
	lt := startLighttpd(t, h.backend())
	cases := []struct {
		name  string
		url   string
		sse   bool
		quiet bool // the stream has the quiet stretch
		flows bool // server.stream-response-body = 2
		req   *hopRequest
		sent  time.Time
	}{
		{name: "Default/WithSSE", url: lt.URL() + "/events?" + short, sse: true},
		{name: "Default/WithoutSSE", url: lt.URL() + "/raw/events?" + short},
		{name: "Default/Quiet/WithSSE", url: lt.URL() + "/events?", sse: true, quiet: true},
		{name: "Default/Quiet/WithoutSSE", url: lt.URL() + "/raw/events?", quiet: true},
		{name: "StreamResponseBody2/WithSSE", url: lt.AltURL() + "/events?" + short, sse: true, flows: true},
		{name: "StreamResponseBody2/WithoutSSE", url: lt.AltURL() + "/raw/events?" + short, flows: true},
	}
	for i, tc := range cases {
		cases[i].sent = time.Now()
		cases[i].req = sendHop(t, tc.url+"&case="+t.Name()+"/"+tc.name, false)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			log := h.log(t.Name())
			if tc.quiet && !tc.sse {
				// the stock stream, cut at read-timeout before lighttpd
				// sent anything
				res := tc.req.wait(t, hopQuiet+20*time.Second)
				if res.StatusCode == http.StatusOK {
					t.Fatalf("status 200 for the stock stream cut at read-timeout, want an error")
				}
				w3, _ := log.get("3")
				if cut := tc.req.head.Sub(w3); cut < 2*time.Second || cut > hopQuiet-time.Second {
					t.Errorf("lighttpd answered %v after the last write, want about 3s (read-timeout)", cut)
				}
				t.Logf("lighttpd answered %s (Content-Type %q) %v after the last write",
					res.Status, res.Header.Get("Content-Type"), tc.req.head.Sub(w3).Round(time.Millisecond))
				return
			}
			r := tc.req.stream(t)
			if tc.flows {
				t.Logf("delays %v", rounded(hopDelays(t, h, r, t.Name(), 3)))
				return
			}
			n := 3
			if tc.quiet {
				n = 5
			}
			if !r.next(n, hopQuiet+20*time.Second) {
				t.Fatalf("got %d events, want %d; end %v", len(r.events), n, r.end)
			}
			head := tc.req.head
			if last, _ := log.get(strconv.Itoa(n)); head.Before(last) || r.events[0].at.Before(last) {
				t.Errorf("the header came %v and event 1 %v after the request, before the upstream wrote event %d: lighttpd no longer buffers the response",
					head.Sub(tc.sent), r.events[0].at.Sub(tc.sent), n)
			}
			if res := tc.req.res; res.ContentLength < 0 {
				t.Errorf("no Content-Length: lighttpd streamed the response")
			}
			if tc.quiet && len(r.comments) < 5 {
				t.Errorf("%d heartbeats in the buffered response, want >= 5 from the %v quiet stretch", len(r.comments), hopQuiet)
			}
			t.Logf("header %v, event 1 %v after the request; Content-Length %d; %d comment lines",
				head.Sub(tc.sent).Round(time.Millisecond), r.events[0].at.Sub(tc.sent).Round(time.Millisecond),
				tc.req.res.ContentLength, len(r.comments))
		})
	}
}
