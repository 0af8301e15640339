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

// Package sseref is a reference event-stream parser, written from the WHATWG
// HTML Living Standard, section 9.2.6 "Interpreting an event stream", so
// tests can say what a conforming client makes of the bytes it received,
// with a corpus of streams that exercise every step of the algorithm. The
// module's tests and the end-to-end tests (which cross-check it against a
// third-party client library) share it; the module itself never imports it.
package sseref

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"unicode/utf8"
)

// BOM is the UTF-8 byte order mark.
var BOM = []byte{0xEF, 0xBB, 0xBF}

// Event is one dispatched MessageEvent: its type, its data and its
// lastEventId.
type Event struct {
	Type, Data, ID string
}

func (e Event) String() string {
	return fmt.Sprintf("{type=%q data=%q id=%q}", e.Type, e.Data, e.ID)
}

// Result is what a client makes of a whole event stream.
type Result struct {
	Events  []Event
	Retries []string // the values of the retry fields that set the reconnection time, in order
}

// Parse interprets b as a complete event stream (the connection
// closed after its last byte), following WHATWG HTML 9.2.6 step by step.
func Parse(b []byte) Result {
	// "Streams must be decoded using the UTF-8 decode algorithm": it strips
	// one leading BOM, and only at the start of the stream.
	text := UTF8Decode(b)

	var (
		out         Result
		data        strings.Builder // the data buffer
		eventType   string          // the event type buffer
		lastIDBuf   string          // the last event ID buffer
		lastEventID string          // the event source's last event ID string
	)
	dispatch := func() {
		// 1. set the last event ID string to the last event ID buffer
		lastEventID = lastIDBuf
		// 2. an empty data buffer dispatches nothing, and resets the
		// event type buffer too
		if data.Len() == 0 {
			eventType = ""
			return
		}
		// 3. remove one trailing LF
		d := strings.TrimSuffix(data.String(), "\n")
		// 4-5. the type defaults to "message"
		typ := "message"
		if eventType != "" {
			typ = eventType
		}
		out.Events = append(out.Events, Event{Type: typ, Data: d, ID: lastEventID})
		// 6. reset the data and event type buffers
		data.Reset()
		eventType = ""
	}
	process := func(field, value string) {
		switch field {
		case "event":
			eventType = value
		case "data":
			data.WriteString(value)
			data.WriteByte('\n')
		case "id":
			// an id containing NULL is ignored
			if !strings.ContainsRune(value, 0) {
				lastIDBuf = value
			}
		case "retry":
			// "If the field value consists of only ASCII digits": an empty
			// value has no integer to interpret, so it is ignored too
			if value != "" && strings.Trim(value, "0123456789") == "" {
				out.Retries = append(out.Retries, value)
			}
		default:
			// any other field is ignored
		}
	}

	for {
		// a line ends at CRLF, a lone LF or a lone CR; a final line with
		// no end is an incomplete event and is discarded ("once the end
		// of the file is reached, any pending data must be discarded")
		i := strings.IndexAny(text, "\r\n")
		if i < 0 {
			break
		}
		line := text[:i]
		if text[i] == '\r' && i+1 < len(text) && text[i+1] == '\n' {
			i++
		}
		text = text[i+1:]

		switch {
		case line == "":
			dispatch()
		case line[0] == ':':
			// a comment
		default:
			field, value, found := strings.Cut(line, ":")
			if found {
				value = strings.TrimPrefix(value, " ") // one optional space
			}
			process(field, value)
		}
	}
	return out
}

// UTF8Decode is the WHATWG Encoding Standard's "UTF-8 decode": strip
// one leading BOM, then decode, replacing each maximal invalid subpart with
// one U+FFFD (Encoding Standard, 4.1 "UTF-8 decoder"). Go's own conversion
// replaces each invalid byte, which differs for truncated sequences.
func UTF8Decode(b []byte) string {
	return UTF8DecodeWithoutBOM(bytes.TrimPrefix(b, BOM))
}

