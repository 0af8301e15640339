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

// Package dialect knows how the streaming LLM APIs ask for a stream and
// how each says "error" inside one: whether a request asks for an event
// stream (OpenAI's and Anthropic's "stream": true at the top of a JSON
// body, Gemini's :streamGenerateContent with alt=sse), and the error event
// each API's SDKs raise as an API error once a stream is open. It knows
// nothing of Caddy.
package dialect

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// Dialect is how a stream's client expects to be told of an error once
// the stream is open.
type Dialect uint8

// The dialects.
const (
	// EventSource: an EventSource-style client, or any client that asked
	// for text/event-stream without an API's body. It has no error event:
	// it is told to reconnect later, with a retry field, and the stream
	// ends.
	EventSource Dialect = iota
	// OpenAI: OpenAI's Chat Completions and Responses APIs and the
	// OpenAI-compatible servers: data: {"error":{...}}.
	OpenAI
	// Anthropic: Anthropic's Messages API: event: error.
	Anthropic
	// Gemini: Google's Gemini API, alt=sse: data: {"error":{"code":...}}.
	Gemini
)

// String names d, for logs.
func (d Dialect) String() string {
	switch d {
	case OpenAI:
		return "openai"
	case Anthropic:
		return "anthropic"
	case Gemini:
		return "gemini"
	}
	return "eventsource"
}

// Ask tells what a request with this method, URL path, query and header
// may be, before its body is read: a Gemini streaming request (decided:
// Gemini, true), a JSON POST whose body decides (d is the dialect it would
// speak, body is true), or neither (body false, ok false).
func Ask(method, path, rawQuery string, hdr http.Header) (d Dialect, body, ok bool) {
	if method != http.MethodPost {
		return EventSource, false, false
	}
	if strings.HasSuffix(path, ":streamGenerateContent") {
		// alt=sse is what makes Gemini answer text/event-stream; without
		// it the stream is a JSON array
		return Gemini, false, hasAltSSE(rawQuery)
	}
	if !isJSON(hdr.Get("Content-Type")) {
		return EventSource, false, false
	}
	if hdr.Get("Anthropic-Version") != "" || strings.HasSuffix(path, "/v1/messages") {
		return Anthropic, true, false
	}
	return OpenAI, true, false
}

// hasAltSSE reports whether a raw query has alt=sse.
func hasAltSSE(rawQuery string) bool {
	for kv := range strings.SplitSeq(rawQuery, "&") {
		if kv == "alt=sse" {
			return true
		}
	}
	return false
}

// isJSON reports whether a Content-Type is application/json or a +json type.
func isJSON(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.ToLower(strings.TrimSpace(ct))
	return ct == "application/json" || (strings.HasPrefix(ct, "application/") && strings.HasSuffix(ct, "+json"))
}

// ErrorEvent returns the event that tells a client of dialect d that the
// upstream answered status, with this Content-Type and the start of its
// body, instead of a stream. The API's own error (its message and type)
// is kept when the body is one; otherwise the message names the status.
// EventSource has no error event: ErrorEvent returns nil for it.
func ErrorEvent(d Dialect, status int, contentType string, body []byte) []byte {
	up := parseUpstreamError(contentType, body)
	msg := up.message
	if msg == "" {
		msg = "upstream answered " + strconv.Itoa(status)
		if t := http.StatusText(status); t != "" {
			msg += " " + t
		}
		if status < 300 {
			msg += " with " + up.mediaType + ", not an event stream"
		}
	}
	if status < 400 {
		// a success that is not a stream is the gateway's failure to
		// deliver one: the SDKs raise only 4xx and 5xx (Gemini's checks)
		status = http.StatusBadGateway
	}
	var b bytes.Buffer
	switch d {
	case OpenAI:
		code := up.code
		if code == nil {
			code = strconv.Itoa(status)
		}
		typ := up.typ
		if typ == "" {
			typ = openAIType(status)
		}
		b.WriteString("data: ")
		writeJSON(&b, map[string]any{"error": map[string]any{
			"message": msg, "type": typ, "param": nil, "code": code,
		}})
	case Anthropic:
		typ := up.typ
		if typ == "" {
			typ = anthropicType(status)
		}
		b.WriteString("event: error\ndata: ")
		writeJSON(&b, map[string]any{"type": "error", "error": map[string]any{
			"type": typ, "message": msg,
		}})
	case Gemini:
		st := up.status
		if st == "" {
			st = grpcStatus(status)
		}
		b.WriteString("data: ")
		writeJSON(&b, map[string]any{"error": map[string]any{
			"code": status, "message": msg, "status": st,
		}})
	default:
		return nil
	}
	b.WriteString("\n\n")
	return b.Bytes()
}

