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
	"compress/gzip"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

// events writes n events, gap apart, flushing each; it reports whether
// the request is still alive.
func events(w http.ResponseWriter, r *http.Request, n int, gap time.Duration) bool {
	for k := range n {
		if k > 0 {
			select {
			case <-time.After(gap): // the upstream's pace
			case <-r.Context().Done():
				return false
			}
		}
		io.WriteString(w, "data: event\n\n")
		http.NewResponseController(w).Flush()
	}
	return true
}

func streamHeader(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w).Flush()
}

func run(t *testing.T, o Options) *Report {
	t.Helper()
	if o.For == 0 {
		o.For = 5 * time.Second
	}
	rep, err := Run(t.Context(), o)
	if err != nil {
		t.Fatalf("Run(%s): %v", o.URL, err)
	}
	return rep
}

// TestCheckProbeHealthy: against a plain upstream that paces its events
// and ends its stream, the check finds nothing wrong and says the server
// ended the stream; it asks as an EventSource does.
func TestCheckProbeHealthy(t *testing.T) {
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		streamHeader(w)
		events(w, r, 3, 100*time.Millisecond)
	}))
	defer srv.Close()
	rep := run(t, Options{URL: srv.URL})
	if len(rep.Problems) != 0 || rep.End != EndServer || rep.Events != 3 || rep.Proto != "HTTP/1.1" {
		t.Errorf("report: problems %v, end %q, %d events over %s; want none, server, 3, HTTP/1.1", rep.Problems, rep.End, rep.Events, rep.Proto)
	}
	if rep.FirstByteMS == nil || rep.FirstEventMS == nil || *rep.FirstEventMS < rep.HeaderMS {
		t.Errorf("times: header %dms, first byte %v, first event %v", rep.HeaderMS, rep.FirstByteMS, rep.FirstEventMS)
	}
	if got.Get("Accept") != "text/event-stream" || got.Get("Accept-Encoding") != "gzip, deflate, br, zstd" {
		t.Errorf("request header %v, want an EventSource's Accept and Chromium's Accept-Encoding", got)
	}
}

// TestCheckProbeRequest: --method, --header and --data reach the server.
func TestCheckProbeRequest(t *testing.T) {
	var method, auth, ctype, body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		method, auth, ctype, body = r.Method, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(b)
		streamHeader(w)
		events(w, r, 1, 0)
	}))
	defer srv.Close()
	run(t, Options{URL: srv.URL, Method: "POST", Header: http.Header{"Authorization": {"Bearer x"}}, Body: []byte(`{"stream":true}`)})
	if method != "POST" || auth != "Bearer x" || ctype != "application/json" || body != `{"stream":true}` {
		t.Errorf("server got %s, Authorization %q, Content-Type %q, body %q", method, auth, ctype, body)
	}
}

// TestCheckProbeHTTP2HopByHop: over HTTP/2, hop-by-hop fields in the
// response are a problem (Go's HTTP/2 client passes them on; curl and
// HTTP/3 clients do not); the same response over HTTP/1.1 is not.
func TestCheckProbeHTTP2HopByHop(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Upgrade", "h2c")
		streamHeader(w)
		events(w, r, 2, 50*time.Millisecond)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	rep := run(t, Options{URL: srv.URL, Insecure: true, HTTP: "2"})
	if rep.Proto != "HTTP/2.0" || !slices.Equal(kinds(rep), []string{KindHopByHop}) || !slices.Equal(rep.HopByHop, []string{"Keep-Alive", "Upgrade"}) {
		t.Errorf("over %s: problems %v, hop-by-hop %v; want hop_by_hop for Keep-Alive, Upgrade over HTTP/2.0", rep.Proto, kinds(rep), rep.HopByHop)
	}
	rep = run(t, Options{URL: srv.URL, Insecure: true, HTTP: "1.1"})
	if rep.Proto != "HTTP/1.1" || len(rep.Problems) != 0 {
		t.Errorf("over %s: problems %v, want none over HTTP/1.1", rep.Proto, kinds(rep))
	}
	if _, err := Run(t.Context(), Options{URL: srv.URL, HTTP: "2", For: 5 * time.Second}); err == nil {
		t.Errorf("self-signed certificate without Insecure: no error, want one (exit 2)")
	}
}

