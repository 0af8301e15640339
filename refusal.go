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

package caddysse

import "net/http"

// A refusal (refuse_status, or the EventSource retry answer) is sse's own
// response: it must carry none of the header fields the handlers inside sse
// set for the response it replaces (the upstream's Set-Cookie, Server,
// caching fields…), and keep the ones set before sse ran (Caddy's Server
// and Alt-Svc, the header directive). So sse notes the header as it was
// when the request reached it, for requests that may be refused after the
// handlers inside it ran, and puts it back before answering.

// mayRefuseLate reports whether a request may get a refusal or a retry
// answer after the handlers inside sse have written to its header: a limit
// decided when the response turns out to be a stream, or an upstream
// failure translated for an EventSource.
func (h *Handler) mayRefuseLate(eventSrc bool) bool {
	return h.zone != nil || (eventSrc && !h.PassUpstreamErrors)
}

// noteHeader keeps a copy of the response header as sse received it.
func (sw *streamWriter) noteHeader() {
	sw.ownHeader = sw.Header().Clone()
	if sw.ownHeader == nil {
		sw.ownHeader = http.Header{}
	}
}

// resetHeader puts the response header back as sse received it, dropping
// every field the handlers inside sse added or changed. Without a note of
// it, it drops what describes the replaced body and the hop-by-hop fields.
func (sw *streamWriter) resetHeader() {
	hdr := sw.Header()
	if sw.ownHeader == nil {
		clearRepresentation(hdr)
		return
	}
	for k := range hdr {
		if _, ok := sw.ownHeader[k]; !ok {
			delete(hdr, k)
		}
	}
	for k, v := range sw.ownHeader {
		hdr[k] = append([]string(nil), v...)
	}
}
