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
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-sse/caddy-sse"
)

// settings of one run of the demo.
type settings struct {
	addr      string        // the page's listen address
	idle      time.Duration // the hop's idle cut (nginx's proxy_read_timeout)
	bufSize   int           // the hop's buffer (nginx's proxy_buffer_size)
	heartbeat time.Duration // sse's heartbeat
	gap       time.Duration // between two tokens of an answer
	quiet     time.Duration // between two answers; 0: no generator (tests publish)
	logger    *log.Logger   // for the hops' cuts
}

// side is one column of the page: a Caddy site and the hop in front of it.
type side struct {
	Name  string `json:"name"`
	Title string `json:"title"`
	Site  string `json:"site"` // the site block, exactly as in the Caddyfile
	URL   string `json:"url"`  // the hop, where the browser connects
	caddy string // host:port of the Caddy site
	hop   *hop
}

// demo is a running demo: the backend, one Caddy with two sites, a hop in
// front of each, and the page. Every listener is on 127.0.0.1.
type demo struct {
	set         settings
	feed        *feed
	stock, sse  *side
	global      string // the Caddyfile's global options block
	pageURL     string
	backendAddr string

	cancel  context.CancelFunc
	wg      sync.WaitGroup // the generator and the servers' Serve loops
	conns   sync.WaitGroup // the connections of the page's and the hops' servers
	bconns  sync.WaitGroup // the backend's connections
	servers []*http.Server
	backend *http.Server
	once    sync.Once
}

// freePort returns a loopback port nobody listens on now, for Caddy, which
// opens its own listeners.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// caddyfile returns the demo's Caddyfile, split into the global options
// and the two site blocks.
func caddyfile(stockAddr, sseAddr, backend string, heartbeat time.Duration) (global, stock, sse string) {
	global = `{
	admin off
	persist_config off
	auto_https off
	storage_clean_interval off
	default_bind 127.0.0.1
	grace_period 1s
}
`
	stock = fmt.Sprintf(`http://%s {
	encode gzip zstd
	reverse_proxy %s {
		header_down Keep-Alive "timeout=5"
	}
}
`, stockAddr, backend)
	sse = fmt.Sprintf(`http://%s {
	encode gzip zstd
	sse {
		heartbeat %s
	}
	reverse_proxy %s {
		header_down Keep-Alive "timeout=5"
	}
}
`, sseAddr, heartbeat, backend)
	return global, stock, sse
}

// start runs the demo until ctx ends or close is called.
func start(ctx context.Context, set settings) (_ *demo, err error) {
	if set.logger == nil {
		set.logger = log.New(io.Discard, "", 0)
	}
	ctx, cancel := context.WithCancel(ctx)
	d := &demo{set: set, feed: newFeed(), cancel: cancel}
	defer func() {
		if err != nil {
			d.close()
		}
	}()

	// the backend
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d.backendAddr = bln.Addr().String()
	d.backend = &http.Server{Handler: d.feed}
	d.serve(d.backend, bln, &d.bconns)

	// one Caddy, two sites
	stockAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	sseAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	global, stockSite, sseSite := caddyfile(stockAddr, sseAddr, d.backendAddr, set.heartbeat)
	d.global = global
	cfg, warn, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(global+"\n"+stockSite+"\n"+sseSite),
		map[string]any{"filename": "demo Caddyfile"})
	if err != nil {
		return nil, fmt.Errorf("adapting the Caddyfile: %w", err)
	}
	for _, w := range warn {
		set.logger.Printf("Caddyfile: %s", w.String())
	}
	// admin off and persist_config off: no admin endpoint, and no autosave
	// of the config to ~/.config/caddy (caddy.go, unsyncedDecodeAndRun)
	if err := caddy.Load(cfg, true); err != nil {
		return nil, fmt.Errorf("loading the config into Caddy: %w", err)
	}

	// a hop in front of each site
	mk := func(name, title, site, caddyAddr string) (*side, error) {
		h := &hop{name: "hop in front of " + title, upstream: caddyAddr, idle: set.idle, bufSize: set.bufSize, logger: set.logger}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		d.serve(&http.Server{Handler: h}, ln, &d.conns)
		return &side{Name: name, Title: title, Site: site, URL: "http://" + ln.Addr().String(), caddy: caddyAddr, hop: h}, nil
	}
	if d.stock, err = mk("stock", "stock Caddy", stockSite, stockAddr); err != nil {
		return nil, err
	}
	if d.sse, err = mk("sse", "Caddy + sse", sseSite, sseAddr); err != nil {
		return nil, err
	}

	// the page
	pln, err := net.Listen("tcp", set.addr)
	if err != nil {
		return nil, err
	}
	d.pageURL = "http://" + pln.Addr().String() + "/"
	d.serve(&http.Server{Handler: d.pageHandler()}, pln, &d.conns)

	if set.quiet > 0 {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.feed.generate(ctx, set.gap, set.quiet)
		}()
	}
	return d, nil
}

// serve runs srv on ln until close. conns counts srv's connections, each
// from accept until its handler has returned and it is closed.
func (d *demo) serve(srv *http.Server, ln net.Listener, conns *sync.WaitGroup) {
	if srv != d.backend {
		d.servers = append(d.servers, srv)
	}
	srv.ErrorLog = log.New(io.Discard, "", 0)
	srv.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			conns.Add(1)
		case http.StateHijacked, http.StateClosed:
			conns.Done()
		}
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.set.logger.Printf("serving %s: %v", ln.Addr(), err)
		}
	}()
}

// close stops everything start started, and waits for it: the page and the
// hops, whose handlers end when their connections close; then Caddy; then
// the backend.
func (d *demo) close() {
	d.once.Do(func() {
		d.cancel()
		for _, s := range d.servers {
			s.Close()
		}
		caddy.Stop()
		if d.backend != nil {
			d.backend.Close()
		}
		d.wg.Wait() // every Serve has returned: no connection is added any more
		d.conns.Wait()
		d.bconns.Wait()
	})
}

// describe is what the command prints when the demo runs.
func (d *demo) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "caddy-sse demo: open %s\n\n", d.pageURL)
	fmt.Fprintf(&b, "backend            http://%s/  (token bursts, then %v quiet)\n", d.backendAddr, d.set.quiet)
	fmt.Fprintf(&b, "stock Caddy        http://%s/  behind hop %s/\n", d.stock.caddy, d.stock.URL)
	fmt.Fprintf(&b, "Caddy + sse        http://%s/  behind hop %s/\n", d.sse.caddy, d.sse.URL)
	fmt.Fprintf(&b, "hops: nginx-like, buffer %d bytes, cut after %v idle (nginx: 60 s, scaled down)\n\n", d.set.bufSize, d.set.idle)
	fmt.Fprintf(&b, "Caddyfile:\n%s\n%s\n%s", d.global, d.stock.Site, d.sse.Site)
	return b.String()
}
