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

package stream

// Where a stream's bytes stand in the event-stream syntax, so bytes of
// sse's own can be put between events without changing what a client
// parses, and a scanner of events for the debug log.

// lineState is where in the event-stream syntax (WHATWG HTML, 9.2.5) the
// bytes sent so far end.
type lineState uint8

const (
	atEventStart lineState = iota // nothing sent yet, or the last line was blank
	atLineStart                   // a line of the current event has ended
	inLine                        // in the middle of a line
)

// Boundary follows a stream's line structure with O(1) state, looking
// only at the trailing line-end bytes of each write. Line ends are CRLF, LF
// or a lone CR; a CRLF may be split across two writes.
type Boundary struct {
	state lineState
	// cr is set when the last byte was CR: a LF that comes next completes
	// that line end instead of ending another line.
	cr bool
	// crlf is set when the last complete line end was CRLF.
	crlf bool
}

// Update moves the tracker past p, which was just sent.
func (b *Boundary) Update(p []byte) {
	n := len(p)
	k := n
	// Four trailing line-end bytes hold at least two line ends (a CRLF
	// counts once, and at most one LF can complete an earlier CR), so the
	// stream ends with a blank line whatever came before; never look
	// further back than that.
	for k > 0 && n-k < 4 && isLineEnd(p[k-1]) {
		k--
	}
	if n-k == 4 {
		b.state, b.cr = atEventStart, p[n-1] == '\r'
		if !b.cr {
			b.crlf = p[n-2] == '\r'
		}
		return
	}
	if k > 0 {
		b.state, b.cr = inLine, false
	}
	for _, c := range p[k:] {
		if c == '\n' && b.cr {
			b.cr, b.crlf = false, true
			continue
		}
		if c == '\n' {
			b.crlf = false
		}
		if b.state == inLine {
			b.state = atLineStart
		} else {
			b.state = atEventStart // a blank line
		}
		b.cr = c == '\r'
	}
}

// At reports whether bytes may be inserted here without changing
// the events a client parses: between events for text/event-stream, between
// lines for the line-oriented extra types.
func (b *Boundary) At(sse bool) bool {
	if sse {
		return b.state == atEventStart
	}
	return b.state != inLine
}

// blank returns the blank frame's heartbeat for where the stream stands:
// two blank lines in its own line ends, "\r\n\r\n" after CRLF and "\n\n"
// otherwise (nothing sent yet included: a client that splits at "\n\n"
// first, as google.golang.org/genai does, then sees an empty piece before
// a CRLF stream's first event). Nil after a CR that may be the first half
// of a CRLF: a LF of the upstream's would then follow bytes of ours, and
// the stream must say more first.
func (b *Boundary) blank() []byte {
	switch {
	case b.cr:
		return nil
	case b.crlf:
		return blankCRLF
	}
	return blankLF
}

func isLineEnd(c byte) bool { return c == '\n' || c == '\r' }

// Scanner counts the events of a stream and remembers its last event
// id, for the debug line logged when the stream ends. It reads every byte,
// so it runs only when debug logging is on.
type Scanner struct {
	line   [maxIDLine]byte // the start of the current line
	n      int             // length of the current line so far
	cr     bool            // the last byte was CR
	fields bool            // the current block has a data field
	events int64           // blocks with data that were dispatched
	// the last id field seen, copied into a fixed array: converting it to
	// a string here would allocate on every event with an id
	lastID    [maxIDLine]byte
	lastIDLen int
	hasID     bool
}

// Scan reads p.
func (s *Scanner) Scan(p []byte) {
	for _, c := range p {
		if c == '\n' && s.cr {
			s.cr = false
			continue
		}
		s.cr = c == '\r'
		if isLineEnd(c) {
			s.endLine()
			continue
		}
		if s.n < len(s.line) {
			s.line[s.n] = c
		}
		s.n++
	}
}

func (s *Scanner) endLine() {
	defer func() { s.n = 0 }()
	if s.n == 0 {
		if s.fields {
			s.events++
			s.fields = false
		}
		return
	}
	line := s.line[:min(s.n, len(s.line))]
	name, value := line, []byte(nil)
	for i, c := range line {
		if c == ':' {
			name, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
			break
		}
	}
	switch string(name) {
	case "data":
		s.fields = true
	case "id":
		if s.n <= len(s.line) {
			s.lastIDLen, s.hasID = copy(s.lastID[:], value), true
		}
	}
}

// maxIDLine bounds the line prefix the scanner keeps; longer id lines are
// not recorded.
const maxIDLine = 256

// Events returns the number of events dispatched so far.
func (s *Scanner) Events() int64 { return s.events }

// LastID returns the last event id seen, if any. The bytes are the
// scanner's own: copy them to keep them.
func (s *Scanner) LastID() ([]byte, bool) { return s.lastID[:s.lastIDLen], s.hasID }
