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

// The verdict: from the facts of a report to its problems, each with what
// to change and where: in Caddy, sse and its subdirectives; on the hops,
// the settings the README's "Behind nginx, HAProxy, …" section names.

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// verdict returns the problems the report's facts show, and adds notes
// to it.
func verdict(rec *Recording, o Options, rep *Report) []Problem {
	var ps []Problem
	if rec.Rejected != nil {
		return append(ps, hopByHopProblem(rep, "the client rejected the response: "+rec.Rejected.Error()))
	}
	if rep.Status != http.StatusOK {
		return append(ps, statusProblem(rep))
	}
	if !rec.BodyRead {
		return append(ps, Problem{Kind: KindNotEventStream,
			Detail: fmt.Sprintf("Content-Type is %q, not text/event-stream: an EventSource fails the connection and does not reconnect", rep.ContentType),
			Fix:    "the upstream must answer with Content-Type: text/event-stream; sse acts only on responses of that type (or those its types subdirective names)"})
	}
	if len(rep.HopByHop) > 0 {
		if rep.Proto == "HTTP/2.0" || rep.Proto == "HTTP/3.0" {
			ps = append(ps, hopByHopProblem(rep, fmt.Sprintf("%s over %s, which forbids connection-specific fields: curl (nghttp2) fails the stream with PROTOCOL_ERROR and HTTP/3 clients reject the response",
				strings.Join(rep.HopByHop, ", "), rep.Proto)))
		} else if bad := unusualOnHTTP1(rep.HopByHop); len(bad) > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s over HTTP/1.1: harmless here, fatal if a hop passes the response on over HTTP/2 or HTTP/3", strings.Join(bad, ", ")))
		}
	}
	if enc := rep.Fields["Content-Encoding"]; enc != "" && !strings.EqualFold(enc, "identity") {
		ps = append(ps, compressedProblem(rep, enc))
	}
	if len(rep.Held) > 0 {
		ps = append(ps, bufferedProblem(rep))
	}
	if rep.End == EndCut || rep.End == EndReset {
		ps = append(ps, cutProblem(rep))
	}
	if p, ok := heartbeatProblem(rep, o); ok {
		ps = append(ps, p)
	}
	rep.Notes = append(rep.Notes, streamNotes(rep, o)...)
	return ps
}

func statusProblem(rep *Report) Problem {
	p := Problem{Kind: KindStatus,
		Detail: fmt.Sprintf("status %d %s (Content-Type %q), not 200: an EventSource fails the connection and does not reconnect",
			rep.Status, http.StatusText(rep.Status), rep.ContentType)}
	switch rep.Status {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		p.Fix = "the upstream failed, or was too slow for a hop (Server and Via say which hop answered): if it is slow to send its header, sse's open_after, shorter than the hop's timeout, opens the stream in time; sse's upstream_errors retry (its default) turns an upstream's 502, 503 or 504 into a retry: for EventSource clients, so they reconnect"
	default:
		p.Fix = "the route must answer 200 to this request: check the URL, the method and the authentication fields (--header)"
	}
	return p
}

func hopByHopProblem(rep *Report, detail string) Problem {
	return Problem{Kind: KindHopByHop, Detail: detail,
		Fix: "in Caddy, sse strips hop-by-hop fields from streams; with sse in place, a deferred header operation (defer, or a > field) or a handler ordered outside encode adds them back after it: remove it. Server and Via say which hop answered"}
}

func compressedProblem(rep *Report, enc string) Problem {
	p := Problem{Kind: KindCompressed,
		Detail: fmt.Sprintf("Content-Encoding: %s: the stream is compressed (%d bytes received): a compressor per stream costs memory, nothing can be inserted into compressed bytes (no heartbeats), and a hop's compressor may hold events back", enc, rep.Bytes)}
	if hasNoTransform(rep) {
		p.Fix = "the response says Cache-Control: no-transform, yet it was compressed: nginx gzip and Apache mod_deflate ignore no-transform, so leave text/event-stream out of nginx's gzip_types and of Apache's AddOutputFilterByType DEFLATE; if the upstream compresses its own stream, add request_header Accept-Encoding identity on the streaming route in Caddy"
	} else {
		p.Fix = "in Caddy, encode compresses event streams: put sse on the route (its default order is right after encode); it adds Cache-Control: no-transform, which stops encode, and asks the upstream for Accept-Encoding: identity on EventSource requests; for other clients add request_header Accept-Encoding identity"
	}
	return p
}

