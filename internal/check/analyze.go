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

// The analysis of a recording's timeline: the facts of the report (times,
// events, heartbeats, lumps, silences, the end). Pure: no I/O, no clock.

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Analyze turns a recording into a report, problems included.
func Analyze(rec *Recording, o Options) *Report {
	rep := &Report{
		URL: o.URL, Method: o.Method, Proto: rec.Proto, Status: rec.Status,
		ContentType: rec.Header.Get("Content-Type"),
		HeaderMS:    ms(rec.HeaderAt), DurationMS: ms(rec.EndAt),
		End: EndNone, Problems: []Problem{}, Notes: []string{}, Held: []Lump{},
	}
	rep.Fields, rep.HopByHop = headerFacts(rec.Header)
	if rec.Rejected != nil {
		rep.EndError = rec.Rejected.Error()
		rep.HopByHop = []string{rejectedField(rec.Rejected)}
	}
	if rec.BodyRead {
		analyzeBody(rec, o, rep)
	}
	if ps := verdict(rec, o, rep); len(ps) > 0 {
		rep.Problems = ps
	}
	return rep
}

// analyzeBody fills in what the body's timeline shows.
func analyzeBody(rec *Recording, o Options, rep *Report) {
	for _, r := range rec.Reads {
		rep.Bytes += int64(len(r.Data))
	}
	rep.Reads = len(rec.Reads)
	if len(rec.Reads) > 0 {
		rep.FirstByteMS = ptr(ms(rec.Reads[0].At))
	}
	reads, err := decode(rec.Header.Get("Content-Encoding"), rec.Reads)
	if err != nil {
		rep.Notes = append(rep.Notes, "events were not counted: "+err.Error())
	}
	p := Parse(reads)
	for _, it := range p.Items {
		if it.Beat {
			rep.Heartbeats++
			continue
		}
		if rep.Events == 0 {
			rep.FirstEventMS = ptr(ms(reads[it.Read].At))
		}
		rep.Events++
	}
	rep.Heartbeat = heartbeatFacts(reads, p.Items)
	lumps := Lumps(reads, p.Items, rec.HeaderAt)
	for _, l := range lumps {
		if isHeld(l) {
			rep.Held = append(rep.Held, l.Lump)
		}
	}
	rep.LongestSilenceMS = ms(longestSilence(rec))
	rep.End, rep.EndError = classifyEnd(rec, p.Boundary && err == nil)
	if l, ok := heldHeader(rec); ok {
		rep.Held = append(rep.Held, l)
	}
	rep.SilenceBeforeEndMS = ms(silenceBeforeEnd(rec))
}

// headerFacts returns the fields of interest in h, and the hop-by-hop
// fields it has.
func headerFacts(h http.Header) (map[string]string, []string) {
	fields := map[string]string{}
	for _, k := range reportedFields {
		if vs, ok := h[k]; ok {
			fields[k] = strings.Join(vs, ", ")
		}
	}
	hop := []string{}
	for _, k := range hopByHopFields {
		vs, ok := h[k]
		if !ok || k == "Te" && strings.EqualFold(strings.Join(vs, ""), "trailers") {
			continue
		}
		fields[k] = strings.Join(vs, ", ")
		hop = append(hop, k)
	}
	return fields, hop
}

// heartbeatFacts returns what the heartbeats looked like, or nil. The
// interval is the median silence before a heartbeat that came first in
// its read: an idle-based heartbeat is sent after that much silence.
func heartbeatFacts(reads []Read, items []Item) *Heartbeat {
	var hb *Heartbeat
	var gaps []time.Duration
	for k, it := range items {
		if !it.Beat {
			continue
		}
		hb = &Heartbeat{Frame: "comment", Text: it.Text}
		if it.Blank {
			hb.Frame, hb.Text = "blank", ""
		}
		first := k == 0 || items[k-1].Read != it.Read
		if first && it.Read > 0 {
			gaps = append(gaps, reads[it.Read].At-reads[it.Read-1].At)
		}
	}
	if hb != nil && len(gaps) > 0 {
		slices.Sort(gaps)
		hb.IntervalMS = ptr(ms(gaps[len(gaps)/2]))
	}
	return hb
}

// lump is a Lump and the reads it spans.
type lump struct {
	Lump
	first, last int           // indexes of its reads
	start, end  time.Duration // when its first and last reads returned
	after       time.Duration // when something arrived last before it: a read, or the header
}

