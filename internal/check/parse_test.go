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

package check

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// reads returns one read per string, the k-th at k*gap.
func reads(gap time.Duration, parts ...string) []Read {
	out := make([]Read, len(parts))
	for k, p := range parts {
		out[k] = Read{At: time.Duration(k) * gap, Data: []byte(p)}
	}
	return out
}

// summary writes the items as e (event) and c/b (comment or blank
// heartbeat), each with the index of its read.
func summary(items []Item) string {
	var b strings.Builder
	for _, it := range items {
		switch {
		case !it.Beat:
			b.WriteString("e")
		case it.Blank:
			b.WriteString("b")
		default:
			b.WriteString("c")
		}
		fmt.Fprintf(&b, "%d ", it.Read)
	}
	return strings.TrimSpace(b.String())
}

// TestCheckParse: the check tells events from heartbeats in every frame
// sse writes (comment line, comment block, blank lines), in every line
// end, also split across reads, and knows whether the bytes end at an
// event boundary (what tells a server's end from a cut).
func TestCheckParse(t *testing.T) {
	for _, tc := range []struct {
		name     string
		parts    []string
		want     string
		boundary bool
	}{
		{"events", []string{"data: 1\n\n", "id: 2\ndata: 2\n\n"}, "e0 e1", true},
		{"line frame", []string{"data: 1\n\n", ": heartbeat\n", "data: 2\n\n"}, "e0 c1 e2", true},
		{"block frame", []string{"data: 1\n\n", ": heartbeat\n\n", ": heartbeat\n\n"}, "e0 c1 c2", true},
		{"blank frame", []string{"data: 1\n\n", "\n\n", "\n\n", "data: 2\n\n"}, "e0 b1 b2 e3", true},
		{"blank frame before any event", []string{"\n\n", "data: 1\n\n"}, "b0 e1", true},
		{"blank frame CRLF", []string{"data: 1\r\n\r\n", "\r\n\r\n", "data: 2\r\n\r\n"}, "e0 b1 e2", true},
		{"CRLF split across reads", []string{"data: 1\r", "\n\r", "\n"}, "e1", true}, // the CR ends the blank line
		{"lone CR", []string{"data: 1\r\r: hb\r"}, "e0 c0", true},
		{"held lump", []string{"data: 1\n\ndata: 2\n\n: hb\ndata: 3\n\n"}, "e0 e0 c0 e0", true},
		{"no data no event", []string{"id: 7\n\n", "event: x\n\n"}, "", true},
		{"empty data is an event", []string{"data:\n\n"}, "e0", true},
		{"comment inside an event", []string{"data: 1\n: note\ndata: 2\n\n"}, "c0 e0", true},
		{"cut mid-line", []string{"data: 1\n\n", "data: 2"}, "e0", false},
		{"cut mid-event", []string{"data: 1\n\n", "data: 2\n"}, "e0", false},
		{"empty", nil, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Parse(reads(time.Second, tc.parts...))
			if got := summary(p.Items); got != tc.want {
				t.Errorf("Parse(%q) items = %q, want %q", tc.parts, got, tc.want)
			}
			if p.Boundary != tc.boundary {
				t.Errorf("Parse(%q) boundary = %v, want %v", tc.parts, p.Boundary, tc.boundary)
			}
		})
	}
}

// FuzzParse: the parser never panics, and an item never points past the
// reads or before the one of the item before it.
func FuzzParse(f *testing.F) {
	f.Add("data: 1\n\n", ": hb\n\n", "\r\n\r\n")
	f.Add("data: 1\r", "\n\r", "\n")
	f.Add("", "\n\n\n", "event: x\nid: 1\ndata")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		rs := reads(time.Millisecond, a, b, c)
		p := Parse(rs)
		last := 0
		for _, it := range p.Items {
			if it.Read < last || it.Read >= len(rs) {
				t.Fatalf("item in read %d after read %d, of %d reads", it.Read, last, len(rs))
			}
			last = it.Read
		}
	})
}
