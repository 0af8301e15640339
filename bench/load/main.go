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

// Command load opens many event streams to one URL, holds them, and reports
// what the server in front of them costs, as JSON on stdout.
//
// Each stream is its own HTTP/1.1 connection, from source addresses taken in
// turn from -src, so 10,000 streams fit in the loopback port range. A stream
// counts as open once its first body byte arrives. The tool:
//
//  1. opens and closes a few warm-up streams, then samples the server's
//     resident memory (VmRSS of -pid and its children, from /proc) as the
//     baseline;
//  2. opens the streams in stages (-stages 1000,10000), and after each stage
//     is open and has settled, samples the memory again;
//  3. then, for -window, counts events, heartbeat comments and bytes,
//     measures the delivery latency of every event (the client's clock minus
//     the Unix-nanosecond send time the upstream puts first in each event's
//     data) and the server's CPU time (utime+stime from /proc/<pid>/stat).
//
// A gzip-encoded stream is decoded and parsed; any other content coding is
// only counted in bytes.
package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"math/bits"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type config struct {
	url      *url.URL
	stages   []int
	conc     int
	src      []net.IP
	ae       string
	pid      int
	warmup   int
	settle   time.Duration
	window   time.Duration
	openWait time.Duration
	fetch    string
	fetchOut string
}

