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
	"compress/zlib"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCheckDecode: a deflate stream flushed per event decodes read by
// read, each event keeping the time of the read that carried it, also
// when the stream was cut short; a coding the check cannot decode is a
// compressed stream whose events were not counted, said in a note.
func TestCheckDecode(t *testing.T) {
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	var rs []Read
	for k, ev := range []string{"data: 1\n\n", "data: 2\n\n", "data: 3\n\n"} {
		zw.Write([]byte(ev))
		zw.Flush()
		rs = append(rs, Read{At: time.Duration(k+1) * time.Second, Data: bytes.Clone(buf.Bytes())})
		buf.Reset()
	}
	got, err := decode("deflate", rs) // no end of the zlib stream: cut short
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	var times []time.Duration
	for _, it := range Parse(got).Items {
		times = append(times, got[it.Read].At)
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}; !slices.Equal(times, want) {
		t.Errorf("decoded events at %v, want %v", times, want)
	}

	rec := recorded("HTTP/1.1", 5, 1000, nil, at(10, "\x1b\x00\x00\x00"))
	rec.Header.Set("Content-Encoding", "br")
	rep := Analyze(rec, testOptions)
	if !slices.Equal(kinds(rep), []string{KindCompressed}) || !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, `cannot decode Content-Encoding "br"`) }) {
		t.Errorf("br stream: problems %v, notes %q; want compressed and a note that events were not counted", kinds(rep), rep.Notes)
	}
}
