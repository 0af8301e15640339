package stream

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// A Content-Type names an event stream when its media type, without
// parameters and surrounding whitespace, is text/event-stream in any case
// (RFC 9110, 8.3.1); a longer type or trailing garbage does not.
func TestIsEventStream(t *testing.T) {
	for _, tc := range []struct {
		name, ct string
		want     bool
	}{
		{"plain", "text/event-stream", true},
		{"charset parameter", "text/event-stream; charset=utf-8", true},
		{"parameter without space", "text/event-stream;charset=utf-8", true},
		{"space before semicolon", "text/event-stream ; charset=utf-8", true},
		{"title case", "Text/Event-Stream", true},
		{"upper case with parameter", "TEXT/EVENT-STREAM;CHARSET=UTF-8", true},
		{"surrounding spaces", "  text/event-stream  ", true},
		{"surrounding tabs", "\ttext/event-stream\t", true},
		{"longer subtype", "text/event-streamfoo", false},
		{"trailing garbage", "text/event-stream nonsense", false},
		{"suffix subtype", "text/event-stream-v2", false},
		{"prefix only", "text/event", false},
		{"other text type", "text/plain", false},
		{"json", "application/json", false},
		{"nested", "application/text/event-stream", false},
		{"leading semicolon", ";text/event-stream", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsEventStream(tc.ct); got != tc.want {
				t.Errorf("IsEventStream(%q) = %v, want %v", tc.ct, got, tc.want)
			}
		})
	}
}

// mediaType keeps the type/subtype of a Content-Type as written (the caller
// compares case-insensitively) and drops parameters and whitespace.
func TestMediaType(t *testing.T) {
	for _, tc := range []struct {
		name, ct, want string
	}{
		{"bare", "text/event-stream", "text/event-stream"},
		{"parameter", "application/x-ndjson; charset=utf-8", "application/x-ndjson"},
		{"case kept", "Text/Event-Stream;charset=utf-8", "Text/Event-Stream"},
		{"whitespace", " \ttext/plain \t; q=1", "text/plain"},
		{"only parameters", "; charset=utf-8", ""},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MediaType(tc.ct); got != tc.want {
				t.Errorf("MediaType(%q) = %q, want %q", tc.ct, got, tc.want)
			}
		})
	}
}

// Cache-Control gains no-cache and no-transform, once each, in one field
// value, and every directive already there is kept in order.
func TestMergeCacheControl(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string // nil: no Cache-Control
		want []string
	}{
		{"absent", nil, []string{"no-cache, no-transform"}},
		{"empty value", []string{""}, []string{"no-cache, no-transform"}},
		{"other directive", []string{"max-age=0"}, []string{"max-age=0, no-cache, no-transform"}},
		{"spaces trimmed", []string{"  public  "}, []string{"public, no-cache, no-transform"}},
		{"has no-cache", []string{"private, no-cache"}, []string{"private, no-cache, no-transform"}},
		{"has no-transform", []string{"no-transform"}, []string{"no-transform, no-cache"}},
		{"has both", []string{"no-cache, no-transform"}, []string{"no-cache, no-transform"}},
		{"has both, odd case", []string{"No-Cache,NO-TRANSFORM"}, []string{"No-Cache,NO-TRANSFORM"}},
		{"has both in two values", []string{"no-transform", "no-cache"}, []string{"no-transform", "no-cache"}},
		{"multiple values joined", []string{"private", "max-age=0"}, []string{"private, max-age=0, no-cache, no-transform"}},
		{"no-cache in second value", []string{"private", "no-cache"}, []string{"private, no-cache, no-transform"}},
		{"qualified no-cache is not plain no-cache", []string{`no-cache="Set-Cookie"`}, []string{`no-cache="Set-Cookie", no-cache, no-transform`}},
		{"no-store kept", []string{"no-store"}, []string{"no-store, no-cache, no-transform"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{"X-Other": {"kept"}}
			if tc.in != nil {
				hdr["Cache-Control"] = append([]string(nil), tc.in...)
			}
			MergeCacheControl(hdr)
			if got := hdr["Cache-Control"]; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("MergeCacheControl(%q) = %q, want %q", tc.in, got, tc.want)
			}
			for _, d := range []string{"no-cache", "no-transform"} {
				if n := countDirective(hdr["Cache-Control"], d); n != 1 {
					t.Errorf("MergeCacheControl(%q): %s appears %d times, want once", tc.in, d, n)
				}
			}
			if hdr.Get("X-Other") != "kept" {
				t.Errorf("mergeCacheControl touched another field: %v", hdr)
			}
		})
	}
}