func main() {
	var (
		rawURL   = flag.String("url", "", "stream URL, http://host:port/path")
		n        = flag.Int("n", 1, "streams to open (when -stages is not set)")
		stages   = flag.String("stages", "", "comma-separated cumulative stream counts to open and sample, e.g. 1000,10000")
		conc     = flag.Int("conc", 200, "streams being opened at once")
		src      = flag.String("src", "127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4", "comma-separated source addresses, used in turn")
		ae       = flag.String("ae", "", "Accept-Encoding request header (none if empty)")
		pid      = flag.Int("pid", 0, "server process to account (with its children); 0 for none")
		warmup   = flag.Int("warmup", 10, "streams opened and closed before the baseline sample")
		settle   = flag.Duration("settle", 5*time.Second, "wait after each stage is open before sampling memory")
		window   = flag.Duration("window", 10*time.Second, "measurement window after the last stage")
		openWait = flag.Duration("open-timeout", 90*time.Second, "stop retrying streams of a stage not open after this long")
		fetch    = flag.String("fetch", "", "URL to fetch while the last stage is held (a heap profile); memory is sampled again after it")
		fetchOut = flag.String("fetch-out", "", "file to write the -fetch response to")
	)
	flag.Parse()
	u, err := url.Parse(*rawURL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		log.Fatalf("-url: want http://host:port/path, got %q", *rawURL)
	}
	cfg := config{url: u, conc: *conc, ae: *ae, pid: *pid, warmup: *warmup,
		settle: *settle, window: *window, openWait: *openWait, fetch: *fetch, fetchOut: *fetchOut}
	if *stages == "" {
		cfg.stages = []int{*n}
	} else {
		for _, s := range strings.Split(*stages, ",") {
			v, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || v < 1 {
				log.Fatalf("-stages: bad count %q", s)
			}
			cfg.stages = append(cfg.stages, v)
		}
	}
	for _, s := range strings.Split(*src, ",") {
		ip := net.ParseIP(strings.TrimSpace(s))
		if ip == nil {
			log.Fatalf("-src: bad address %q", s)
		}
		cfg.src = append(cfg.src, ip)
	}
	raiseNoFile(cfg.stages[len(cfg.stages)-1] + cfg.warmup + 100)

	res, err := run(cfg)
	if err != nil {
		log.Fatal(err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(res)
}

// result is what the tool prints.
type result struct {
	URL            string           `json:"url"`
	Streams        int              `json:"streams"`
	Opened         int64            `json:"opened"`
	OpenSeconds    float64          `json:"open_seconds"`
	Errors         map[string]int64 `json:"errors"`
	BaselineRSSKB  int64            `json:"baseline_rss_kb,omitempty"`
	Stages         []stage          `json:"stages,omitempty"`
	WindowSeconds  float64          `json:"window_seconds"`
	Events         int64            `json:"events"`
	EventsPerSec   float64          `json:"events_per_sec"`
	Heartbeats     int64            `json:"heartbeats"`
	Bytes          int64            `json:"bytes"`
	Latency        latency          `json:"latency_us"`
	CPUSeconds     float64          `json:"cpu_seconds"`
	CPUPctCore     float64          `json:"cpu_pct_of_core"`
	CPUPerMillion  float64          `json:"cpu_seconds_per_million_events,omitempty"`
	EndRSSKB       int64            `json:"end_rss_kb,omitempty"`
	ContentCodings map[string]int64 `json:"content_codings"`
}

type stage struct {
	Streams     int     `json:"streams"`
	Open        int     `json:"open"` // streams open: Streams, unless some never opened
	RSSKB       int64   `json:"rss_kb"`
	PerStreamKB float64 `json:"rss_per_stream_kb"`
	// after -fetch (a heap profile with gc=1 forces a collection), on the
	// last stage only
	FetchedRSSKB       int64   `json:"rss_after_fetch_kb,omitempty"`
	FetchedPerStreamKB float64 `json:"rss_per_stream_after_fetch_kb,omitempty"`
}

type latency struct {
	N   int64   `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// counters are shared by every stream.
type counters struct {
	opened, events, heartbeats, bytes atomic.Int64
	measuring                         atomic.Bool
	hist                              histogram

	mu     sync.Mutex
	errs   map[string]int64
	coding map[string]int64
}

func (c *counters) fail(kind string) {
	c.mu.Lock()
	c.errs[kind]++
	c.mu.Unlock()
}

func run(cfg config) (*result, error) {
	c := &counters{errs: map[string]int64{}, coding: map[string]int64{}}
	res := &result{URL: cfg.url.String(), Streams: cfg.stages[len(cfg.stages)-1]}
	d := newDialer(cfg)

	if cfg.warmup > 0 {
		wc := &counters{errs: map[string]int64{}, coding: map[string]int64{}}
		warm := openStreams(cfg, d, wc, cfg.warmup, cfg.openWait)
		closeAll(warm)
		time.Sleep(2 * time.Second)
	}
	if cfg.pid > 0 {
		res.BaselineRSSKB = rssKB(cfg.pid)
	}

	var conns []net.Conn
	start := time.Now()
	for _, n := range cfg.stages {
		more := openStreams(cfg, d, c, n-len(conns), cfg.openWait)
		conns = append(conns, more...)
		if len(conns) == 0 {
			closeAll(conns)
			return nil, fmt.Errorf("stage %d: no stream opened (errors %v)", n, c.snapshotErrs())
		}
		if missing := n - len(conns); missing > 0 {
			// go on with the streams that are open, and say so: the
			// figures are per open stream
			log.Printf("stage %d: only %d streams open after %d tries each", n, len(conns), maxTries)
			c.mu.Lock()
			c.errs["not_opened"] += int64(missing)
			c.mu.Unlock()
		}
		if res.OpenSeconds == 0 || n == res.Streams {
			res.OpenSeconds = time.Since(start).Seconds()
		}
		time.Sleep(cfg.settle)
		if cfg.pid > 0 {
			rss := rssKB(cfg.pid)
			res.Stages = append(res.Stages, stage{
				Streams:     n,
				Open:        len(conns),
				RSSKB:       rss,
				PerStreamKB: float64(rss-res.BaselineRSSKB) / float64(len(conns)),
			})
		}
	}

	if cfg.fetch != "" {
		if err := fetchTo(cfg.fetch, cfg.fetchOut); err != nil {
			log.Printf("-fetch: %v", err)
		} else if cfg.pid > 0 && len(res.Stages) > 0 {
			time.Sleep(fetchSettle)
			st := &res.Stages[len(res.Stages)-1]
			st.FetchedRSSKB = rssKB(cfg.pid)
			st.FetchedPerStreamKB = float64(st.FetchedRSSKB-res.BaselineRSSKB) / float64(st.Open)
		}
	}

	if cfg.window > 0 {
		ev0, hb0, by0 := c.events.Load(), c.heartbeats.Load(), c.bytes.Load()
		cpu0 := cpuTicks(cfg.pid)
		t0 := time.Now()
		c.measuring.Store(true)
		time.Sleep(cfg.window)
		c.measuring.Store(false)
		el := time.Since(t0).Seconds()
		cpu1 := cpuTicks(cfg.pid)
		res.WindowSeconds = el
		res.Events = c.events.Load() - ev0
		res.Heartbeats = c.heartbeats.Load() - hb0
		res.Bytes = c.bytes.Load() - by0
		res.EventsPerSec = float64(res.Events) / el
		if cfg.pid > 0 {
			res.CPUSeconds = float64(cpu1-cpu0) / clockTicks
			res.CPUPctCore = 100 * res.CPUSeconds / el
			if res.Events > 0 {
				res.CPUPerMillion = res.CPUSeconds / float64(res.Events) * 1e6
			}
		}
		res.Latency = c.hist.summary()
	}
	if cfg.pid > 0 {
		res.EndRSSKB = rssKB(cfg.pid)
	}
	res.Opened = c.opened.Load()
	closeAll(conns)
	res.Errors = c.snapshotErrs()
	c.mu.Lock()
	res.ContentCodings = c.coding
	c.mu.Unlock()
	return res, nil
}

func (c *counters) snapshotErrs() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int64, len(c.errs))
	for k, v := range c.errs {
		m[k] = v
	}
	return m
}

// fetchTo writes the body of a GET of u to the file out.
func fetchTo(u, out string) error {
	res, err := http.Get(u)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, res.Status)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// dialer hands out connections from the source addresses in turn.
type dialer struct {
	next atomic.Uint64
	ds   []*net.Dialer
}

func newDialer(cfg config) *dialer {
	d := &dialer{}
	for _, ip := range cfg.src {
		d.ds = append(d.ds, &net.Dialer{
			LocalAddr: &net.TCPAddr{IP: ip},
			Timeout:   30 * time.Second,
			// pick the source port at connect time, per destination,
			// not at bind time from one shared range
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
				})
				return errors.Join(err, serr)
			},
		})
	}
	return d
}

const ipBindAddressNoPort = 24 // linux/in.h

func (d *dialer) dial(addr string) (net.Conn, error) {
	i := d.next.Add(1) % uint64(len(d.ds))
	return d.ds[i].Dial("tcp", addr)
}

// openStreams opens n streams and returns their connections; each stream
// is read by its own goroutine from then on. At most conc streams are
// opening at once, from the dial to their first body byte, so the server
// and its upstream are never asked for more than conc new streams at a time
// (a proxy that piles up thousands of upstream dials makes the upstream's
// accept queue overflow, and its dials time out). A stream that fails before
// its first byte is retried, up to maxTries times.
func openStreams(cfg config, d *dialer, c *counters, n int, limit time.Duration) []net.Conn {
	req := []byte("GET " + cfg.url.RequestURI() + " HTTP/1.1\r\nHost: " + cfg.url.Host +
		"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n")
	if cfg.ae != "" {
		req = append(req, "Accept-Encoding: "+cfg.ae+"\r\n"...)
	}
	req = append(req, "\r\n"...)

	var (
		mu    sync.Mutex
		conns = make([]net.Conn, 0, n)
		wg    sync.WaitGroup
		sem   = make(chan struct{}, cfg.conc)
	)
	deadline := time.Now().Add(limit)
	for range n {
		wg.Go(func() {
			for try := 1; try <= maxTries && time.Now().Before(deadline); try++ {
				sem <- struct{}{}
				conn, err := d.dial(cfg.url.Host)
				if err != nil {
					<-sem
					c.fail("dial")
					continue
				}
				if _, err := conn.Write(req); err != nil {
					<-sem
					c.fail("write")
					conn.Close()
					continue
				}
				first := make(chan bool, 1)
				go readStream(conn, c, first)
				ok := <-first
				<-sem
				if ok {
					mu.Lock()
					conns = append(conns, conn)
					mu.Unlock()
					return
				}
				conn.Close()
				c.fail("open_failed")
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	return conns
}

// fetchSettle is how long after -fetch the memory is sampled again.
const fetchSettle = 3 * time.Second

// maxTries bounds the attempts to open one stream.
const maxTries = 5

func closeAll(conns []net.Conn) {
	for _, conn := range conns {
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // no TIME_WAIT left behind for the next run
		}
		conn.Close()
	}
}

// readStream reads one stream's response until the connection ends. It
// sends on first whether the stream opened (its first body byte arrived) or
// failed before.
func readStream(conn net.Conn, c *counters, first chan<- bool) {
	var signalled bool
	signal := func(ok bool) {
		if !signalled {
			signalled = true
			first <- ok
		}
	}
	defer signal(false)
	br := bufio.NewReaderSize(conn, 4096)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		if !isClosed(err) {
			c.fail("response")
		}
		return
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		c.fail("status_" + strconv.Itoa(res.StatusCode))
		return
	}
	coding := res.Header.Get("Content-Encoding")
	c.mu.Lock()
	c.coding[coding]++
	c.mu.Unlock()

	body := &countingReader{r: res.Body, c: c}
	opened := func() {
		c.opened.Add(1)
		signal(true)
	}
	var r io.Reader = body
	switch coding {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			if !isClosed(err) {
				c.fail("gzip")
			}
			return
		}
		zr.Multistream(false)
		r = zr
	default:
		// not decoded: count the bytes only, and call the stream open at
		// its first byte
		body.onFirst = opened
		_, err := io.Copy(io.Discard, body)
		if err != nil && !isClosed(err) {
			c.fail("read")
		}
		return
	}
	if err := parse(r, c, opened); err != nil && !isClosed(err) {
		c.fail("read")
	}
}

// countingReader counts body bytes, and calls onFirst at the first if set.
type countingReader struct {
	r       io.Reader
	c       *counters
	onFirst func()
}

func (cr *countingReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	if n > 0 {
		cr.c.bytes.Add(int64(n))
		if cr.onFirst != nil {
			cr.onFirst()
			cr.onFirst = nil
		}
	}
	return n, err
}

// parse reads event-stream lines: a data line is an event whose first word
// is its send time; a comment line is a heartbeat. The stream is open at its
// first event or comment (a "retry:" alone, the answer to a refused stream,
// does not open it).
func parse(r io.Reader, c *counters, opened func()) error {
	br := bufio.NewReaderSize(r, 4096)
	for {
		line, err := br.ReadSlice('\n')
		if opened != nil && len(line) > 0 && (line[0] == ':' || bytes.HasPrefix(line, []byte("data:"))) {
			opened()
			opened = nil
		}
		if len(line) > 0 {
			switch {
			case bytes.HasPrefix(line, []byte("data:")):
				now := time.Now().UnixNano()
				c.events.Add(1)
				if c.measuring.Load() {
					if ts, ok := sendTime(line[5:]); ok {
						c.hist.add((now - ts) / 1000)
					}
				}
			case line[0] == ':':
				c.heartbeats.Add(1)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF {
				if opened == nil {
					c.fail("ended") // the opener counts the others
				}
				return nil
			}
			return err
		}
	}
}

// sendTime reads the Unix-nanosecond time that starts an event's data.
func sendTime(v []byte) (int64, bool) {
	v = bytes.TrimLeft(v, " ")
	end := bytes.IndexAny(v, " \r\n")
	if end < 0 {
		end = len(v)
	}
	ts, err := strconv.ParseInt(string(v[:end]), 10, 64)
	return ts, err == nil
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) ||
		strings.Contains(err.Error(), "use of closed network connection")
}

// histogram holds microsecond latencies in log-linear buckets: exact below
// 1,024 µs, then 64 buckets per power of two (under 1.6 % error).
type histogram struct {
	b   [1024 + 54*64]atomic.Int64
	max atomic.Int64
}

func (h *histogram) add(us int64) {
	if us < 0 {
		us = 0
	}
	h.b[bucket(us)].Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			break
		}
	}
}

func bucket(us int64) int {
	if us < 1024 {
		return int(us)
	}
	l := bits.Len64(uint64(us)) // >= 11
	m := us >> (l - 7)          // 64..127
	return 1024 + (l-11)*64 + int(m-64)
}

// lower returns the smallest value of bucket i, and its width.
func lower(i int) (float64, float64) {
	if i < 1024 {
		return float64(i), 1
	}
	e := (i - 1024) / 64
	m := (i-1024)%64 + 64
	shift := e + 11 - 7
	return float64(int64(m) << shift), float64(int64(1) << shift)
}

func (h *histogram) summary() latency {
	var n int64
	for i := range h.b {
		n += h.b[i].Load()
	}
	s := latency{N: n, Max: float64(h.max.Load())}
	if n == 0 {
		return s
	}
	q := func(p float64) float64 {
		rank := int64(math.Ceil(p * float64(n)))
		var cum int64
		for i := range h.b {
			cum += h.b[i].Load()
			if cum >= rank {
				lo, w := lower(i)
				return lo + w/2
			}
		}
		return s.Max
	}
	s.P50, s.P99 = q(0.50), q(0.99)
	return s
}

// rssKB returns the summed VmRSS of pid and its children, in kB.
func rssKB(pid int) int64 {
	var total int64
	for _, p := range family(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				total += v
			}
		}
	}
	return total
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTicks returns utime+stime of pid and its children, in clock ticks.
func cpuTicks(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	var total int64
	for _, p := range family(pid) {
		f := statFields(p)
		if len(f) < 15 {
			continue
		}
		ut, _ := strconv.ParseInt(f[13], 10, 64)
		st, _ := strconv.ParseInt(f[14], 10, 64)
		total += ut + st
	}
	return total
}

// statFields returns the fields of /proc/<pid>/stat, counted from 1 as in
// proc(5) at index-1; the command name may hold spaces, so it is skipped.
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return append([]string{"pid", "comm"}, strings.Fields(s[i+1:])...)
}

// family returns pid and its direct children (nginx's workers).
func family(pid int) []int {
	out := []int{pid}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		p, err := strconv.Atoi(filepath.Base(d))
		if err != nil || p == pid {
			continue
		}
		if f := statFields(p); len(f) > 3 && f[3] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// raiseNoFile lifts the open-file limit to at least need (the hard limit
// too, when allowed, as root is).
func raiseNoFile(need int) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	if rl.Max < uint64(need) {
		rl.Max = uint64(need)
	}
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		log.Printf("raising RLIMIT_NOFILE to %d: %v", need, err)
	}
}
