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

// Command upstream is the event-stream server the benchmarks put behind each
// proxy. It serves three shapes of stream:
//
//	/tick   one event per interval (default 1s) per stream, each stream at
//	        its own random phase, so 1,000 streams do not tick together
//	/flood  events as fast as the connection takes them, one flush each
//	/quiet  the header and one first event (as most event-stream servers
//	        send on connect), then nothing until the client goes away;
//	        ?first=0 sends the header only
//
// Every event carries the upstream's send time, in Unix nanoseconds, as the
// first word of its data ("data: <ns> ..."), so the load tool can measure the
// delivery latency of each event on the same machine. /stats returns the
// number of open streams.
//
// Usage:
//
//	upstream -addr 127.0.0.1:9001[,127.0.0.1:9002...]
package main

import (
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

var open atomic.Int64 // streams being served

func main() {
	addrs := flag.String("addr", "127.0.0.1:9001", "comma-separated listen addresses")
	flag.Parse()
	raiseNoFile()

	mux := http.NewServeMux()
	mux.HandleFunc("/tick", tick)
	mux.HandleFunc("/flood", flood)
	mux.HandleFunc("/quiet", quiet)
	mux.HandleFunc("/stats", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "{\"open\":%d}\n", open.Load())
	})
	errc := make(chan error)
	for _, addr := range strings.Split(*addrs, ",") {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatal(err)
		}
		srv := &http.Server{Handler: mux}
		go func() { errc <- srv.Serve(ln) }()
	}
	log.Printf("upstream listening on %s", *addrs)
	log.Fatal(<-errc)
}

// head writes and flushes an event-stream response header.
func head(w http.ResponseWriter) *http.ResponseController {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	return rc
}

// event appends one event carrying the current time to b: an id, and data
// that starts with the send time in Unix nanoseconds, padded to pad bytes.
func event(b []byte, id int64, pad int) []byte {
	b = append(b, "id: "...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, "\ndata: "...)
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	if pad > 0 {
		b = append(b, ' ')
		for range pad {
			b = append(b, 'x')
		}
	}
	return append(b, "\n\n"...)
}

func intParam(r *http.Request, name string, def int) int {
	if v, err := strconv.Atoi(r.URL.Query().Get(name)); err == nil {
		return v
	}
	return def
}

// tick sends one event per interval, starting at a random phase.
func tick(w http.ResponseWriter, r *http.Request) {
	open.Add(1)
	defer open.Add(-1)
	every := time.Second
	if d, err := time.ParseDuration(r.URL.Query().Get("every")); err == nil && d > 0 {
		every = d
	}
	pad := intParam(r, "pad", 0)
	rc := head(w)
	phase := time.NewTimer(rand.N(every))
	select {
	case <-phase.C:
	case <-r.Context().Done():
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var buf []byte
	for id := int64(1); ; id++ {
		buf = event(buf[:0], id, pad)
		if _, err := w.Write(buf); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
}

// flood sends small events as fast as the client takes them, flushing each
// one, as an event-stream server that sends every event as it happens does.
func flood(w http.ResponseWriter, r *http.Request) {
	open.Add(1)
	defer open.Add(-1)
	pad := intParam(r, "pad", 0)
	rc := head(w)
	var buf []byte
	for id := int64(1); ; id++ {
		buf = event(buf[:0], id, pad)
		if _, err := w.Write(buf); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
	}
}

// quiet sends the header and, unless first=0, one event, then holds the
// stream open without a byte until the client leaves.
func quiet(w http.ResponseWriter, r *http.Request) {
	open.Add(1)
	defer open.Add(-1)
	rc := head(w)
	if r.URL.Query().Get("first") != "0" {
		_, _ = w.Write(event(nil, 1, 0))
		_ = rc.Flush()
	}
	<-r.Context().Done()
}

// raiseNoFile lifts the soft open-file limit to the hard one: 10,000 streams
// need 10,000 sockets here.
func raiseNoFile() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}
