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

// Command demo shows, side by side and at the same time, one misbehaving
// event-stream backend reached through stock Caddy and through Caddy with
// sse, each behind the same "production hop": an in-process reverse proxy
// that behaves like nginx with its default settings (see hop.go), with its
// idle timeout scaled down from 60 s to 10 s.
//
//	go run ./examples/demo            # then open the URL it prints
//
//	backend ─┬─ Caddy: encode + reverse_proxy ───────── hop ─┐
//	         └─ Caddy: encode + sse + reverse_proxy ─── hop ─┴─ one page, two columns
//
// The backend sends bursts of compressible JSON token events, then stays
// quiet longer than the hop's idle timeout, the way a language model
// "thinks"; it sends Connection: keep-alive, and the Caddyfile adds
// Keep-Alive with header_down. Through stock Caddy the hop buffers the
// gzipped stream, so events arrive late and in bunches, and it cuts the
// stream in every quiet stretch, so the browser reconnects. Through Caddy
// with sse the hop passes each event on at once and heartbeats keep the
// stream open.
//
// Everything listens on 127.0.0.1 only. Caddy runs with its admin endpoint
// off, persist_config off and auto_https off: the demo writes nothing to
// disk, in the home directory or elsewhere.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "`address` the page listens on (the backend, Caddy and the hops always listen on 127.0.0.1, so open the page on this machine)")
	idle := flag.Duration("idle", 10*time.Second, "the hop cuts a response whose upstream sent nothing for this long (nginx's proxy_read_timeout, 60s by default)")
	buffer := flag.Int("buffer", 4096, "the hop's buffer size in `bytes` (nginx's proxy_buffer_size, one memory page by default)")
	heartbeat := flag.Duration("heartbeat", 3*time.Second, "sse's heartbeat interval; keep it below -idle")
	quiet := flag.Duration("quiet", 15*time.Second, "how long the backend stays quiet between answers; keep it above -idle")
	gap := flag.Duration("gap", 20*time.Millisecond, "time between two tokens of an answer")
	flag.Parse()
	if *quiet <= 0 || *gap <= 0 || *idle <= 0 || *buffer <= 0 || *heartbeat <= 0 {
		log.Fatal("-idle, -buffer, -heartbeat, -quiet and -gap must be positive")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := log.New(os.Stderr, "", log.Ltime)
	d, err := start(ctx, settings{
		addr:      *addr,
		idle:      *idle,
		bufSize:   *buffer,
		heartbeat: *heartbeat,
		gap:       *gap,
		quiet:     *quiet,
		logger:    logger,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(d.describe())
	<-ctx.Done()
	fmt.Println("stopping")
	d.close()
}