func bufferedProblem(rep *Report) Problem {
	l := rep.Held[0]
	detail := fmt.Sprintf("%s arrived at once at %s, after %s in which nothing arrived: a hop held the stream and let it go in lumps",
		itemsText(l.Events, l.Beats), msText(l.AtMS), msText(l.SilenceMS))
	if l.Events+l.Beats == 0 {
		detail = fmt.Sprintf("the response header arrived only with the cut, %s after the request, and nothing with it: a hop held the response, then dropped what it held",
			msText(l.AtMS))
	}
	if len(rep.Held) > 1 {
		detail += fmt.Sprintf(" (%d lumps)", len(rep.Held))
	}
	hops := "nginx honours X-Accel-Buffering: no unless proxy_ignore_headers lists it (or set proxy_buffering off for the location); lighttpd needs server.stream-response-body = 2 (it ignores X-Accel-Buffering); a CDN may need streaming turned on for the path"
	p := Problem{Kind: KindBuffered, Detail: detail}
	if hasNoTransform(rep) || rep.Fields["Incremental"] == "?1" {
		p.Fix = "the response carries sse's fields (Incremental: ?1, Cache-Control: no-transform), so a hop after Caddy buffers anyway: " + hops
	} else {
		p.Fix = "in Caddy, put sse on the route: it sends X-Accel-Buffering: no (nginx then stops buffering that response) and Incremental: ?1, and flushes every event; on the hop: " + hops
	}
	return p
}

func cutProblem(rep *Report) Problem {
	what := "cut"
	if rep.End == EndReset {
		what = "reset"
	}
	silence := time.Duration(rep.SilenceBeforeEndMS) * time.Millisecond
	if silence < time.Second {
		return Problem{Kind: KindCut,
			Detail: fmt.Sprintf("the stream was %s %s after the request while bytes were flowing (%s): not an idle timeout, a limit on the response's age or the network", what, msText(rep.DurationMS), rep.EndError),
			Fix:    "look for a hop that caps the time of a response (Varnish send_timeout, a write_timeout in Caddy's server timeouts); with sse, max_duration ends streams cleanly, with a retry: hint, before such a limit"}
	}
	p := Problem{Kind: KindCut,
		Detail: fmt.Sprintf("the stream was %s after %s with nothing arriving: an idle timeout on the path", what, msText(rep.SilenceBeforeEndMS))}
	hops := "the hops' idle timeouts are nginx proxy_read_timeout, HAProxy timeout server and timeout client, Apache ProxyTimeout, Varnish between_bytes_timeout, Squid read_timeout, lighttpd read-timeout, the QUIC idle timeout for HTTP/3"
	if rep.Heartbeat != nil && rep.Heartbeat.IntervalMS != nil && *rep.Heartbeat.IntervalMS >= rep.SilenceBeforeEndMS {
		p.Fix = fmt.Sprintf("heartbeats come about every %s, later than this hop's timeout: shorten sse's heartbeat to %s or less; %s",
			msText(*rep.Heartbeat.IntervalMS), suggestHeartbeat(silence), hops)
	} else {
		p.Fix = fmt.Sprintf("in Caddy, sse heartbeats a quiet stream (heartbeat, 15s by default): keep it shorter than the shortest idle timeout on the path, here sse { heartbeat %s }; %s",
			suggestHeartbeat(silence), hops)
	}
	return p
}