// writeJSON writes v as JSON on one line: encoding/json escapes every
// control character in strings, so the line cannot end early.
func writeJSON(b *bytes.Buffer, v any) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	b.Truncate(b.Len() - 1) // Encode's newline
}

// upstreamError is what an upstream's error body says, in whichever API's
// shape: {"error":{"message","type","code","status"}} (OpenAI, Gemini) or
// {"type":"error","error":{"type","message"}} (Anthropic).
type upstreamError struct {
	message, typ, status string
	code                 any    // OpenAI's code, as the upstream wrote it
	mediaType            string // the body's media type, "none" without one
}

// parseUpstreamError reads what it can of an upstream's error body.
func parseUpstreamError(contentType string, body []byte) upstreamError {
	up := upstreamError{mediaType: "no Content-Type"}
	if mt, _, _ := strings.Cut(contentType, ";"); strings.TrimSpace(mt) != "" {
		up.mediaType = strings.TrimSpace(mt)
	}
	var env struct {
		Error json.RawMessage `json:"error"`
	}
	if !isJSON(contentType) || json.Unmarshal(body, &env) != nil || len(env.Error) == 0 {
		return up
	}
	var e struct {
		Message any    `json:"message"`
		Type    any    `json:"type"`
		Code    any    `json:"code"`
		Status  string `json:"status"`
	}
	if json.Unmarshal(env.Error, &e) != nil {
		var s string // {"error": "text"}, as some servers write it
		if json.Unmarshal(env.Error, &s) == nil {
			up.message = s
		}
		return up
	}
	up.message, _ = e.Message.(string)
	up.typ, _ = e.Type.(string)
	up.status = e.Status
	if _, isNum := e.Code.(float64); !isNum {
		up.code = e.Code // OpenAI's codes are strings; Gemini's number is the status
	}
	return up
}

// openAIType is the type of an OpenAI error with this status.
func openAIType(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return "rate_limit_error"
	case status == http.StatusUnauthorized:
		return "authentication_error"
	case status >= 400 && status < 500:
		return "invalid_request_error"
	}
	return "server_error"
}

// anthropicType is the type of an Anthropic error with this status
// (docs.anthropic.com, "Errors").
func anthropicType(status int) string {
	if t, ok := anthropicTypes[status]; ok {
		return t
	}
	if status >= 400 && status < 500 {
		return "invalid_request_error"
	}
	return "api_error"
}

var anthropicTypes = map[int]string{
	http.StatusBadRequest:            "invalid_request_error",
	http.StatusUnauthorized:          "authentication_error",
	http.StatusForbidden:             "permission_error",
	http.StatusNotFound:              "not_found_error",
	http.StatusRequestEntityTooLarge: "request_too_large",
	http.StatusTooManyRequests:       "rate_limit_error",
	529:                              "overloaded_error",
}

// grpcStatus is the status name Google's APIs give an HTTP status
// (google.rpc.Code, as mapped in google/rpc/code.proto).
func grpcStatus(status int) string {
	if s, ok := grpcStatuses[status]; ok {
		return s
	}
	if status >= 500 {
		return "INTERNAL"
	}
	return "UNKNOWN"
}

var grpcStatuses = map[int]string{
	http.StatusBadRequest:         "INVALID_ARGUMENT",
	http.StatusUnauthorized:       "UNAUTHENTICATED",
	http.StatusForbidden:          "PERMISSION_DENIED",
	http.StatusNotFound:           "NOT_FOUND",
	http.StatusConflict:           "ABORTED",
	http.StatusTooManyRequests:    "RESOURCE_EXHAUSTED",
	499:                           "CANCELLED",
	http.StatusNotImplemented:     "UNIMPLEMENTED",
	http.StatusBadGateway:         "UNAVAILABLE",
	http.StatusServiceUnavailable: "UNAVAILABLE",
	http.StatusGatewayTimeout:     "DEADLINE_EXCEEDED",
}

// MaxPrefix is the most of a request body AsksStream is handed: a
// "stream" member further in is not seen, and the request is not taken
// for one that asks for a stream.
const MaxPrefix = 64 << 10

