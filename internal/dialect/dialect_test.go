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

package dialect

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestAsksStream(t *testing.T) {
	long := strings.Repeat(`{"role":"user","content":"a \"quoted\" \\ {[ text"},`, 50)
	for _, tc := range []struct {
		body string
		asks bool
	}{
		{`{"model":"m","stream":true}`, true},
		{`{"stream":true,"model":"m"}`, true},
		{` { "stream" : true } `, true},
		{`{"messages":[` + long + `{"x":1}],"stream":true}`, true},
		{`{"meta":{"stream":true},"stream":false}`, false},
		{`{"meta":{"stream":true}}`, false},
		{`{"stream":false}`, false},
		{`{"stream":"true"}`, false},
		{`{"stream":1}`, false},
		{`{"\u0073tream":true}`, true},
		{`{"streams":true}`, false},
		{`{"a":"\"stream\":true","b":null}`, false},
		{`{"n":-1.5e3,"t":true,"f":false,"z":null,"stream":true}`, true},
		{`[{"stream":true}]`, false},
		{`"stream"`, false},
		{`{}`, false},
		{`{"stream":truex}`, false},
	} {
		asks, decided := AsksStream([]byte(tc.body))
		if !decided || asks != tc.asks {
			t.Errorf("AsksStream(%s) = %v, %v; want %v, decided", tc.body, asks, decided, tc.asks)
		}
		// every shorter prefix is either undecided or decided the same way
		for n := range len(tc.body) {
			a, d := AsksStream([]byte(tc.body[:n]))
			if d && a != tc.asks {
				t.Errorf("AsksStream(%q) = %v, decided; the whole body says %v", tc.body[:n], a, tc.asks)
			}
		}
	}
}

// firstStream is the oracle: encoding/json's reading of the first
// top-level "stream" member of a valid JSON text.
func firstStream(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if d, ok := tok.(json.Delim); err != nil || !ok || d != '{' {
		return false
	}
	for dec.More() {
		k, _ := dec.Token()
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return false
		}
		if k == "stream" {
			return string(v) == "true"
		}
	}
	return false
}

func FuzzAsksStream(f *testing.F) {
	for _, s := range []string{`{"model":"m","stream":true}`, `{"a":[1,{"b":"}"}],"stream":true}`, `{"stream":false}`, `{"x":"\\"}`, `[]`, `{"a":{"stream":true}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		asks, decided := AsksStream(b)
		if !json.Valid(b) {
			return
		}
		want := firstStream(b)
		if !decided || asks != want {
			t.Fatalf("AsksStream(%q) = %v, %v; encoding/json reads %v", b, asks, decided, want)
		}
		for n := range len(b) {
			if a, d := AsksStream(b[:n]); d && a != want {
				t.Fatalf("AsksStream(%q) = %v, decided; the whole text reads %v", b[:n], a, want)
			}
		}
	})
}

func TestAsk(t *testing.T) {
	js := http.Header{"Content-Type": {"application/json"}}
	ant := http.Header{"Content-Type": {"application/json"}, "Anthropic-Version": {"2023-06-01"}}
	for _, tc := range []struct {
		method, path, query string
		hdr                 http.Header
		d                   Dialect
		body, ok            bool
	}{
		{"POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", "alt=sse", nil, Gemini, false, true},
		{"POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", "", nil, Gemini, false, false},
		{"POST", "/v1beta/models/gemini-2.5-flash:generateContent", "", js, OpenAI, true, false},
		{"POST", "/v1/chat/completions", "", js, OpenAI, true, false},
		{"POST", "/v1/messages", "", http.Header{"Content-Type": {"application/json; charset=utf-8"}}, Anthropic, true, false},
		{"POST", "/anything", "", ant, Anthropic, true, false},
		{"POST", "/form", "", http.Header{"Content-Type": {"text/plain"}}, EventSource, false, false},
		{"GET", "/v1/chat/completions", "", js, EventSource, false, false},
	} {
		d, body, ok := Ask(tc.method, tc.path, tc.query, tc.hdr)
		if d != tc.d || body != tc.body || ok != tc.ok {
			t.Errorf("Ask(%s %s?%s) = %v, %v, %v; want %v, %v, %v", tc.method, tc.path, tc.query, d, body, ok, tc.d, tc.body, tc.ok)
		}
	}
}

func TestErrorEvent(t *testing.T) {
	openaiBody := []byte(`{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
	anthropicBody := []byte(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)
	geminiBody := []byte(`{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}`)
	for _, tc := range []struct {
		d      Dialect
		status int
		ct     string
		body   []byte
		want   string
	}{
		{OpenAI, 429, "application/json", openaiBody,
			`data: {"error":{"code":"rate_limit_exceeded","message":"Rate limit reached","param":null,"type":"requests"}}` + "\n\n"},
		{OpenAI, 502, "", nil,
			`data: {"error":{"code":"502","message":"upstream answered 502 Bad Gateway","param":null,"type":"server_error"}}` + "\n\n"},
		{OpenAI, 200, "application/json", []byte(`{"id":"x"}`),
			`data: {"error":{"code":"502","message":"upstream answered 200 OK with application/json, not an event stream","param":null,"type":"server_error"}}` + "\n\n"},
		{Anthropic, 529, "application/json", anthropicBody,
			"event: error\n" + `data: {"error":{"message":"Overloaded","type":"overloaded_error"},"type":"error"}` + "\n\n"},
		{Anthropic, 503, "text/html", []byte("<h1>down</h1>"),
			"event: error\n" + `data: {"error":{"message":"upstream answered 503 Service Unavailable","type":"api_error"},"type":"error"}` + "\n\n"},
		{Gemini, 503, "application/json; charset=UTF-8", geminiBody,
			`data: {"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}` + "\n\n"},
		{Gemini, 429, "text/plain", []byte("slow down\n"),
			`data: {"error":{"code":429,"message":"upstream answered 429 Too Many Requests","status":"RESOURCE_EXHAUSTED"}}` + "\n\n"},
		{OpenAI, 400, "application/json", []byte(`{"error":"bad\nrequest <b>"}`),
			`data: {"error":{"code":"400","message":"bad\nrequest <b>","param":null,"type":"invalid_request_error"}}` + "\n\n"},
	} {
		got := string(ErrorEvent(tc.d, tc.status, tc.ct, tc.body))
		if got != tc.want {
			t.Errorf("ErrorEvent(%v, %d, %q)\n got %q\nwant %q", tc.d, tc.status, tc.body, got, tc.want)
		}
	}
	if ev := ErrorEvent(EventSource, 503, "", nil); ev != nil {
		t.Errorf("an EventSource got an error event: %q", ev)
	}
}

// What deciding costs a request that may ask for a stream: a Chat
// Completions body with "stream" first (as the SDKs write it for a short
// prompt), and one of 64 KiB whose "stream" comes last.
func BenchmarkAsksStream(b *testing.B) {
	short := []byte(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Tell me something, slowly."}]}`)
	var long bytes.Buffer
	long.WriteString(`{"model":"gpt-4o-mini","messages":[`)
	for long.Len() < MaxPrefix-200 {
		long.WriteString(`{"role":"user","content":"a line of a long conversation, with \"quotes\" and {braces}"},`)
	}
	long.WriteString(`{"role":"user","content":"end"}],"stream":true}`)
	for _, bc := range []struct {
		name string
		body []byte
	}{{"short", short}, {"64KiB", long.Bytes()}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.body)))
			b.ReportAllocs()
			for b.Loop() {
				if asks, decided := AsksStream(bc.body); !asks || !decided {
					b.Fatal("not taken for a stream")
				}
			}
		})
	}
}
