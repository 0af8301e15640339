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

// Command floor is the least a process can spend on heartbeats: it answers
// every HTTP/1.1 request on -addr with an event stream (a header and one
// event, like the benchmark's quiet upstream through sse), then writes the
// same heartbeat chunk, ": heartbeat\n" in HTTP/1.1 chunked framing, to each
// idle connection every -interval (each connection's interval jittered to
// 80-100 %, as sse does).
//
// The writes come from one ticker that handles, per tick, the connections due
// in it: a ring of buckets, one per tick. No goroutine per connection once
// its request is read, no proxy, no allocation per beat. CPU per heartbeat
// here is what the platform charges for one small write on an awake
// process, which sse is measured against.
package main

import (
	"bufio"
	"flag"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18088", "listen address")
	interval := flag.Duration("interval", 15*time.Second, "heartbeat interval")
	tick := flag.Duration("tick", 0, "ticker period; default interval/16 between 1ms and 250ms, as sse's granule")
	flag.Parse()
	raiseNoFile()
	if *tick <= 0 {
		*tick = min(max(*interval/16, time.Millisecond), 250*time.Millisecond)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	r := newRing(*interval, *tick)
	go r.run()
	log.Printf("floor listening on %s, interval %v, tick %v", *addr, *interval, *tick)
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serve(c, r)
	}
}

var (
	head  = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
	first = []byte("d\r\ndata: hello\n\n\r\n")
	beat  = []byte("c\r\n: heartbeat\n\r\n")
)

// serve reads the request head, answers it, and hands the connection to
// the ring; its goroutine ends there.
func serve(c net.Conn, r *ring) {
	if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
		c.Close()
		return
	}
	if _, err := c.Write(append(append([]byte{}, head...), first...)); err != nil {
		c.Close()
		return
	}
	r.add(&conn{c: c, every: int64(float64(r.interval) * (1 - 0.2*rand.Float64()))})
}

type conn struct {
	c     net.Conn
	every int64 // jittered interval, ns
	due   int64 // when its next beat is due, ns since start
	next  *conn
}

// ring holds the connections in buckets by the tick their next beat is due
// in; each tick writes to the connections of its bucket and puts them back
// for their next beat.
type ring struct {
	interval time.Duration
	tick     int64
	start    time.Time
	mu       sync.Mutex
	buckets  []*conn
	cur      int64 // the last tick handled
}

func newRing(interval, tick time.Duration) *ring {
	n := int(interval/tick) + 2
	return &ring{interval: interval, tick: int64(tick), start: time.Now(), buckets: make([]*conn, n)}
}

func (r *ring) now() int64 { return int64(time.Since(r.start)) }

func (r *ring) add(c *conn) {
	c.due = r.now() + c.every
	r.mu.Lock()
	r.putLocked(c)
	r.mu.Unlock()
}

func (r *ring) putLocked(c *conn) {
	t := (c.due + r.tick - 1) / r.tick
	if t <= r.cur {
		t = r.cur + 1
	}
	b := &r.buckets[t%int64(len(r.buckets))]
	c.next, *b = *b, c
}

func (r *ring) run() {
	t := time.NewTicker(time.Duration(r.tick))
	for range t.C {
		now := r.now()
		var due *conn
		r.mu.Lock()
		for r.cur < now/r.tick { // every tick since the last, if the ticker dropped some
			r.cur++
			b := &r.buckets[r.cur%int64(len(r.buckets))]
			for c := *b; c != nil; {
				next := c.next
				c.next, due = due, c
				c = next
			}
			*b = nil
		}
		r.mu.Unlock()
		var keep *conn
		for c := due; c != nil; {
			next := c.next
			if _, err := c.c.Write(beat); err != nil {
				c.c.Close()
			} else {
				c.due = now + c.every
				c.next, keep = keep, c
			}
			c = next
		}
		r.mu.Lock()
		for c := keep; c != nil; {
			next := c.next
			r.putLocked(c)
			c = next
		}
		r.mu.Unlock()
	}
}

// raiseNoFile lifts the soft open-file limit to the hard one.
func raiseNoFile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
