package stream

import (
	"testing"

	"github.com/caddy-sse/caddy-sse/internal/sseref"
)

// The tracker says a stream is between events exactly when the bytes sent
// so far are empty or end with a blank line, for CR, LF and CRLF line ends
// and a CRLF split across writes; for the line-oriented extra types, when
// they end at a line end.
func TestBoundaryTracker(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		state  lineState
		cr     bool
	}{
		{"nothing yet", nil, atEventStart, false},
		{"empty write", []string{""}, atEventStart, false},
		{"mid line", []string{"data: a"}, inLine, false},
		{"end of line", []string{"data: a\n"}, atLineStart, false},
		{"end of event LF", []string{"data: a\n\n"}, atEventStart, false},
		{"end of event CRLF", []string{"data: a\r\n\r\n"}, atEventStart, false},
		{"end of event CR", []string{"data: a\r\r"}, atEventStart, true},
		{"one CRLF is one line end", []string{"data: a\r\n"}, atLineStart, false},
		{"LF CR is two line ends", []string{"data: a\n\r"}, atEventStart, true},
		{"CR then LF in the next write", []string{"data: a\r", "\n"}, atLineStart, false},
		{"CR then CRLF in the next write", []string{"data: a\r", "\r\n"}, atEventStart, false},
		{"CRLF split, then blank line", []string{"data: a\r", "\n\r\n"}, atEventStart, false},
		{"CR, LF, then data", []string{"data: a\r", "\ndata: b"}, inLine, false},
		{"lone CR at end", []string{"data: a\r"}, atLineStart, true},
		{"leading blank line", []string{"\n"}, atEventStart, false},
		{"leading CR", []string{"\r"}, atEventStart, true},
		{"line end after blank line", []string{"data: a\n\n", "\n"}, atEventStart, false},
		{"event then line", []string{"data: a\n\nid: 1\n"}, atLineStart, false},
		{"event split per byte", []string{"d", "a", ":", "\n", "\n"}, atEventStart, false},
		{"four line ends in one write", []string{"data: a\r\n\r\n"}, atEventStart, false},
		{"four line ends ending in CR", []string{"data: a\n\n\n\r"}, atEventStart, true},
		{"five line ends", []string{"x\n\n\n\n\n"}, atEventStart, false},
		{"LF completing an earlier CR, then three more", []string{"x\r", "\n\r\n\r"}, atEventStart, true},
		{"comment line", []string{": hi\n"}, atLineStart, false},
		{"line ends then text", []string{"\n\n\n\nx"}, inLine, false},
		{"text between line ends", []string{"\n\nx\n"}, atLineStart, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b Boundary
			for _, w := range tc.writes {
				b.Update([]byte(w))
			}
			if b.state != tc.state || b.cr != tc.cr {
				t.Fatalf("after %q: state=%d cr=%v, want state=%d cr=%v", tc.writes, b.state, b.cr, tc.state, tc.cr)
			}
			if got, want := b.At(true), tc.state == atEventStart; got != want {
				t.Errorf("At(sse) after %q = %v, want %v", tc.writes, got, want)
			}
			if got, want := b.At(false), tc.state != inLine; got != want {
				t.Errorf("At(lines) after %q = %v, want %v", tc.writes, got, want)
			}
		})
	}
}

// The tracker looks only at the tail of each write; whatever the writes, it
// ends in the same state as a byte-by-byte scan of everything sent.
func TestBoundaryTrackerMatchesFullScan(t *testing.T) {
	rng := sseref.NewRand(3)
	for i := range 20000 {
		stream := sseref.RandomStream(rng)
		var fast Boundary
		var slow naiveTracker
		for _, w := range sseref.RandomSplit(rng, stream) {
			fast.Update(w)
			slow.scan(w)
			if fast.state != slow.state || fast.cr != slow.cr {
				t.Fatalf("case %d: after %q (stream %q): tracker state=%d cr=%v, full scan state=%d cr=%v",
					i, w, stream, fast.state, fast.cr, slow.state, slow.cr)
			}
		}
	}
}

// naiveTracker is the line-end state machine of WHATWG HTML 9.2.6 run on
// every byte.
type naiveTracker struct {
	state lineState
	cr    bool
}

func (n *naiveTracker) scan(p []byte) {
	for _, c := range p {
		switch {
		case c == '\n' && n.cr:
			n.cr = false
		case c == '\n' || c == '\r':
			if n.state == inLine {
				n.state = atLineStart
			} else {
				n.state = atEventStart
			}
			n.cr = c == '\r'
		default:
			n.state, n.cr = inLine, false
		}
	}
}