// TestCheckProbeGzip: a compressed stream is a problem, and its events are
// still counted, each when it arrived.
func TestCheckProbeGzip(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		streamHeader(w)
		zw := gzip.NewWriter(w)
		for range 3 {
			io.WriteString(zw, "data: event\n\n")
			zw.Flush()
			http.NewResponseController(w).Flush()
			time.Sleep(100 * time.Millisecond) // the upstream's pace
		}
		zw.Close()
	}))
	defer srv.Close()
	rep := run(t, Options{URL: srv.URL})
	if !slices.Equal(kinds(rep), []string{KindCompressed}) || rep.Events != 3 || rep.End != EndServer {
		t.Errorf("problems %v, %d events, end %q; want compressed, 3, server", kinds(rep), rep.Events, rep.End)
	}
}

// TestCheckProbeEnds: a stream still open when the check stops is held
// (healthy); one the server aborts after a quiet second is cut, with the
// silence before the cut.
func TestCheckProbeEnds(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		streamHeader(w)
		if !events(w, r, 2, 50*time.Millisecond) || r.URL.Path != "/abort" {
			<-r.Context().Done()
			return
		}
		io.WriteString(w, "data: half")
		http.NewResponseController(w).Flush()
		select {
		case <-time.After(1200 * time.Millisecond): // quiet, then the "hop" cuts
		case <-r.Context().Done():
		}
		panic(http.ErrAbortHandler)
	}))
	defer srv.Close()
	rep := run(t, Options{URL: srv.URL + "/hold", For: 600 * time.Millisecond})
	if rep.End != EndHeld || len(rep.Problems) != 0 || rep.Events != 2 {
		t.Errorf("held stream: end %q, problems %v, %d events; want held, none, 2", rep.End, kinds(rep), rep.Events)
	}
	rep = run(t, Options{URL: srv.URL + "/abort"})
	if rep.End != EndCut || !slices.Equal(kinds(rep), []string{KindCut}) || rep.SilenceBeforeEndMS < 1100 {
		t.Errorf("aborted stream: end %q, problems %v, silence %dms; want cut after about 1200ms", rep.End, kinds(rep), rep.SilenceBeforeEndMS)
	}
}

// TestCheckProbeStatus: a status other than 200, or another type, is a
// problem, and the body is not held.
func TestCheckProbeStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/json" {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, "{}")
			return
		}
		http.Error(w, "gateway timeout", http.StatusGatewayTimeout)
	}))
	defer srv.Close()
	rep := run(t, Options{URL: srv.URL})
	if !slices.Equal(kinds(rep), []string{KindStatus}) || rep.Status != 504 || !strings.Contains(rep.Problems[0].Fix, "open_after") {
		t.Errorf("504: problems %+v", rep.Problems)
	}
	rep = run(t, Options{URL: srv.URL + "/json"})
	if !slices.Equal(kinds(rep), []string{KindNotEventStream}) || rep.End != EndNone {
		t.Errorf("JSON: problems %v, end %q; want not_event_stream, none", kinds(rep), rep.End)
	}
}

// TestCheckProbeErrors: a URL that cannot be checked is an error (the
// command's exit status 2), not a report.
func TestCheckProbeErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silent := "http://" + l.Addr().String() // accepts, never answers
	defer l.Close()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := "http://" + closed.Addr().String()
	closed.Close()
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"invalid URL", Options{URL: "localhost:8080/events"}, "invalid URL"},
		{"refused", Options{URL: refused}, "refused"},
		{"no header", Options{URL: silent, For: 300 * time.Millisecond}, "no response header within 300ms"},
		{"HTTP/3 over http", Options{URL: "http://localhost/", HTTP: "3"}, "HTTP/3 needs an https URL"},
		{"bad version", Options{URL: "http://localhost/", HTTP: "1.0"}, "unknown HTTP version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Run(t.Context(), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run(%s) = %v, %v; want an error with %q", tc.o.URL, rep, err, tc.want)
			}
		})
	}
}