// UTF8DecodeWithoutBOM is "UTF-8 decode without BOM": the decoder alone.
func UTF8DecodeWithoutBOM(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b))
	var (
		cp     rune
		seen   int
		needed int
		lower  byte = 0x80
		upper  byte = 0xBF
	)
	for i := 0; i < len(b); {
		c := b[i]
		if needed == 0 {
			i++
			switch {
			case c <= 0x7F:
				sb.WriteByte(c)
			case c >= 0xC2 && c <= 0xDF:
				needed, cp = 1, rune(c&0x1F)
			case c >= 0xE0 && c <= 0xEF:
				needed, cp = 2, rune(c&0xF)
				lower, upper = secondByteBounds(c)
			case c >= 0xF0 && c <= 0xF4:
				needed, cp = 3, rune(c&0x7)
				lower, upper = secondByteBounds(c)
			default:
				sb.WriteRune(utf8.RuneError)
			}
			continue
		}
		if c < lower || c > upper {
			// the byte is not consumed: it starts over
			cp, needed, seen, lower, upper = 0, 0, 0, 0x80, 0xBF
			sb.WriteRune(utf8.RuneError)
			continue
		}
		i++
		lower, upper = 0x80, 0xBF
		cp = cp<<6 | rune(c&0x3F)
		seen++
		if seen == needed {
			sb.WriteRune(cp)
			cp, needed, seen = 0, 0, 0
		}
	}
	if needed != 0 {
		sb.WriteRune(utf8.RuneError)
	}
	return sb.String()
}

// secondByteBounds returns the range the byte after lead byte c may take,
// which is narrower than 80-BF after E0, ED, F0 and F4: no overlong forms,
// no surrogates, nothing above U+10FFFF (Encoding Standard, 4.1).
func secondByteBounds(c byte) (lower, upper byte) {
	lower, upper = 0x80, 0xBF
	switch c {
	case 0xE0:
		lower = 0xA0
	case 0xED:
		upper = 0x9F
	case 0xF0:
		lower = 0x90
	case 0xF4:
		upper = 0x8F
	}
	return lower, upper
}

// Corpus is a set of event streams that exercise every step of 9.2.6.
var Corpus = []struct {
	Name string
	In   string
	Want []Event // nil: not asserted by the reference test (still cross-checked)
}{
	{"empty", "", []Event{}},
	{"one event", "data: a\n\n", []Event{{"message", "a", ""}}},
	{"two data lines", "data: a\ndata: b\n\n", []Event{{"message", "a\nb", ""}}},
	{"no space", "data:a\n\n", []Event{{"message", "a", ""}}},
	{"only one space stripped", "data:  a\n\n", []Event{{"message", " a", ""}}},
	{"tab kept", "data:\ta\n\n", []Event{{"message", "\ta", ""}}},
	{"CRLF", "data: a\r\ndata: b\r\n\r\n", []Event{{"message", "a\nb", ""}}},
	{"CR only", "data: a\rdata: b\r\r", []Event{{"message", "a\nb", ""}}},
	{"mixed line ends", "data: a\r\ndata: b\rdata: c\n\r\n", []Event{{"message", "a\nb\nc", ""}}},
	{"CR LF is one line end, LF CR is two", "data: a\n\rdata: b\n\n", []Event{{"message", "a", ""}, {"message", "b", ""}}},
	{"comment", ": hi\ndata: a\n\n", []Event{{"message", "a", ""}}},
	{"comment block", ": hi\n\ndata: a\n\n", []Event{{"message", "a", ""}}},
	{"event type", "event: ping\ndata: a\n\ndata: b\n\n", []Event{{"ping", "a", ""}, {"message", "b", ""}}},
	{"type without data resets", "event: ping\n\ndata: b\n\n", []Event{{"message", "b", ""}}},
	{"id persists", "id: 1\ndata: a\n\ndata: b\n\n", []Event{{"message", "a", "1"}, {"message", "b", "1"}}},
	{"id without data", "id: 7\n\ndata: b\n\n", []Event{{"message", "b", "7"}}},
	{"empty id resets", "id: 1\ndata: a\n\nid\ndata: b\n\n", []Event{{"message", "a", "1"}, {"message", "b", ""}}},
	{"id with NUL ignored", "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", []Event{{"message", "a", "1"}, {"message", "b", "1"}}},
	{"field without colon", "data\n\n", []Event{{"message", "", ""}}},
	{"empty data", "data:\n\n", []Event{{"message", "", ""}}},
	{"two empty data", "data\ndata\n\n", []Event{{"message", "\n", ""}}},
	{"data with colon", "data: a: b\n\n", []Event{{"message", "a: b", ""}}},
	{"unknown field", "foo: x\ndata: a\n\n", []Event{{"message", "a", ""}}},
	{"field names are case-sensitive", "Data: x\ndata: a\n\n", []Event{{"message", "a", ""}}},
	{"space before colon", "data : x\ndata: a\n\n", []Event{{"message", "a", ""}}},
	{"incomplete final event", "data: a\n\ndata: b\n", []Event{{"message", "a", ""}}},
	{"incomplete final line", "data: a\n\ndata: b", []Event{{"message", "a", ""}}},
	{"BOM at start", "\xEF\xBB\xBFdata: a\n\n", []Event{{"message", "a", ""}}},
	{"BOM later breaks the field", "data: a\n\n\xEF\xBB\xBFdata: b\n\ndata: c\n\n", []Event{{"message", "a", ""}, {"message", "c", ""}}},
	{"two BOMs", "\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n", []Event{{"message", "b", ""}}},
	{"BOM in data", "data: \xEF\xBB\xBFa\n\n", []Event{{"message", "\uFEFFa", ""}}},
	{"retry", "retry: 1000\ndata: a\n\n", []Event{{"message", "a", ""}}},
	{"bad retry", "retry: 1e3\nretry: -1\nretry: 12 \nretry:\ndata: a\n\n", []Event{{"message", "a", ""}}},
	{"NUL in data", "data: a\x00b\n\n", []Event{{"message", "a\x00b", ""}}},
	{"UTF-8 data", "data: héllo ☃ 😀\n\n", []Event{{"message", "héllo ☃ 😀", ""}}},
	{"invalid UTF-8", "data: a\xffb\xe2\x82c\n\n", []Event{{"message", "a\uFFFDb\uFFFDc", ""}}},
	{"truncated UTF-8 at line end", "data: a\xf0\x9f\n\n", []Event{{"message", "a\uFFFD", ""}}},
	{"blank lines only", "\n\n\r\n\r\r", []Event{}},
	{"leading blank lines", "\n\ndata: a\n\n", []Event{{"message", "a", ""}}},
	{"BOM after a leading blank line", "\n\xEF\xBB\xBFdata: a\n\n", []Event{}},
	{"heartbeat block between events", "data: a\n\n: heartbeat\n\ndata: b\n\n", []Event{{"message", "a", ""}, {"message", "b", ""}}},
	{"heartbeat line between events", "data: a\n\n: heartbeat\ndata: b\n\n", []Event{{"message", "a", ""}, {"message", "b", ""}}},
	{"comment mid event", "data: a\n: x\ndata: b\n\n", []Event{{"message", "a\nb", ""}}},
	{"blank line mid event splits it", "data: a\n\n\ndata: b\n\n", []Event{{"message", "a", ""}, {"message", "b", ""}}},
	{"long stream", strings.Repeat("id: 9\nevent: e\ndata: x\ndata: y\n\n", 50), nil},
	{"openai-style", "data: {\"choices\":[]}\n\ndata: [DONE]\n\n", []Event{{"message", "{\"choices\":[]}", ""}, {"message", "[DONE]", ""}}},
}

