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

// An event stream's response header: what makes a response a stream, and
// the repair that gets a stream through the hops in front intact: no
// buffering, no transformation, no length, no hop-by-hop fields.

import (
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// MediaType returns the type/subtype of a Content-Type value, without
// parameters or surrounding whitespace, and without allocating. The caller
// compares it case-insensitively (RFC 9110, 8.3.1).
func MediaType(v string) string {
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

// IsEventStream reports whether a Content-Type value names text/event-stream.
func IsEventStream(v string) bool {
	return EqualFoldASCII(MediaType(v), "text/event-stream")
}

// EqualFoldASCII is strings.EqualFold for ASCII only: media types are
// ASCII tokens (RFC 9110, 8.3.1), and Unicode folding would take
// "text/event-ſtream" for text/event-stream.
func EqualFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// RepairHeader prepares a stream's header for the trip to the client: it
// tells a compressor in front (such as Caddy's encode) and the next hop
// not to transform or buffer the body, drops Content-Length (a stream has
// no length) and strips hop-by-hop fields.
func RepairHeader(hdr http.Header) {
	MergeCacheControl(hdr)
	// nginx reads this and turns proxy_buffering off for this response
	// (ngx_http_proxy_module, "X-Accel-Buffering"); it does not forward it
	hdr["X-Accel-Buffering"] = []string{"no"}
	// the standard form of the same request to every intermediary: forward
	// the response as it arrives (RFC 10036). Caddy v2.11.9 honours it too
	// (caddyhttp.IsIncremental: reverse_proxy skips response_buffers for it)
	hdr["Incremental"] = []string{"?1"}
	delete(hdr, "Content-Length")
	StripHopByHop(hdr)
}

// MergeCacheControl adds no-cache and no-transform to Cache-Control, keeping
// the directives already there. no-transform also stops Caddy's encode,
// which checks for it before compressing (encode.go, init), and CDNs.
func MergeCacheControl(hdr http.Header) {
	cc := hdr["Cache-Control"]
	hasNoCache := httpguts.HeaderValuesContainsToken(cc, "no-cache")
	hasNoTransform := httpguts.HeaderValuesContainsToken(cc, "no-transform")
	if hasNoCache && hasNoTransform {
		return
	}
	var b strings.Builder
	for _, v := range cc {
		if v = strings.TrimSpace(v); v != "" {
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(v)
		}
	}
	for _, d := range [...]struct {
		name string
		has  bool
	}{{"no-cache", hasNoCache}, {"no-transform", hasNoTransform}} {
		if !d.has {
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(d.name)
		}
	}
	hdr["Cache-Control"] = []string{b.String()}
}

// hopByHop are the connection-specific fields of RFC 9110, 7.6.1, plus the
// ones that real peers treat the same way. Go's HTTP/2 server drops only
// Connection and Transfer-Encoding; the rest reach the wire, where nghttp2
// (curl) fails the stream with PROTOCOL_ERROR (RFC 9113, 8.2.2); quic-go's
// HTTP/3 server drops none, and its client rejects the response (RFC 9114,
// 4.2).
var hopByHop = []string{
	"Connection",
	"Keep-Alive",       // RFC 2068, 19.7.1; named in RFC 9110, 7.6.1
	"Proxy-Connection", // non-standard, sent by old clients
	"Upgrade",          // RFC 9110, 7.8; only meaningful with 101, which we never touch
	"Transfer-Encoding",
}

// keepAlways are never stripped, even when Connection names them: Alt-Svc is
// Caddy's own HTTP/3 advertisement, Trailer announces trailers.
func keepAlways(name string) bool {
	return strings.EqualFold(name, "Alt-Svc") || strings.EqualFold(name, "Trailer")
}

// StripHopByHop deletes the fields named in Connection, then the fixed
// hop-by-hop fields, and TE unless it is "trailers" (RFC 9113, 8.2.2).
func StripHopByHop(hdr http.Header) {
	for _, v := range hdr["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" && !keepAlways(name) {
				hdr.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		delete(hdr, name)
	}
	if te := hdr["Te"]; len(te) > 0 && !(len(te) == 1 && strings.EqualFold(strings.TrimSpace(te[0]), "trailers")) {
		delete(hdr, "Te")
	}
}

// ClearRepresentation removes what the refused response's producer set
// about its body, so the error response that replaces it does not carry it.
func ClearRepresentation(hdr http.Header) {
	for _, name := range [...]string{
		"Content-Type", "Content-Length", "Content-Encoding", "Content-Language",
		"Cache-Control", "Etag", "Last-Modified", "X-Accel-Buffering", "Incremental",
	} {
		delete(hdr, name)
	}
	StripHopByHop(hdr)
}
