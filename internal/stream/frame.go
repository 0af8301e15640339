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
)

// String returns the frame's name in the config: "block" or "line".
func (f Frame) String() string {
	if f == FrameLine {
		return "line"
	}
	return "block"
}

// Beats holds the heartbeat bytes of one text, by Frame.
type Beats [2][]byte

// NewBeats returns the heartbeats with comment text, which must hold no
// CR, LF or NUL.
func NewBeats(text string) Beats {
	return Beats{
		FrameBlock: []byte(": " + text + "\n\n"),
		FrameLine:  []byte(": " + text + "\n"),
	}
}

// RetryField returns a "retry:" field telling a client to reconnect after
// retry, jittered up to 50 % above it so clients told to come back together
// do not all come back at once, framed as f.
func RetryField(retry time.Duration, f Frame) []byte {
	b := make([]byte, 0, 24)
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, RetryHint(retry).Milliseconds(), 10)
	b = append(b, '\n')
	if f == FrameBlock {
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
