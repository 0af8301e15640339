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

package caddysse

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/caddy-sse/caddy-sse/internal/sseref"
)

// The tests read what a conforming client makes of a stream through the
// reference parser of internal/sseref (WHATWG HTML 9.2.6); the end-to-end
// module cross-checks it against a third-party client library.
type (
	sseEvent = sseref.Event
	sseParse = sseref.Result
)

func parseEventStream(b []byte) sseParse { return sseref.Parse(b) }

func whatwgUTF8Decode(b []byte) string { return sseref.UTF8Decode(b) }

func randomStream(rng *rand.Rand) []byte { return sseref.RandomStream(rng) }

var sseCorpus = sseref.Corpus

// utf8BOM is the byte order mark a stream may start with.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// The reference parser gives, for each corpus stream, the events WHATWG
// HTML 9.2.6 says a browser dispatches: the property and end-to-end tests
// of heartbeats rest on it.
func TestReferenceParser(t *testing.T) {
	for _, tc := range sseCorpus {
		if tc.Want == nil {
			continue
		}
		t.Run(tc.Name, func(t *testing.T) {
			got := parseEventStream([]byte(tc.In)).Events
			if got == nil {
				got = []sseEvent{}
			}
			if !slices.Equal(got, tc.Want) {
				t.Errorf("parseEventStream(%q) = %v, want %v", tc.In, got, tc.Want)
			}
		})
	}
}

// The reference parser reports the retry fields that set the reconnection
// time: ASCII digits only.
func TestReferenceParserRetry(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"digits", "retry: 1000\n\n", []string{"1000"}},
		{"no space", "retry:5\n", []string{"5"}},
		{"not digits", "retry: 1e3\nretry: -1\nretry: 12 \nretry: +3\nretry:\n\n", nil},
		{"after BOM", "\xEF\xBB\xBFretry: 7\n", []string{"7"}},
		{"incomplete line", "retry: 7", nil},
		{"two", "retry: 1\r\rretry: 2\r\n", []string{"1", "2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseEventStream([]byte(tc.in)).Retries; !slices.Equal(got, tc.want) {
				t.Errorf("retries of %q = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// The reference decoder follows the WHATWG UTF-8 decoder, including its
// one-replacement-per-maximal-subpart rule, which Go's does not.
func TestWhatwgUTF8Decode(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"ascii", "abc", "abc"},
		{"BOM stripped once", "\xEF\xBB\xBF\xEF\xBB\xBFa", "\uFEFFa"},
		{"valid", "é☃😀", "é☃😀"},
		{"lone continuation", "a\x80b", "a\uFFFDb"},
		{"truncated 3-byte", "\xe2\x82a", "\uFFFDa"},
		{"truncated 4-byte at end", "a\xf0\x9f\x98", "a\uFFFD"},
		{"overlong", "\xc0\xaf", "\uFFFD\uFFFD"},
		{"surrogate", "\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"},
		{"above max", "\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := whatwgUTF8Decode([]byte(tc.in)); got != tc.want {
				t.Errorf("whatwgUTF8Decode(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
