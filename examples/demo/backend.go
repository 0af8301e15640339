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
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// feed is the misbehaving backend: one stream of LLM-style token events,
// published in bursts (an answer) with quiet stretches in between (the
// model "thinks"), and served to every subscriber alike, so both columns of
// the page get the same events with the same sent times. A subscriber
// that reconnects with Last-Event-ID gets what it missed first, as a
// well-behaved event source does.
//
// It misbehaves the way real backends do: its JSON events are verbose and
// compress well, it sends the hop-by-hop field Connection: keep-alive, and
// its response has no Content-Length (chunked).
type feed struct {
	mu     sync.Mutex
	first  int64    // seq of frames[0]
	frames [][]byte // encoded events, the last keep of them
	wake   chan struct{}
	phase  string // what the generator is doing, for the page
	since  time.Time
}

// keep is how many events a feed remembers for subscribers that resume.
const keep = 5000

func newFeed() *feed {
	return &feed{first: 1, wake: make(chan struct{}), phase: "starting", since: time.Now()}
}

// chunk is the data of one event, shaped like a chat completion chunk.
type chunk struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Seq     int64    `json:"seq"`
	Sent    int64    `json:"sent"` // Unix ms when the backend published it
	Model   string   `json:"model"`
	Choices []choice `json:"choices"`
}

type choice struct {
	Index        int     `json:"index"`
	Delta        delta   `json:"delta"`
	FinishReason *string `json:"finish_reason"`
}

type delta struct {
	Content string `json:"content"`
}

// publish appends one token event and wakes the subscribers. It returns
// the event's seq, which is also its SSE id.
func (f *feed) publish(answer int, token string, last bool) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	seq := f.first + int64(len(f.frames))
	c := chunk{
		ID:      fmt.Sprintf("chatcmpl-demo-%d", answer),
		Object:  "chat.completion.chunk",
		Seq:     seq,
		Sent:    time.Now().UnixMilli(),
		Model:   "demo-model",
		Choices: []choice{{Delta: delta{Content: token}}},
	}
	if last {
		stop := "stop"
		c.Choices[0].FinishReason = &stop
	}
	data, err := json.Marshal(c)
	if err != nil {
		panic(err) // cannot happen: plain types
	}
	frame := fmt.Appendf(nil, "id: %d\nevent: token\ndata: %s\n\n", seq, data)
	f.frames = append(f.frames, frame)
	if len(f.frames) > keep {
		drop := len(f.frames) - keep
		f.frames = append([][]byte(nil), f.frames[drop:]...)
		f.first += int64(drop)
	}
	close(f.wake)
	f.wake = make(chan struct{})
	return seq
}

// lastSeq is the seq of the newest event, 0 before the first.
func (f *feed) lastSeq() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.first + int64(len(f.frames)) - 1
}

// from returns the frames from seq next on, and a channel closed when
// more are published.
func (f *feed) from(next int64) ([][]byte, int64, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if next < f.first {
		next = f.first
	}
	i := int(next - f.first)
	if i > len(f.frames) {
		i = len(f.frames)
	}
	return f.frames[i:len(f.frames):len(f.frames)], f.first + int64(i), f.wake
}

func (f *feed) setPhase(p string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.phase, f.since = p, time.Now()
}

func (f *feed) status() (phase string, since time.Time, last int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.phase, f.since, f.first + int64(len(f.frames)) - 1
}

// ServeHTTP streams the events: after Last-Event-ID if the request has
// one, else from the next one published. Each event is written and flushed
// on its own, as event sources do.
func (f *feed) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	next := f.lastSeq() + 1
	if id, err := strconv.ParseInt(r.Header.Get("Last-Event-ID"), 10, 64); err == nil && id >= 0 {
		next = id + 1
	}
	var end int64 = -1 // test only: the seq after which this response ends
	if e, err := strconv.ParseInt(r.URL.Query().Get("end"), 10, 64); err == nil {
		end = e
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// what many frameworks send; hop-by-hop, so HTTP/2 and HTTP/3 clients
	// reject a response that carries it
	h.Set("Connection", "keep-alive")
	// the page is served from another port than the hops
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", "*")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	for {
		frames, seq, wake := f.from(next)
		for _, fr := range frames {
			if _, err := w.Write(fr); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
			if seq == end {
				return
			}
			seq++
		}
		next = seq
		select {
		case <-wake:
		case <-r.Context().Done():
			return
		}
	}
}

// answer is what the backend "generates", split into tokens the way a
// language model's tokenizer splits text: words with their leading space.
const answer = `Server-Sent Events look simple: one long HTTP response, a few lines of text per event, a blank line after each. ` +
	`In production the response crosses a chain of proxies, and each of them has its own idea of what a response is. ` +
	`A compressor collects bytes until compressing them is worth it. ` +
	`A buffering proxy collects bytes until its buffer is full, because for an ordinary page that saves system calls and frees the upstream sooner. ` +
	`A load balancer closes any connection that has been quiet for a minute, because for an ordinary page a quiet minute means something went wrong. ` +
	`None of them is wrong for ordinary pages. ` +
	`All of them break a stream that sends a few small events and then thinks for a while: ` +
	`the events wait in a buffer that never fills, and the connection is cut while the model is still thinking. ` +
	`The browser's EventSource reconnects, asks for the events after the last one it saw, and the same thing happens again. ` +
	`What the user sees is an answer that arrives late, in lumps, or not at all. ` +
	`The fix is small, and it belongs to the server that knows the response is a stream: ` +
	`tell the compressor to leave it alone with Cache-Control no-transform, ` +
	`tell nginx not to buffer it with X-Accel-Buffering no, ` +
	`drop the hop-by-hop fields that HTTP/2 and HTTP/3 clients reject, ` +
	`flush every event, and send a comment line as a heartbeat whenever the stream has been quiet for a few seconds, ` +
	`so that no proxy on the way ever sees an idle connection. ` +
	`That is all the sse directive does, in front of any backend, without changing it.`

func tokens() []string {
	words := strings.Fields(answer)
	for i := 1; i < len(words); i++ {
		words[i] = " " + words[i]
	}
	return words
}

// generate publishes answers for ever: each answer's tokens gap apart,
// then a quiet stretch, until ctx ends.
func (f *feed) generate(ctx context.Context, gap, quiet time.Duration) {
	toks := tokens()
	t := time.NewTimer(0)
	defer t.Stop()
	wait := func(d time.Duration) bool {
		t.Reset(d)
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if !wait(0) {
		return
	}
	for n := 1; ; n++ {
		f.setPhase(fmt.Sprintf("streaming answer #%d (%d tokens, one every %v)", n, len(toks), gap))
		for i, tok := range toks {
			f.publish(n, tok, i == len(toks)-1)
			if !wait(gap) {
				return
			}
		}
		f.setPhase(fmt.Sprintf("thinking: quiet for %v", quiet))
		if !wait(quiet) {
			return
		}
	}
}
