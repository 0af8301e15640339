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

// The report of a check: what the client saw, and the problems found. It
// is the JSON object `caddy sse check --json` prints; the README documents
// it field by field.

// Report is what a check found. Times are in milliseconds from the moment
// the request was sent.
type Report struct {
	URL    string `json:"url"`
	Method string `json:"method"`
	// Proto is the protocol of the response: HTTP/1.1, HTTP/2.0, HTTP/3.0.
	Proto       string `json:"proto"`
	Status      int    `json:"status"` // 0 when the client rejected the response
	ContentType string `json:"content_type"`

	// Fields are the response's header fields that tell what the path
	// does to a stream (Content-Encoding, Cache-Control,
	// X-Accel-Buffering, Incremental, Server, Via and the hop-by-hop
	// ones), as received; absent fields are not listed.
	Fields map[string]string `json:"fields"`
	// HopByHop names the hop-by-hop fields in the response.
	HopByHop []string `json:"hop_by_hop"`

	HeaderMS     int64  `json:"header_ms"`
	FirstByteMS  *int64 `json:"first_byte_ms"`  // null: no body byte arrived
	FirstEventMS *int64 `json:"first_event_ms"` // null: no event arrived
	DurationMS   int64  `json:"duration_ms"`    // until the stream ended or the check stopped

	Bytes      int64 `json:"bytes"` // body bytes as received (compressed, if it was)
	Reads      int   `json:"reads"` // reads that returned body bytes
	Events     int   `json:"events"`
	Heartbeats int   `json:"heartbeats"`
	// Heartbeat describes the heartbeats seen; null when none was.
	Heartbeat *Heartbeat `json:"heartbeat"`

	// Held lists the lumps in which a hop let go events it had held.
	Held []Lump `json:"held"`
	// LongestSilenceMS is the longest time with nothing arriving, from
	// the response header to the end.
	LongestSilenceMS int64 `json:"longest_silence_ms"`

	// End is how the stream ended: one of the End constants.
	End      string `json:"end"`
	EndError string `json:"end_error,omitempty"`
	// SilenceBeforeEndMS is how long nothing had arrived when the stream
	// ended (bytes a hop let go together with the end do not count).
	SilenceBeforeEndMS int64 `json:"silence_before_end_ms"`

	Problems []Problem `json:"problems"` // empty when the stream is healthy
	Notes    []string  `json:"notes"`    // facts worth knowing that are not problems
}

// Heartbeat is what the heartbeats of a stream looked like.
type Heartbeat struct {
	// Frame is "comment" (a line starting with a colon) or "blank" (blank
	// lines with no event pending), the frame of the last one seen.
	Frame string `json:"frame"`
	// Text is the last comment line, for the comment frame.
	Text string `json:"text,omitempty"`
	// IntervalMS is the median time with nothing arriving before a
	// heartbeat: the interval of an idle-based heartbeat. Null when no
	// heartbeat came alone.
	IntervalMS *int64 `json:"interval_ms"`
}

// Lump is a run of reads, each within LumpGap of the one before, that
// carried several events or heartbeats after a silence: what a buffering
// hop looks like.
type Lump struct {
	AtMS      int64 `json:"at_ms"`
	SilenceMS int64 `json:"silence_ms"` // nothing arrived for this long before it
	Events    int   `json:"events"`
	Beats     int   `json:"heartbeats"`
}

// Problem is one thing on the path that breaks or endangers the stream.
type Problem struct {
	Kind   string `json:"kind"` // one of the Kind constants
	Detail string `json:"detail"`
	Fix    string `json:"fix"`
}

// The kinds of problems.
const (
	KindStatus         = "status"           // the status is not 200
	KindNotEventStream = "not_event_stream" // the Content-Type is not text/event-stream
	KindBuffered       = "buffered"         // a hop held events and let them go in lumps
	KindCompressed     = "compressed"       // the stream has a Content-Encoding
	KindHopByHop       = "hop_by_hop"       // hop-by-hop fields over HTTP/2 or HTTP/3
	KindCut            = "cut"              // the stream ended without the server's clean end
	KindNoHeartbeat    = "no_heartbeat"     // a silence longer than Options.Idle without a heartbeat
)

// How a stream ended.
const (
	EndServer = "server" // a clean end at an event boundary
	EndHeld   = "held"   // still open when the check stopped: healthy
	EndCut    = "cut"    // closed mid-event, or without the end of the body
	EndReset  = "reset"  // the connection or the stream was reset
	EndNone   = "none"   // the body was not read: the status, type or header fields fail a client already
)