// AsksStream reads the start of a JSON request body, p, for a top-level
// "stream" member. decided is false while p ends before the answer (hand
// it more of the body); once decided, asks tells whether the member is
// there and true. Anything but a JSON object, and a malformed one, is
// decided: it does not ask. The first "stream" member decides (encoding/json
// and Python's json take the last of duplicates; no SDK writes two).
func AsksStream(p []byte) (asks, decided bool) {
	s := scanner{p: p}
	s.space()
	if !s.more() {
		return false, false
	}
	if s.p[s.i] != '{' {
		return false, true
	}
	s.i++
	for {
		s.space()
		if !s.more() {
			return false, false
		}
		switch s.p[s.i] {
		case '}':
			return false, true
		case ',':
			s.i++
			continue
		case '"':
		default:
			return false, true
		}
		key, escaped, ok, done := s.str()
		if !done {
			return false, false
		}
		if !ok {
			return false, true
		}
		s.space()
		if !s.more() {
			return false, false
		}
		if s.p[s.i] != ':' {
			return false, true
		}
		s.i++
		s.space()
		if !s.more() {
			return false, false
		}
		if isStreamKey(key, escaped) {
			switch v := s.p[s.i:]; {
			case len(v) >= 4 && string(v[:4]) == "true":
				if len(v) == 4 {
					return false, false // "truex" would be malformed
				}
				return isDelim(v[4]), true
			case len(v) < 4 && string("true"[:len(v)]) == string(v):
				return false, false
			}
			return false, true
		}
		ok, done = s.value()
		if !done {
			return false, false
		}
		if !ok {
			return false, true
		}
	}
}

// isDelim reports whether c may follow a JSON literal inside an object.
func isDelim(c byte) bool {
	return c == ',' || c == '}' || c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// scanner walks a prefix of a JSON text. Its methods report done false
// when the prefix ends before what they read does, and ok false for
// malformed JSON.
type scanner struct {
	p []byte
	i int
}

func (s *scanner) more() bool { return s.i < len(s.p) }

func (s *scanner) space() {
	for s.i < len(s.p) {
		switch s.p[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// str reads a string at s.i (its opening quote) and returns it as it is
// written, quotes included, and whether it has escapes.
func (s *scanner) str() (raw []byte, escaped, ok, done bool) {
	start := s.i
	for j := s.i + 1; j < len(s.p); j++ {
		switch c := s.p[j]; {
		case c == '\\':
			escaped = true
			j++ // the escaped byte; \u's digits are plain bytes
		case c == '"':
			s.i = j + 1
			return s.p[start:s.i], escaped, true, true
		case c < 0x20:
			return nil, false, false, true
		}
	}
	return nil, false, false, false
}

// isStreamKey reports whether the string raw (quotes included) is "stream".
func isStreamKey(raw []byte, escaped bool) bool {
	if !escaped {
		return string(raw) == `"stream"`
	}
	var v string
	return json.Unmarshal(raw, &v) == nil && v == "stream"
}

// value skips one value at s.i.
func (s *scanner) value() (ok, done bool) {
	switch c := s.p[s.i]; {
	case c == '"':
		_, _, ok, done = s.str()
		return ok, done
	case c == '{' || c == '[':
		return s.nested()
	}
	// a number or a literal: it runs to the next delimiter
	for j := s.i; j < len(s.p); j++ {
		if c := s.p[j]; isDelim(c) || c == ']' {
			if j == s.i {
				return false, true
			}
			s.i = j
			return true, true
		}
	}
	return false, false
}

// nested skips an object or array at s.i, strings and nesting included.
// Inside it, it checks only that brackets pair up: the upstream parses
// the body; this only has to find where the value ends.
func (s *scanner) nested() (ok, done bool) {
	var backing [64]byte
	stack := backing[:0]
	for s.i < len(s.p) {
		switch c := s.p[s.i]; c {
		case '"':
			if _, _, ok, done = s.str(); !done || !ok {
				return ok, done
			}
			continue
		case '{', '[':
			stack = append(stack, c)
		case '}', ']':
			if len(stack) == 0 || stack[len(stack)-1] != c-2 { // '{'+2 == '}', '['+2 == ']'
				return false, true
			}
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				s.i++
				return true, true
			}
		}
		s.i++
	}
	return false, false
}