// heartbeatProblem reports a silence longer than o.Idle.
func heartbeatProblem(rep *Report, o Options) (Problem, bool) {
	silence := time.Duration(rep.LongestSilenceMS) * time.Millisecond
	if silence < o.Idle {
		return Problem{}, false
	}
	p := Problem{Kind: KindNoHeartbeat,
		Fix: fmt.Sprintf("in Caddy, put sse on the route: it heartbeats when nothing went to the client for its heartbeat interval (15s by default, between events only); keep it below every idle timeout on the path (sse { heartbeat %s } for a %s one)",
			suggestHeartbeat(o.Idle), o.Idle)}
	switch {
	case heldBeats(rep):
		p.Detail = fmt.Sprintf("nothing arrived for %s: heartbeats came only in lumps a hop held back, which keep nothing alive", msText(rep.LongestSilenceMS))
		p.Fix = "fix the buffering first (see buffered)"
	case rep.Heartbeats > 0:
		p.Detail = fmt.Sprintf("nothing arrived for %s, though heartbeats were seen: the heartbeat is longer than %s", msText(rep.LongestSilenceMS), o.Idle)
		p.Fix = fmt.Sprintf("shorten sse's heartbeat to %s or less", suggestHeartbeat(o.Idle))
	default:
		p.Detail = fmt.Sprintf("nothing arrived for %s and no heartbeat was seen: an idle timeout on the path (60 s for nginx and AWS ALB, 30 s for QUIC) cuts such a stream", msText(rep.LongestSilenceMS))
	}
	return p, true
}

// streamNotes returns facts about a readable stream that are not problems.
func streamNotes(rep *Report, o Options) []string {
	var notes []string
	if rep.Heartbeats == 0 && rep.End != EndNone && time.Duration(rep.LongestSilenceMS)*time.Millisecond < o.Idle {
		notes = append(notes, fmt.Sprintf("no heartbeat seen; the stream was never quiet for %s, so none was needed", o.Idle))
	}
	if !hasNoTransform(rep) && rep.Fields["Incremental"] != "?1" {
		notes = append(notes, "the response has neither Incremental: ?1 nor Cache-Control: no-transform: no sse in front of it, or a hop removed them; a buffering or compressing hop would act on it")
	}
	if rep.End == EndServer && rep.SilenceBeforeEndMS >= 1000 {
		notes = append(notes, fmt.Sprintf("the stream ended cleanly %s after its last byte: if the server did not end it, a hop's timeout did", msText(rep.SilenceBeforeEndMS)))
	}
	return notes
}

func heldBeats(rep *Report) bool {
	for _, l := range rep.Held {
		if l.Beats > 0 {
			return true
		}
	}
	return false
}

func hasNoTransform(rep *Report) bool {
	cc, ok := rep.Fields["Cache-Control"]
	return ok && httpguts.HeaderValuesContainsToken([]string{cc}, "no-transform")
}

// unusualOnHTTP1 returns the hop-by-hop fields that are not the usual
// ones of HTTP/1.1 (Connection, Keep-Alive, Transfer-Encoding).
func unusualOnHTTP1(fields []string) []string {
	var out []string
	for _, f := range fields {
		if f != "Connection" && f != "Keep-Alive" && f != "Transfer-Encoding" {
			out = append(out, f)
		}
	}
	return out
}

// suggestHeartbeat returns a heartbeat for an idle timeout d: a third of
// it, in whole seconds, at least 1s.
func suggestHeartbeat(d time.Duration) string {
	return max(d/3, time.Second).Truncate(time.Second).String()
}

// itemsText writes "3 events and 1 heartbeat".
func itemsText(events, beats int) string {
	s := fmt.Sprintf("%d events", events)
	if events == 1 {
		s = "1 event"
	}
	switch beats {
	case 0:
		return s
	case 1:
		return s + " and 1 heartbeat"
	}
	return fmt.Sprintf("%s and %d heartbeats", s, beats)
}

// msText writes a millisecond count for people: "850ms", "3.2s".
func msText(v int64) string {
	if v < 1000 {
		return fmt.Sprintf("%dms", v)
	}
	return fmt.Sprintf("%.1fs", float64(v)/1000)
}
