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

	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n", r.Method, r.URL.RequestURI(), h.upstream)
	fwd := r.Header.Clone()
	stripHopByHop(fwd)
	fwd.Del("Host")
	fwd.Write(&req)
	req.WriteString("\r\n")
	if _, err := conn.Write(req.Bytes()); err != nil {
		http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
		return
	}

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
		return
	}
	defer res.Body.Close()
	h.mu.Lock()
	h.lastHeader = res.Header.Clone()
	h.mu.Unlock()

	buffering := !strings.EqualFold(strings.TrimSpace(res.Header.Get("X-Accel-Buffering")), "no")
	out := w.Header()
	for k, v := range res.Header {
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
	rc := http.NewResponseController(w)
	headerSent := false
	sendHeader := func() {
		if !headerSent {
			w.WriteHeader(res.StatusCode)
			headerSent = true
		}
	}
	if !buffering {
		sendHeader()
		if rc.Flush() != nil {
			return
		}
	}

	buf := make([]byte, h.bufSize)
	n := 0 // bytes held in buf; h.mu guards writes, and reads from other goroutines
	setHeld := func(v int) {
		h.mu.Lock()
		n = v
		h.mu.Unlock()
	}
	h.mu.Lock()
	if h.held == nil {
		h.held = make(map[*int]bool)
	}
	h.held[&n] = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.held, &n)
		h.mu.Unlock()
	}()
	send := func() bool {
		sendHeader()
		_, err := w.Write(buf[:n])
		setHeld(0)
		return err == nil && rc.Flush() == nil
	}
	for {
		conn.SetReadDeadline(time.Now().Add(h.idle))
		m, err := res.Body.Read(buf[n:])
		setHeld(n + m)
		if m > 0 && (!buffering || n == len(buf)) {
			if !send() {
				panic(http.ErrAbortHandler) // the client is gone
			}
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF):
			// the upstream ended the response: send the rest, end cleanly
			send()
			return
		case isTimeout(err):
			dropped := n
			setHeld(0)
			h.mu.Lock()
			h.cuts.Add(1)
			h.lastCut = time.Now()
			h.mu.Unlock()
			h.logger.Printf("%s: upstream idle for %v: cut the stream, dropped %d bytes held", h.name, h.idle, dropped)
			sendHeader()
			rc.Flush()
			panic(http.ErrAbortHandler) // close without ending the body
		default:
			// upstream reset, or the client went away
			panic(http.ErrAbortHandler)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