// Lumps groups reads into lumps: runs of reads each within LumpGap of the
// one before. The silence before the first lump is counted from the
// response header.
func Lumps(reads []Read, items []Item, headerAt time.Duration) []lump {
	var out []lump
	for i, r := range reads {
		if n := len(out); n > 0 && r.At-out[n-1].end <= LumpGap {
			out[n-1].last, out[n-1].end = i, r.At
			continue
		}
		prev := headerAt
		if n := len(out); n > 0 {
			prev = out[n-1].end
		}
		out = append(out, lump{first: i, last: i, start: r.At, end: r.At, after: prev,
			Lump: Lump{AtMS: ms(r.At), SilenceMS: ms(r.At - prev)}})
	}
	k := 0
	for _, it := range items {
		for k < len(out) && it.Read > out[k].last {
			k++
		}
		if k == len(out) {
			break
		}
		if it.Beat {
			out[k].Beats++
		} else {
			out[k].Events++
		}
	}
	if len(out) > 0 && out[0].start-headerAt <= LumpGap {
		// the header came with it: the silence is the wait for both
		out[0].SilenceMS, out[0].after = ms(headerAt), 0
	}
	return out
}

// isHeld reports whether a lump is what a buffering hop lets go: several
// events or heartbeats together after a silence. A header that came late
// together with the first events is the same (a hop held it all); events
// sent close together, such as a burst of tokens, arrive apart.
func isHeld(l lump) bool {
	return l.SilenceMS >= ms(HeldSilence) && l.Events+l.Beats >= HeldItems
}

// longestSilence returns the longest time with nothing arriving, from the
// response header to the end of the stream or the check.
func longestSilence(rec *Recording) time.Duration {
	var longest time.Duration
	prev := rec.HeaderAt
	for _, r := range rec.Reads {
		longest = max(longest, r.At-prev)
		prev = r.At
	}
	return max(longest, rec.EndAt-prev)
}

// silenceBeforeEnd returns how long nothing had arrived when the stream
// ended. The response header counts as an arrival, and so does the
// request. What arrived together with a stream's end that was not clean
// (a hop let go what it held when it cut the stream) does not break the
// silence.
func silenceBeforeEnd(rec *Recording) time.Duration {
	at := make([]time.Duration, 0, len(rec.Reads)+2)
	at = append(at, 0, rec.HeaderAt)
	for _, r := range rec.Reads {
		at = append(at, r.At)
	}
	k := len(at) - 1
	if rec.Err != nil && !errors.Is(rec.Err, io.EOF) {
		for next := rec.EndAt; k > 0 && next-at[k] <= LumpGap; k-- {
			next = at[k]
		}
	}
	return max(rec.EndAt-at[k], 0)
}

// heldHeader returns the lump of a response whose header came late, only
// with the end of a stream that was cut, and nothing with it: a hop held
// the response until it gave up on it, and dropped what it held (nginx
// does, with its proxy defaults, at proxy_read_timeout).
func heldHeader(rec *Recording) (Lump, bool) {
	held := len(rec.Reads) == 0 && rec.HeaderAt >= HeldSilence &&
		rec.Err != nil && !errors.Is(rec.Err, io.EOF) && rec.EndAt-rec.HeaderAt <= LumpGap
	return Lump{AtMS: ms(rec.HeaderAt), SilenceMS: ms(rec.HeaderAt)}, held
}

// classifyEnd says how the body ended; boundary reports whether its bytes
// end at an event boundary.
func classifyEnd(rec *Recording, boundary bool) (string, string) {
	switch {
	case rec.Err == nil:
		return EndHeld, ""
	case errors.Is(rec.Err, io.EOF) && boundary:
		return EndServer, ""
	case errors.Is(rec.Err, io.EOF):
		return EndCut, "the body ended in the middle of an event"
	case isReset(rec.Err):
		return EndReset, rec.Err.Error()
	}
	return EndCut, rec.Err.Error()
}

// ms returns d in whole milliseconds.
func ms(d time.Duration) int64 { return d.Milliseconds() }

func ptr(v int64) *int64 { return &v }

// the response fields the report lists, besides the hop-by-hop ones
var reportedFields = []string{
	"Content-Encoding", "Cache-Control", "X-Accel-Buffering", "Incremental",
	"Server", "Via", "Alt-Svc",
}

// hopByHopFields are the connection-specific fields (RFC 9110, 7.6.1) that
// HTTP/2 (RFC 9113, 8.2.2) and HTTP/3 (RFC 9114, 4.2) forbid, in canonical
// form; TE is allowed as "trailers".
var hopByHopFields = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Upgrade", "Transfer-Encoding", "Te"}

const (
	// LumpGap is the longest time between two reads of one lump. Bytes a
	// hop let go at once arrive back to back; events written apart, even
	// tokens a few milliseconds apart, arrive apart.
	LumpGap = 5 * time.Millisecond

	// HeldSilence is the shortest silence before a lump of HeldItems
	// events or heartbeats for it to count as held by a hop.
	HeldSilence = time.Second

	// HeldItems is the fewest events and heartbeats in a held lump.
	HeldItems = 3
)
