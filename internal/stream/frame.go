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

// Heartbeat frames and the retry field, as bytes.

import (
	"strconv"
	"time"
)

// Frame is how a stream's heartbeats and retry fields are framed.
type Frame uint8

// The frames.
const (
	FrameBlock Frame = iota // ": <text>\n\n": a comment, then a blank line
	FrameLine               // ": <text>\n": a comment line alone
	// FrameBlank: two blank lines in the stream's own line ends, "\n\n"
	// or "\r\n\r\n", and no comment: an empty piece to a client that
	// splits the body at blank lines and rejects any piece that does not
	// start with "data:" (google.golang.org/genai), nothing at all to a
	// WHATWG parser, which dispatches nothing for a blank line with no
	// event pending. A stream of this frame ends without a retry field
	// (the same client would reject it).
	FrameBlank
)

// String returns the frame's name in the config: "block", "line" or
// "blank".
func (f Frame) String() string {
	switch f {
	case FrameLine:
		return "line"
	case FrameBlank:
		return "blank"
	}
	return "block"
}

// Beats holds the heartbeat bytes of one text, by Frame; FrameBlank's
// are those after LF line ends (Boundary.blank picks them per stream).
type Beats [3][]byte

// NewBeats returns the heartbeats with comment text, which must hold no
// CR, LF or NUL.
func NewBeats(text string) Beats {
	return Beats{
		FrameBlock: []byte(": " + text + "\n\n"),
		FrameLine:  []byte(": " + text + "\n"),
		FrameBlank: blankLF,
	}
}

// The blank frame's heartbeats, after LF and after CRLF line ends.
var (
	blankLF   = []byte("\n\n")
	blankCRLF = []byte("\r\n\r\n")
)

// RetryField returns a "retry:" field telling a client to reconnect after
// retry, jittered up to 50 % above it so clients told to come back together
// do not all come back at once, framed as f. The field stands alone, as
// the block frame has it, for FrameBlank: it is what sse's own answers to
// a refused EventSource carry, whatever the frame of its heartbeats.
func RetryField(retry time.Duration, f Frame) []byte {
	b := make([]byte, 0, 24)
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, RetryHint(retry).Milliseconds(), 10)
	b = append(b, '\n')
	if f != FrameLine {
		b = append(b, '\n')
	}
	return b
}

// RetryHint is retry with the jitter of RetryField.
func RetryHint(retry time.Duration) time.Duration {
	return JitterUp(retry, retrySpread)
}

// retrySpread: a retry hint is 100-150 % of the configured retry.
const retrySpread = 0.5
