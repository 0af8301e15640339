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
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// hop is the "production hop" in front of Caddy: a small reverse proxy that
// behaves like nginx with its default proxy settings, the way Debian's
// nginx 1.22 was seen to behave in front of Caddy:
//
//   - It asks the upstream in HTTP/1.0 with Connection: close (nginx's
//     default proxy_http_version 1.0), passing the client's header fields
//     on, minus the hop-by-hop ones.
//   - proxy_buffering on: it holds the response, header included, and
//     sends the client nothing until a buffer of bufSize bytes of body is
//     full (nginx's proxy_buffer_size and proxy_buffers are one memory
//     page, 4 KiB on most systems; nginx's first buffer also holds the
//     upstream's header, so nginx sends its first body bytes a little
//     earlier). Then it sends that buffer and fills the next one. When the
//     upstream ends the response, it sends what it holds.
//   - Unless the response carries X-Accel-Buffering: no: then it sends the
//     header at once and every read from the upstream as it comes. nginx
//     does not forward X-Accel-* fields; neither does the hop.
//   - proxy_read_timeout: when the upstream sends nothing for idle, it
//     gives up: it sends the header if it had not yet, drops the bytes it
//     holds, and closes the connection without ending the response (the
//     client sees an incomplete chunked body). nginx's default is 60 s; the
//     demo scales it down.
//   - It drops the upstream's hop-by-hop fields (Connection and the fields
//     it names, Keep-Alive, Transfer-Encoding, ...), as nginx does, and
//     its Date and Server (nginx sends its own; net/http adds a Date).
//
// It serves GET and HEAD only, which is all the demo needs.
type hop struct {
	name     string
	upstream string // host:port
	idle     time.Duration
	bufSize  int
	logger   *log.Logger

	open atomic.Int64 // connections to the upstream now
	cuts atomic.Int64 // responses cut by the idle timeout

	mu         sync.Mutex
	held       map[*int]bool // per connection: body bytes read from upstream, not sent yet
	lastHeader http.Header   // of the newest upstream response
	lastCut    time.Time
}

// hopStats is what the page shows about a hop.
type hopStats struct {
	Held      int         `json:"held"` // the most any connection holds
	Open      int64       `json:"open"`
	Cuts      int64       `json:"cuts"`
	FromCaddy http.Header `json:"from_caddy"` // of the newest response
}

func (h *hop) stats() hopStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := hopStats{Open: h.open.Load(), Cuts: h.cuts.Load(), FromCaddy: h.lastHeader}
	for n := range h.held {
		s.Held = max(s.Held, *n)
	}
	return s
}

// hopByHop are the fields a proxy never forwards (RFC 9110, 7.6.1).
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade"}

func stripHopByHop(hdr http.Header) {
	for _, v := range hdr["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				hdr.Del(f)
			}
		}
	}
	for _, f := range hopByHop {
		hdr.Del(f)
	}
}

// ServeHTTP proxies one GET or HEAD request the way nginx with its default
// proxy settings does (see hop): on a connection of its own to the
// upstream, it sends the request, reads the response header, and carries
// the response to the client, buffered or streamed as X-Accel-Buffering
// says. It answers 405 to other methods, 502 when the upstream cannot be
// reached, 504 when it sends no header within h.idle.
func (h *hop) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "the demo's hop serves GET and HEAD only", http.StatusMethodNotAllowed)
		return
	}
	var d net.Dialer
	conn, err := d.DialContext(r.Context(), "tcp", h.upstream)
	if err != nil {
		http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
		return
	}
	defer conn.Close()
	// the client went away: close the upstream connection, as nginx does
	defer context.AfterFunc(r.Context(), func() { conn.Close() })()
	h.open.Add(1)
	defer h.open.Add(-1)

	if _, err := conn.Write(h.upstreamRequest(r)); err != nil {
		http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
		return
	}
	res := h.readResponseHeader(w, r, conn)
	if res == nil {
		return
	}
	defer res.Body.Close()

	rl := h.newRelay(w, conn, res)
	if !rl.buffering && !rl.startStream() {
		return
	}
	defer h.trackHeld(&rl.n)()
	rl.copyBody()
}

// upstreamRequest returns the bytes of the request the hop sends upstream
// for r: HTTP/1.0 with Connection: close (nginx's default
// proxy_http_version 1.0), Host set to the upstream, and r's header fields
// minus the hop-by-hop ones.
func (h *hop) upstreamRequest(r *http.Request) []byte {
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n", r.Method, r.URL.RequestURI(), h.upstream)
	fwd := r.Header.Clone()
	stripHopByHop(fwd)
	fwd.Del("Host")
	fwd.Write(&req)
	req.WriteString("\r\n")
	return req.Bytes()
}

// readResponseHeader reads the upstream's response header from conn,
// waiting at most h.idle for it, and records a copy for the page. The
// response's body reads from conn through a buffer of h.bufSize bytes. When
// no header comes, it has answered the client (504 on the timeout, 502
// otherwise) and returns nil.
func (h *hop) readResponseHeader(w http.ResponseWriter, r *http.Request, conn net.Conn) *http.Response {
	br := bufio.NewReaderSize(conn, h.bufSize)
	conn.SetReadDeadline(time.Now().Add(h.idle))
	res, err := http.ReadResponse(br, r)
	if err != nil {
		if isTimeout(err) {
			h.logger.Printf("%s: upstream sent no header for %v: 504", h.name, h.idle)
			http.Error(w, "504 Gateway Time-out", http.StatusGatewayTimeout)
		} else {
			http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
		}
		return nil
	}
	h.mu.Lock()
	h.lastHeader = res.Header.Clone()
	h.mu.Unlock()
	return res
}

