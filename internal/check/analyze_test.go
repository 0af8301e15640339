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
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// at is a read of s at ms milliseconds.
func at(ms int, s string) Read {
	return Read{At: time.Duration(ms) * time.Millisecond, Data: []byte(s)}
}

// recorded is a recording of a 200 text/event-stream over proto, header at
// headerMS, ended at endMS by err (nil: still open).
func recorded(proto string, headerMS, endMS int, err error, rs ...Read) *Recording {
	return &Recording{
		Proto: proto, Status: 200, BodyRead: true,
		Header:   http.Header{"Content-Type": {"text/event-stream"}, "Cache-Control": {"no-cache, no-transform"}, "Incremental": {"?1"}},
		HeaderAt: time.Duration(headerMS) * time.Millisecond,
		EndAt:    time.Duration(endMS) * time.Millisecond,
		Reads:    rs, Err: err,
	}
}

// spaced returns n events, one every gap ms from first ms.
func spaced(first, gap, n int) []Read {
	var rs []Read
	for k := range n {
		rs = append(rs, at(first+k*gap, "data: x\n\n"))
	}
	return rs
}

var testOptions = Options{URL: "http://example.com/events", Method: "GET", For: 90 * time.Second, Idle: 20 * time.Second}

func kinds(rep *Report) []string {
	var out []string
	for _, p := range rep.Problems {
		out = append(out, p.Kind)
	}
	return out
}

// TestCheckAnalyze: each problem is found in the timeline that shows it,
// and not in the healthy timelines beside it: events spaced out, a burst
// of tokens, a stream held open.
func TestCheckAnalyze(t *testing.T) {
	held := append(spaced(10, 300, 2), at(3000, "data: 3\n\ndata: 4\n\ndata: 5\n\n"))
	tokens := spaced(5000, 8, 40) // a model that thought for 5 s, then 8 ms per token
	beats := []Read{at(10, "data: 1\n\n"), at(15010, ": heartbeat\n"), at(30010, ": heartbeat\n"), at(40000, "data: 2\n\n")}
	for _, tc := range []struct {
		name string
		rec  *Recording
		want []string
		end  string
	}{
		{"healthy, held open", recorded("HTTP/1.1", 5, 45000, nil, beats...), nil, EndHeld},
		{"healthy, ended by the server", recorded("HTTP/2.0", 5, 1000, io.EOF, spaced(10, 300, 3)...), nil, EndServer},
		{"burst of tokens", recorded("HTTP/1.1", 5, 6000, io.EOF, tokens...), nil, EndServer},
		{"held lump", recorded("HTTP/1.1", 5, 3001, io.EOF, held...), []string{KindBuffered}, EndServer},
		{"header late with the events", recorded("HTTP/1.1", 2000, 2003, io.EOF, at(2001, "data: 1\n\ndata: 2\n\n"), at(2002, "data: 3\n\n")),
			[]string{KindBuffered}, EndServer},
		{"lump at the cut", recorded("HTTP/1.1", 5, 3600, io.ErrUnexpectedEOF, at(3599, "data: 1\n\ndata: 2\n\ndata: 3\n\n")),
			[]string{KindBuffered, KindCut}, EndCut},
		{"header only with the cut", recorded("HTTP/1.1", 3600, 3601, io.ErrUnexpectedEOF), []string{KindBuffered, KindCut}, EndCut},
		{"header late, then healthy", recorded("HTTP/1.1", 3600, 5000, io.EOF, spaced(3700, 300, 4)...), nil, EndServer},
		{"cut mid-event", recorded("HTTP/1.1", 5, 4000, io.EOF, at(10, "data: 1\n\n"), at(20, "data: 2\n")), []string{KindCut}, EndCut},
		{"reset", recorded("HTTP/2.0", 5, 4000, syscall.ECONNRESET, at(10, "data: 1\n\n")), []string{KindCut}, EndReset},
		{"quiet, no heartbeat", recorded("HTTP/1.1", 5, 90000, nil, at(10, "data: 1\n\n"), at(60000, "data: 2\n\n")), []string{KindNoHeartbeat}, EndHeld},
		{"quiet and cut", recorded("HTTP/1.1", 5, 25010, io.ErrUnexpectedEOF, at(10, "data: 1\n\n")), []string{KindCut, KindNoHeartbeat}, EndCut},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := Analyze(tc.rec, testOptions)
			if got := kinds(rep); !slices.Equal(got, tc.want) {
				t.Errorf("problems = %v, want %v; report %+v", got, tc.want, rep)
			}
			if rep.End != tc.end {
				t.Errorf("end = %q, want %q", rep.End, tc.end)
			}
		})
	}
}

