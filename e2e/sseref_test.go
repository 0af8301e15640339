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

// The module's tests judge what a client makes of a stream with the
// reference parser of internal/sseref (WHATWG HTML 9.2.6). This test checks
// that parser against a maintained third-party client. It lives here, in its
// own module, so the plugin's go.mod does not require the library.

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/caddy-sse/caddy-sse/internal/sseref"
	gosse "github.com/tmaxmax/go-sse"
)

// wholeEvents are complete events in every line-end style.
var wholeEvents = []string{
	"data: a\n\n", "id: 1\ndata: b\n\n", "event: e\ndata: c\r\n\r\n",
	"data: x\rdata: y\r\r", "retry: 10\ndata: z\n\n", "data: {\"t\":\"hé\"}\n\n",
}

// The reference parser agrees with a maintained third-party client,
// github.com/tmaxmax/go-sse, on every corpus stream, random streams, and
// streams of events with heartbeat comments between them.
//
// Known divergences of go-sse v0.12.0 from the spec, and how they are
// handled (each is excluded only where it applies):
//   - go-sse dispatches a block that set only event or id fields (no data
//     field), with empty data; the spec dispatches nothing. go-sse cannot
//     tell "data:" (an event with empty data, which the spec dispatches)
//     from no data at all, so events with empty data are left out of the
//     comparison on both sides.
//   - go-sse leaves the type of an untyped event empty, where the spec
//     says "message": empty is mapped to "message".
//   - go-sse hands back raw bytes; the spec decodes UTF-8 first. go-sse's
//     values are decoded with the same decoder, which is exact: an invalid
//     sequence never spans the ASCII bytes (":", CR, LF) that split fields.
//   - go-sse strips a BOM at the start of its first block, even after
//     leading blank lines (its tokenizer skips them); the spec strips it
//     only as the stream's first bytes. Streams that start with CR or LF
//     followed by a BOM are skipped.
//   - go-sse's Read does not report retry fields; retries are checked by
//     TestReferenceParserRetry (in the module) only.
func TestReferenceParserMatchesGoSSE(t *testing.T) {
	streams := make([]string, 0, len(sseref.Corpus)+800)
	for _, tc := range sseref.Corpus {
		streams = append(streams, tc.In)
	}
	rng := rand.New(rand.NewPCG(7, 7^0x9e3779b97f4a7c15))
	for range 500 {
		streams = append(streams, string(sseref.RandomStream(rng)))
	}
	// streams of whole events with heartbeat comments between them, in
	// both frames, as sse writes them at event boundaries (the property
	// tests of the module check that the writer only ever writes them there)
	for i := range 300 {
		frame := [...]string{": heartbeat\n\n", ": heartbeat\n"}[i%2]
		var b strings.Builder
		for range rng.IntN(8) {
			b.WriteString(frame)
			b.WriteString(wholeEvents[rng.IntN(len(wholeEvents))])
		}
		if rng.IntN(2) == 0 {
			b.WriteString(frame)
		}
		streams = append(streams, b.String())
	}
	for i, in := range streams {
		if goSSEBOMDivergence(in) {
			continue
		}
		want := withoutEmptyData(sseref.Parse([]byte(in)).Events)
		got := withoutEmptyData(goSSEEvents(t, in))
		if !slices.Equal(got, want) {
			t.Errorf("stream %d %q:\ngo-sse    %v\nreference %v", i, in, got, want)
		}
	}
}

// goSSEEvents parses in with go-sse and maps its events to the spec's form.
func goSSEEvents(t *testing.T, in string) []sseref.Event {
	t.Helper()
	var evs []sseref.Event
	for ev, err := range gosse.Read(strings.NewReader(in), nil) {
		if err != nil {
			t.Fatalf("go-sse on %q: %v", in, err)
		}
		typ := sseref.UTF8DecodeWithoutBOM([]byte(ev.Type))
		if typ == "" {
			typ = "message"
		}
		evs = append(evs, sseref.Event{
			Type: typ,
			Data: sseref.UTF8DecodeWithoutBOM([]byte(ev.Data)),
			ID:   sseref.UTF8DecodeWithoutBOM([]byte(ev.LastEventID)),
		})
	}
	return evs
}

// goSSEBOMDivergence reports whether in starts with line ends and then a
// BOM, which go-sse strips and the spec does not.
func goSSEBOMDivergence(in string) bool {
	rest := strings.TrimLeft(in, "\r\n")
	return len(rest) < len(in) && strings.HasPrefix(rest, string(sseref.BOM))
}

func withoutEmptyData(evs []sseref.Event) []sseref.Event {
	out := []sseref.Event{}
	for _, e := range evs {
		if e.Data != "" {
			out = append(out, e)
		}
	}
	return out
}