// countDirective counts the comma-separated elements of values equal to tok,
// ignoring case.
func countDirective(values []string, tok string) int {
	n := 0
	for _, v := range values {
		for _, e := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(e), tok) {
				n++
			}
		}
	}
	return n
}

// A stream's hop-by-hop fields are removed (RFC 9110, 7.6.1; RFC 9113,
// 8.2.2; RFC 9114, 4.2): those named in Connection, then Connection,
// Keep-Alive, Proxy-Connection, Upgrade, Transfer-Encoding, and TE unless
// it is "trailers". Alt-Svc and Trailer stay even if Connection names them,
// and end-to-end fields are untouched.
func TestStripHopByHop(t *testing.T) {
	endToEnd := http.Header{
		"Content-Type":      {"text/event-stream"},
		"Cache-Control":     {"no-cache"},
		"Alt-Svc":           {`h3=":443"; ma=2592000`},
		"Trailer":           {"X-Checksum"},
		"X-Accel-Buffering": {"no"},
		"Server":            {"Caddy"},
	}
	for _, tc := range []struct {
		name   string
		in     http.Header
		gone   []string
		stayed []string // besides the end-to-end fields
	}{
		{
			name: "connection-named fields",
			in:   http.Header{"Connection": {"X-Foo, x-bar"}, "X-Foo": {"1"}, "X-Bar": {"2"}, "X-Baz": {"3"}},
			gone: []string{"Connection", "X-Foo", "X-Bar"}, stayed: []string{"X-Baz"},
		},
		{
			name: "connection in several values",
			in:   http.Header{"Connection": {"X-Foo", " X-Bar ,,"}, "X-Foo": {"1"}, "X-Bar": {"2"}},
			gone: []string{"Connection", "X-Foo", "X-Bar"},
		},
		{
			name: "connection close",
			in:   http.Header{"Connection": {"close"}},
			gone: []string{"Connection"},
		},
		{
			name: "connection names keep-alive",
			in:   http.Header{"Connection": {"keep-alive"}, "Keep-Alive": {"timeout=5"}},
			gone: []string{"Connection", "Keep-Alive"},
		},
		{name: "keep-alive", in: http.Header{"Keep-Alive": {"timeout=5, max=100"}}, gone: []string{"Keep-Alive"}},
		{name: "proxy-connection", in: http.Header{"Proxy-Connection": {"keep-alive"}}, gone: []string{"Proxy-Connection"}},
		{name: "upgrade", in: http.Header{"Upgrade": {"h2c"}}, gone: []string{"Upgrade"}},
		{name: "transfer-encoding", in: http.Header{"Transfer-Encoding": {"chunked"}}, gone: []string{"Transfer-Encoding"}},
		{name: "te trailers kept", in: http.Header{"Te": {"trailers"}}, stayed: []string{"Te"}},
		{name: "te trailers odd case and spaces kept", in: http.Header{"Te": {" Trailers "}}, stayed: []string{"Te"}},
		{name: "te gzip", in: http.Header{"Te": {"gzip"}}, gone: []string{"Te"}},
		{name: "te trailers and more", in: http.Header{"Te": {"trailers, deflate"}}, gone: []string{"Te"}},
		{
			name: "alt-svc and trailer named in connection",
			in:   http.Header{"Connection": {"Alt-Svc, Trailer, X-Foo"}, "X-Foo": {"1"}},
			gone: []string{"Connection", "X-Foo"},
		},
		{
			name: "everything at once",
			in: http.Header{
				"Connection": {"X-Hop"}, "X-Hop": {"1"}, "Keep-Alive": {"timeout=5"},
				"Proxy-Connection": {"keep-alive"}, "Upgrade": {"websocket"},
				"Transfer-Encoding": {"chunked"}, "Te": {"deflate"},
			},
			gone: []string{"Connection", "X-Hop", "Keep-Alive", "Proxy-Connection", "Upgrade", "Transfer-Encoding", "Te"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := endToEnd.Clone()
			for k, v := range tc.in {
				hdr[k] = v
			}
			StripHopByHop(hdr)
			for _, name := range tc.gone {
				if v, ok := hdr[name]; ok {
					t.Errorf("stripHopByHop kept %s: %q", name, v)
				}
			}
			for _, name := range tc.stayed {
				if !reflect.DeepEqual(hdr[name], tc.in[name]) {
					t.Errorf("stripHopByHop changed %s: %q, want %q", name, hdr[name], tc.in[name])
				}
			}
			for name, v := range endToEnd {
				if !reflect.DeepEqual(hdr[name], v) {
					t.Errorf("stripHopByHop changed end-to-end field %s: %q, want %q", name, hdr[name], v)
				}
			}
		})
	}
}