// streamTokens are the pieces random event streams are built from: field
// names, separators, every line end, BOM bytes, NUL, non-ASCII text and
// comments.
var streamTokens = []string{
	"data", "data:", "data: ", "event: ", "id: ", "id:", "retry: ", "retry:", ":", " ", ": c",
	"x", "yz", "message", "1", "42", "\x00", "é", "\xff", "\xEF\xBB\xBF", "\xEF", "\xBB\xBF",
	"\n", "\n", "\n", "\r", "\r", "\r\n", "\r\n", "\n\n", "\r\r", "\r\n\r\n",
	"data: x\n\n", "id: 7\ndata: y\n\n", "event: e\ndata: z\r\n\r\n",
}

// NewRand returns a random source seeded with seed, so a property test's
// failures can be replayed.
func NewRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// RandomSplit cuts b into writes of random sizes, none empty.
func RandomSplit(rng *rand.Rand, b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		n := 1 + rng.IntN(min(len(b), 12))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// RandomStream returns a random, mostly SSE-shaped byte stream; one in four
// starts with a BOM.
func RandomStream(rng *rand.Rand) []byte {
	var b []byte
	if rng.IntN(4) == 0 {
		b = append(b, BOM...)
	}
	for range rng.IntN(40) {
		b = append(b, streamTokens[rng.IntN(len(streamTokens))]...)
	}
	return b
}

// GenaiPieces splits b as google.golang.org/genai v1.77.0 splits a
// stream's body (its scan in api_client.go): at the first "\n\n", else at
// the first "\r\n\r\n", dropping one trailing CR of each piece, the rest
// at EOF as a last piece. It returns the pieces that are not empty: the
// SDK skips empty ones and fails on any other that does not start with
// "data:".
func GenaiPieces(b []byte) []string {
	var out []string
	for len(b) > 0 {
		var piece []byte
		if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
			piece, b = b[:i], b[i+2:]
		} else if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			piece, b = b[:i], b[i+4:]
		} else {
			piece, b = b, nil
		}
		piece = bytes.TrimSuffix(piece, []byte("\r"))
		if len(piece) > 0 {
			out = append(out, string(piece))
		}
	}
	return out
}