// TestCheckCutSilence: a cut is reported with the silence before it,
// counted from before the lump a buffering hop let go with the cut.
func TestCheckCutSilence(t *testing.T) {
	rep := Analyze(recorded("HTTP/1.1", 100, 3600, io.ErrUnexpectedEOF, at(3599, "data: 1\n\ndata: 2\n\ndata: 3\n\n")), testOptions)
	if rep.SilenceBeforeEndMS != 3500 {
		t.Errorf("silence before end = %dms, want 3500ms (from the header to the cut)", rep.SilenceBeforeEndMS)
	}
	if p := rep.Problems[1]; p.Kind != KindCut || !strings.Contains(p.Detail, "3.5s with nothing arriving") || !strings.Contains(p.Fix, "heartbeat 1s") {
		t.Errorf("cut problem = %+v, want the 3.5s silence and heartbeat 1s", p)
	}
	rep = Analyze(recorded("HTTP/1.1", 3600, 3601, io.ErrUnexpectedEOF), testOptions)
	if rep.SilenceBeforeEndMS != 3601 || !strings.Contains(rep.Problems[0].Detail, "header arrived only with the cut, 3.6s after the request") {
		t.Errorf("header only with the cut: silence %dms, problems %+v; want 3601ms and the held header", rep.SilenceBeforeEndMS, rep.Problems)
	}
	rep = Analyze(recorded("HTTP/1.1", 5, 5000, io.ErrUnexpectedEOF, spaced(10, 100, 50)...), testOptions)
	if p := rep.Problems[0]; !strings.Contains(p.Detail, "while bytes were flowing") {
		t.Errorf("cut of a flowing stream = %+v, want it told from an idle timeout", p)
	}
}

// TestCheckHeartbeatFacts: the frame and the interval of the heartbeats,
// which are idle-based: the silence before each.
func TestCheckHeartbeatFacts(t *testing.T) {
	rep := Analyze(recorded("HTTP/1.1", 5, 90000, nil,
		at(10, "data: 1\n\n"), at(15010, ": heartbeat\n"), at(29000, ": heartbeat\n"), at(44500, ": heartbeat\n")), testOptions)
	hb := rep.Heartbeat
	if rep.Heartbeats != 3 || hb == nil || hb.Frame != "comment" || hb.Text != "heartbeat" || hb.IntervalMS == nil || *hb.IntervalMS != 15000 {
		t.Fatalf("heartbeats %d, %+v; want 3 comment heartbeats at a 15000ms interval", rep.Heartbeats, hb)
	}
	rep = Analyze(recorded("HTTP/1.1", 5, 90000, nil, at(10, "data: 1\n\n"), at(1010, "\n\n"), at(2010, "\n\n")), testOptions)
	if rep.Heartbeats != 2 || rep.Heartbeat.Frame != "blank" || *rep.Heartbeat.IntervalMS != 1000 {
		t.Errorf("heartbeats %d, %+v; want 2 blank heartbeats at a 1000ms interval", rep.Heartbeats, rep.Heartbeat)
	}
	if i := slices.IndexFunc(rep.Problems, func(p Problem) bool { return p.Kind == KindNoHeartbeat }); i < 0 {
		t.Errorf("88s of silence after the last heartbeat: no no_heartbeat problem in %v", kinds(rep))
	}
}

// TestCheckHeader: status, type, compression and hop-by-hop fields, each
// by the response header.
func TestCheckHeader(t *testing.T) {
	gz := func(events ...string) []Read { // one read per event, each gzip-flushed as encode does
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		var rs []Read
		for k, ev := range events {
			zw.Write([]byte(ev))
			zw.Flush()
			rs = append(rs, Read{At: time.Duration(10+300*k) * time.Millisecond, Data: bytes.Clone(buf.Bytes())})
			buf.Reset()
		}
		return rs
	}
	compressed := recorded("HTTP/1.1", 5, 1500, nil, gz("data: 1\n\n", "data: 2\n\n", ": hb\n\n", "data: 3\n\n")...)
	compressed.Header.Set("Content-Encoding", "gzip")
	h2 := recorded("HTTP/2.0", 5, 1000, io.EOF, at(10, "data: 1\n\n"))
	h2.Header.Set("Keep-Alive", "timeout=5")
	h2.Header.Set("Upgrade", "h2c")
	h1 := recorded("HTTP/1.1", 5, 1000, io.EOF, at(10, "data: 1\n\n"))
	h1.Header.Set("Keep-Alive", "timeout=5")
	h1.Header.Set("Upgrade", "h2c")
	for _, tc := range []struct {
		name string
		rec  *Recording
		want []string
		note string
	}{
		{"gzip", compressed, []string{KindCompressed}, ""},
		{"hop-by-hop over HTTP/2", h2, []string{KindHopByHop}, ""},
		{"hop-by-hop over HTTP/1.1", h1, nil, "Upgrade over HTTP/1.1"},
		{"504", &Recording{Proto: "HTTP/1.1", Status: 504, Header: http.Header{"Content-Type": {"text/html"}}}, []string{KindStatus}, ""},
		{"json", &Recording{Proto: "HTTP/1.1", Status: 200, Header: http.Header{"Content-Type": {"application/json"}}}, []string{KindNotEventStream}, ""},
		{"rejected", &Recording{Proto: "HTTP/3.0", Rejected: errors.New(`invalid header field name: "keep-alive"`)}, []string{KindHopByHop}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := Analyze(tc.rec, testOptions)
			if got := kinds(rep); !slices.Equal(got, tc.want) {
				t.Errorf("problems = %v, want %v", got, tc.want)
			}
			if tc.note != "" && !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, tc.note) }) {
				t.Errorf("notes = %q, want one with %q", rep.Notes, tc.note)
			}
		})
	}
	rep := Analyze(compressed, testOptions)
	if rep.Events != 3 || rep.Heartbeats != 1 || *rep.FirstEventMS != 10 {
		t.Errorf("gzip stream: %d events, %d heartbeats, first at %dms; want 3, 1, 10ms (decoded read by read)", rep.Events, rep.Heartbeats, *rep.FirstEventMS)
	}
	if len(rep.Held) != 0 {
		t.Errorf("gzip stream flushed per event: held lumps %+v, want none", rep.Held)
	}
}
