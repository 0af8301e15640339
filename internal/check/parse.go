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

// The event-stream syntax, read by read (WHATWG HTML, "Parsing an event
// stream"): events, and heartbeats, which are comment lines or blank lines
// with no event pending (sse's blank frame).

import "bytes"

// Item is an event or a heartbeat, and the read that completed it.
type Item struct {
	Read  int  // index of the read in which it ended
	Beat  bool // a heartbeat, not an event
	Blank bool // for heartbeats: blank lines, not a comment
	Text  string
}

// Parsed is what a body's bytes hold.
type Parsed struct {
	Items []Item
	// Boundary reports whether the bytes end at an event boundary:
	// no partial line, no event field pending.
	Boundary bool
}

// what the previous line was, for telling heartbeats apart
const (
	lineNone     = iota
	lineField    // a field of an event
	lineComment  // a comment
	lineDispatch // the blank line that ended an event's fields
	lineBlankHB  // a blank line of a blank-frame heartbeat
)

// Parse reads the event-stream bytes of reads. CRLF, LF and CR end lines,
// and a CRLF may be split across two reads. A blank line that follows
// an event's end, or a blank heartbeat in an earlier read, starts a blank
// heartbeat; the blank lines right after it in the same read, and the
// blank line after a comment (the block frame, ": text\n\n"), belong to
// that heartbeat.
func Parse(reads []Read) Parsed {
	var (
		p        Parsed
		line     []byte
		afterCR  bool // the last byte was a CR: a LF next completes it
		pending  bool // an event field was seen since the last blank line
		hasData  bool // a data field was seen since the last blank line
		prev     = lineNone
		prevRead = -1 // the read of the previous line
	)
	for i, r := range reads {
		for _, b := range r.Data {
			if b == '\n' && afterCR {
				afterCR = false
				continue
			}
			afterCR = b == '\r'
			if b != '\n' && b != '\r' {
				line = append(line, b)
				continue
			}
			switch {
			case len(line) > 0 && line[0] == ':':
				p.Items = append(p.Items, Item{Read: i, Beat: true, Text: string(bytes.TrimSpace(line[1:]))})
				prev = lineComment
			case len(line) > 0:
				pending, prev = true, lineField
				name, _, _ := bytes.Cut(line, []byte(":"))
				hasData = hasData || string(name) == "data"
			case pending:
				if hasData {
					p.Items = append(p.Items, Item{Read: i})
				}
				pending, hasData, prev = false, false, lineDispatch
			case prev == lineComment || prev == lineBlankHB && prevRead == i:
				prev = lineBlankHB // part of the heartbeat before it
			default:
				p.Items = append(p.Items, Item{Read: i, Beat: true, Blank: true})
				prev = lineBlankHB
			}
			prevRead = i
			line = line[:0]
		}
	}
	p.Boundary = len(line) == 0 && !pending
	return p
}