// copyResponseHeader sets into out the fields of the upstream's header in
// that nginx passes on: all but the hop-by-hop ones, X-Accel-*, Date and
// Server. The values stay shared with in; in is not changed.
func copyResponseHeader(out, in http.Header) {
	for k, v := range in {
		out[k] = v
	}
	stripHopByHop(out)
	for k := range out {
		if strings.HasPrefix(k, "X-Accel-") {
			delete(out, k)
		}
	}
	out.Del("Date")
	out.Del("Server")
}

// relay carries one upstream response to the client: buffered (held until
// a buffer of bufSize bytes of body is full, then sent), or streamed (each
// read from the upstream sent as it comes).
type relay struct {
	h          *hop
	w          http.ResponseWriter
	rc         *http.ResponseController
	conn       net.Conn // to the upstream, for its read deadline
	res        *http.Response
	buffering  bool // false when the upstream sent X-Accel-Buffering: no
	headerSent bool
	buf        []byte
	n          int // bytes held in buf; h.mu guards writes, and reads from other goroutines
}

// newRelay returns the relay for res, buffering unless res carries
// X-Accel-Buffering: no, with w's header set to what nginx passes on of
// res's. It sends the client nothing.
func (h *hop) newRelay(w http.ResponseWriter, conn net.Conn, res *http.Response) *relay {
	buffering := !strings.EqualFold(strings.TrimSpace(res.Header.Get("X-Accel-Buffering")), "no")
	copyResponseHeader(w.Header(), res.Header)
	return &relay{h: h, w: w, rc: http.NewResponseController(w), conn: conn, res: res,
		buffering: buffering, buf: make([]byte, h.bufSize)}
}

// sendHeader sends the response header the first time it is called, and
// does nothing after.
func (rl *relay) sendHeader() {
	if !rl.headerSent {
		rl.w.WriteHeader(rl.res.StatusCode)
		rl.headerSent = true
	}
}

// startStream sends the header at once, as nginx does for an unbuffered
// response, and reports whether the client took it.
func (rl *relay) startStream() bool {
	rl.sendHeader()
	return rl.rc.Flush() == nil
}

// setHeld sets the count of bytes held to v, under h.mu so that stats may
// read it.
func (rl *relay) setHeld(v int) {
	rl.h.mu.Lock()
	rl.n = v
	rl.h.mu.Unlock()
}

// send sends the header if it has not gone yet, then the bytes held, and
// empties the buffer. It reports whether the client took them, written and
// flushed.
func (rl *relay) send() bool {
	rl.sendHeader()
	_, err := rl.w.Write(rl.buf[:rl.n])
	rl.setHeld(0)
	return err == nil && rl.rc.Flush() == nil
}

// trackHeld has stats count *n among the bytes the hop's connections hold,
// until the returned func is called.
func (h *hop) trackHeld(n *int) (untrack func()) {
	h.mu.Lock()
	if h.held == nil {
		h.held = make(map[*int]bool)
	}
	h.held[n] = true
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		delete(h.held, n)
		h.mu.Unlock()
	}
}

// copyBody reads the body from the upstream, waiting at most h.idle for
// each read, and sends it on: each read at once when streaming, else each
// time the buffer is full. It returns once the upstream has ended the
// response and the rest is sent. On the idle timeout it cuts the stream
// (see cut); when the upstream resets or the client goes away it panics
// with http.ErrAbortHandler.
func (rl *relay) copyBody() {
	for {
		rl.conn.SetReadDeadline(time.Now().Add(rl.h.idle))
		m, err := rl.res.Body.Read(rl.buf[rl.n:])
		rl.setHeld(rl.n + m)
		if m > 0 && (!rl.buffering || rl.n == len(rl.buf)) {
			if !rl.send() {
				panic(http.ErrAbortHandler) // the client is gone
			}
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF):
			// the upstream ended the response: send the rest, end cleanly
			rl.send()
			return
		case isTimeout(err):
			rl.cut()
		default:
			// upstream reset, or the client went away
			panic(http.ErrAbortHandler)
		}
	}
}

// cut gives up on an idle upstream, as nginx's proxy_read_timeout does: it
// drops the bytes held, counts and logs the cut, sends the header if it
// had not yet, and panics with http.ErrAbortHandler, so the connection
// closes without the body ending. It never returns.
func (rl *relay) cut() {
	h := rl.h
	dropped := rl.n
	rl.setHeld(0)
	h.mu.Lock()
	h.cuts.Add(1)
	h.lastCut = time.Now()
	h.mu.Unlock()
	h.logger.Printf("%s: upstream idle for %v: cut the stream, dropped %d bytes held", h.name, h.idle, dropped)
	rl.sendHeader()
	rl.rc.Flush()
	panic(http.ErrAbortHandler) // close without ending the body
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
