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

package e2e

// A fake LLM upstream for the npm client tests (clients_test.go): it
// answers each vendor's streaming endpoint in that vendor's wire format,
// byte for byte (field order, spacing, separators, terminal events), with a
// "thinking" gap before the first event or in the middle of the answer, and
// records every request it gets and when it was quiet.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// vendorTokens is the answer every fake vendor streams, one piece per
// event; the application must see exactly these, in this order.
var vendorTokens = []string{"The", " quiet", " stream", " stayed", " open", " —", " ünïcödé", " intact", "."}

// vendorText is the whole answer.
var vendorText = strings.Join(vendorTokens, "")

// tokensBeforeMidGap is how many tokens a stream carries before a
// mid-stream gap.
const tokensBeforeMidGap = 2

// Wire formats.
const (
	formatChat      = "openai-chat"      // OpenAI Chat Completions
	formatResponses = "openai-responses" // OpenAI Responses
	formatAnthropic = "anthropic"        // Anthropic Messages
	formatGemini    = "gemini"           // Gemini streamGenerateContent?alt=sse
)

// wireEvent is one event exactly as the vendor writes it, and the index
// in vendorTokens of the token it carries (-1: none).
type wireEvent struct {
	bytes string
	token int
}

// vendorStream is a whole streamed answer in one wire format.
type vendorStream struct {
	contentType string
	events      []wireEvent
	midGap      int // index of the event a mid-stream gap comes before
}

// tokensBefore returns how many tokens the events before index i carry.
func (s vendorStream) tokensBefore(i int) int {
	n := 0
	for _, ev := range s.events[:i] {
		if ev.token >= 0 {
			n++
		}
	}
	return n
}

// jsonStr renders s as a JSON string literal, UTF-8 kept as is.
func jsonStr(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// streamFor returns the answer in the given wire format.
func streamFor(format string) vendorStream {
	switch format {
	case formatChat:
		return chatStream()
	case formatResponses:
		return responsesStream()
	case formatAnthropic:
		return anthropicStream()
	case formatGemini:
		return geminiStream()
	}
	panic("unknown wire format " + format)
}

// chatStream is a Chat Completions stream: "data: {chunk}\n\n" per chunk,
// a role chunk first, a chunk with finish_reason last, then "data: [DONE]".
func chatStream() vendorStream {
	const head = `{"id":"chatcmpl-CSSEe2eQuietStream0001","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_560af6e559","choices":[{"index":0,"delta":`
	chunk := func(delta, finish, obf string) string {
		return "data: " + head + delta + `,"logprobs":null,"finish_reason":` + finish + `}],"obfuscation":"` + obf + `"}` + "\n\n"
	}
	s := vendorStream{contentType: "text/event-stream; charset=utf-8"}
	s.events = append(s.events, wireEvent{chunk(`{"role":"assistant","content":"","refusal":null}`, "null", "kV1n"), -1})
	for i, tok := range vendorTokens {
		s.events = append(s.events, wireEvent{chunk(`{"content":`+jsonStr(tok)+`}`, "null", "x"+strings.Repeat("q", i%4)), i})
	}
	s.events = append(s.events,
		wireEvent{chunk(`{}`, `"stop"`, "Zq"), -1},
		wireEvent{"data: [DONE]\n\n", -1},
	)
	s.midGap = 1 + tokensBeforeMidGap
	return s
}

// responsesStream is a Responses API stream: "event: <type>\ndata: {...}\n\n"
// per event, from response.created to response.completed, no [DONE].
func responsesStream() vendorStream {
	const (
		respID = "resp_68c1e2e0a0b88190b1c4d5e6f7a8b9c0"
		msgID  = "msg_68c1e2e0f3e48190a7b6c5d4e3f2a1b0"
	)
	response := func(status, output, usage string) string {
		return `{"id":"` + respID + `","object":"response","created_at":1767225600,"status":"` + status +
			`","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,` +
			`"max_tool_calls":null,"model":"gpt-4.1-mini-2025-04-14","output":` + output +
			`,"parallel_tool_calls":true,"previous_response_id":null,"prompt_cache_key":null,"reasoning":{"effort":null,"summary":null},` +
			`"safety_identifier":null,"service_tier":"auto","store":true,"temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},` +
			`"tool_choice":"auto","tools":[],"top_logprobs":0,"top_p":1.0,"truncation":"disabled","usage":` + usage + `,"user":null,"metadata":{}}`
	}
	seq := 0
	ev := func(typ, fields string, token int) wireEvent {
		e := wireEvent{"event: " + typ + "\ndata: {\"type\":\"" + typ + "\",\"sequence_number\":" + fmt.Sprint(seq) + fields + "}\n\n", token}
		seq++
		return e
	}
	ids := `,"item_id":"` + msgID + `","output_index":0,"content_index":0`
	part := func(text string) string {
		return `{"type":"output_text","annotations":[],"logprobs":[],"text":` + jsonStr(text) + `}`
	}
	item := `{"id":"` + msgID + `","type":"message","status":"completed","content":[` + part(vendorText) + `],"role":"assistant"}`
	s := vendorStream{contentType: "text/event-stream; charset=utf-8"}
	s.events = append(s.events,
		ev("response.created", `,"response":`+response("in_progress", "[]", "null"), -1),
		ev("response.in_progress", `,"response":`+response("in_progress", "[]", "null"), -1),
		ev("response.output_item.added", `,"output_index":0,"item":{"id":"`+msgID+`","type":"message","status":"in_progress","content":[],"role":"assistant"}`, -1),
		ev("response.content_part.added", ids+`,"part":`+part(""), -1),
	)
	for i, tok := range vendorTokens {
		s.events = append(s.events, ev("response.output_text.delta", ids+`,"delta":`+jsonStr(tok)+`,"logprobs":[],"obfuscation":"p`+strings.Repeat("Q", i%5)+`"`, i))
	}
	s.events = append(s.events,
		ev("response.output_text.done", ids+`,"text":`+jsonStr(vendorText)+`,"logprobs":[]`, -1),
		ev("response.content_part.done", ids+`,"part":`+part(vendorText), -1),
		ev("response.output_item.done", `,"output_index":0,"item":`+item, -1),
		ev("response.completed", `,"response":`+response("completed", "["+item+"]",
			`{"input_tokens":14,"input_tokens_details":{"cached_tokens":0},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":23}`), -1),
	)
	s.midGap = 4 + tokensBeforeMidGap
	return s
}

// anthropicStream is a Messages stream: "event: <type>\ndata: {...}\n\n"
// per event, message_start, content_block_start, a ping, the text deltas,
// content_block_stop, message_delta, message_stop.
func anthropicStream() vendorStream {
	ev := func(typ, data string, token int) wireEvent {
		return wireEvent{"event: " + typ + "\ndata: " + data + "\n\n", token}
	}
	s := vendorStream{contentType: "text/event-stream; charset=utf-8"}
	s.events = append(s.events,
		ev("message_start", `{"type":"message_start","message":{"model":"claude-haiku-4-5-20251001","id":"msg_01SSEe2eQuietStreamAbCd","type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":14,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}}}`, -1),
		ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`, -1),
		ev("ping", `{"type": "ping"}`, -1),
	)
	for i, tok := range vendorTokens {
		s.events = append(s.events, ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":`+jsonStr(tok)+`}}`, i))
	}
	s.events = append(s.events,
		ev("content_block_stop", `{"type":"content_block_stop","index":0}`, -1),
		ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":14,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":9}}`, -1),
		ev("message_stop", `{"type":"message_stop"}`, -1),
	)
	s.midGap = 3 + tokensBeforeMidGap
	return s
}

// geminiStream is a streamGenerateContent?alt=sse stream: "data: {...}"
// per chunk, each ended by CRLF CRLF, Google's JSON spacing, the last chunk
// with finishReason and the full usage.
func geminiStream() vendorStream {
	s := vendorStream{contentType: "text/event-stream"}
	for i, tok := range vendorTokens {
		finish, usage := "", `"usageMetadata": {"promptTokenCount": 7,"totalTokenCount": 7,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 7}]}`
		if i == len(vendorTokens)-1 {
			finish = `,"finishReason": "STOP"`
			usage = `"usageMetadata": {"promptTokenCount": 7,"candidatesTokenCount": 9,"totalTokenCount": 16,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 7}]}`
		}
		data := `{"candidates": [{"content": {"parts": [{"text": ` + jsonStr(tok) + `}],"role": "model"}` + finish + `,"index": 0}],` +
			usage + `,"modelVersion": "gemini-2.5-flash","responseId": "sSe2eQuietStreamGmN1"}`
		s.events = append(s.events, wireEvent{"data: " + data + "\r\n\r\n", i})
	}
	s.midGap = tokensBeforeMidGap
	return s
}

// vendorError is the error body each vendor answers with this status:
// the message is "overloaded" in each vendor's words.
func vendorError(format string, status int) string {
	switch format {
	case formatAnthropic:
		return `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`
	case formatGemini:
		return fmt.Sprintf(`{"error":{"code":%d,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}`, status)
	}
	return `{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}`
}

// vendorRequest is what the fake vendor saw of one request and did with it.
type vendorRequest struct {
	method, path, format   string
	accept, acceptEncoding string
	proto                  string // the client's protocol at Caddy (X-Client-Proto)
	gapStart, gapEnd       time.Time
}

// vendorRun is one client run: the gap it gets and the requests it made.
type vendorRun struct {
	gapAt string // "before", "mid", or "header": before the response header
	gap   time.Duration
	fail  int // after the gap, answer this status with the vendor's error body instead

	mu   sync.Mutex
	reqs []*vendorRequest
}

// requests returns a copy of what the run's requests recorded so far.
func (r *vendorRun) requests() []vendorRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]vendorRequest, len(r.reqs))
	for i, q := range r.reqs {
		out[i] = *q
	}
	return out
}

// fakeVendor serves every vendor's endpoints under /r/<run id>/.
type fakeVendor struct {
	addr string

	mu   sync.Mutex
	runs map[string]*vendorRun
	seq  int
}

func startFakeVendor(t *testing.T) *fakeVendor {
	v := &fakeVendor{runs: make(map[string]*vendorRun)}
	v.addr = startUpstream(t, v.serve)
	return v
}

// newRun registers a run and returns its id, the prefix of its paths.
func (v *fakeVendor) newRun(gapAt string, gap time.Duration) (string, *vendorRun) {
	return v.newFailingRun(gapAt, gap, 0)
}

// newFailingRun is newRun for a run whose requests get the status fail,
// with the vendor's error body, after the gap (0: the stream).
func (v *fakeVendor) newFailingRun(gapAt string, gap time.Duration, fail int) (string, *vendorRun) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.seq++
	id := fmt.Sprintf("run%03d", v.seq)
	run := &vendorRun{gapAt: gapAt, gap: gap, fail: fail}
	v.runs[id] = run
	return id, run
}

// formatOf maps a request to the vendor endpoint it is for.
func formatOf(method, path string) string {
	switch {
	case method == http.MethodPost && path == "/v1/chat/completions":
		return formatChat
	case method == http.MethodPost && path == "/v1/responses":
		return formatResponses
	case method == http.MethodPost && path == "/v1/messages",
		method == http.MethodGet && path == "/v1/messages/events":
		return formatAnthropic
	case method == http.MethodPost && strings.HasPrefix(path, "/v1beta/models/") &&
		strings.HasSuffix(path, ":streamGenerateContent"):
		return formatGemini
	}
	return ""
}

func (v *fakeVendor) serve(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/r/")
	id, path, _ := strings.Cut(rest, "/")
	v.mu.Lock()
	run := v.runs[id]
	v.mu.Unlock()
	format := formatOf(r.Method, "/"+path)
	if !ok || run == nil || format == "" || (format == formatGemini && r.URL.Query().Get("alt") != "sse") {
		http.Error(w, "no such endpoint", http.StatusNotFound)
		return
	}
	io.Copy(io.Discard, r.Body) // the prompt
	req := &vendorRequest{
		method: r.Method, path: "/" + path, format: format,
		accept: r.Header.Get("Accept"), acceptEncoding: r.Header.Get("Accept-Encoding"),
		proto: r.Header.Get("X-Client-Proto"),
	}
	run.mu.Lock()
	run.reqs = append(run.reqs, req)
	run.mu.Unlock()

	s := streamFor(format)
	gapAt := 0
	switch run.gapAt {
	case "mid":
		gapAt = s.midGap
	case "header":
		// thinking before the header: a queued or cold-starting model
		gapAt = -1
		start := time.Now()
		alive := quiet(r, run.gap)
		run.mu.Lock()
		req.gapStart, req.gapEnd = start, time.Now()
		run.mu.Unlock()
		if !alive {
			return
		}
	}
	w.Header().Set("X-Vendor-Request-Id", "vendor-"+id)
	if run.fail != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(run.fail)
		io.WriteString(w, vendorError(format, run.fail))
		return
	}
	w.Header().Set("Content-Type", s.contentType)
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w).Flush()
	for i, ev := range s.events {
		if i == gapAt {
			start := time.Now()
			alive := quiet(r, run.gap) // thinking
			run.mu.Lock()
			req.gapStart, req.gapEnd = start, time.Now()
			run.mu.Unlock()
			if !alive {
				return
			}
		}
		if _, err := send(w, ev.bytes); err != nil {
			return
		}
	}
}

// blankBeat returns the blank-frame heartbeat s starts with ("\n\n" or
// "\r\n\r\n"), or "".
func blankBeat(s string) string {
	for _, b := range []string{"\r\n\r\n", "\n\n"} {
		if strings.HasPrefix(s, b) {
			return b
		}
	}
	return ""
}

// frameOf names the frame of a heartbeat splitBody found.
func frameOf(beat string) string {
	switch {
	case blankBeat(beat) == beat:
		return "blank"
	case strings.HasSuffix(beat, "\n\n"):
		return "block"
	}
	return "line"
}

// splitBody takes a body a client read apart into the vendor's events and
// the heartbeat frames between them. beats[i] holds the frames that came
// before event i, beats[len(events)] those after the last event. complete
// reports whether every event was found; rest holds the bytes from the
// first that are neither (none when the body is the events plus
// heartbeats at event boundaries, possibly cut short).
func splitBody(raw string, events []wireEvent) (beats [][]string, complete bool, rest string) {
	beats = make([][]string, len(events)+1)
	pos := 0
	for i := 0; i <= len(events); i++ {
		for pos < len(raw) && (raw[pos] == ':' || raw[pos] == '\n' || raw[pos] == '\r') {
			if blank := blankBeat(raw[pos:]); blank != "" {
				beats[i] = append(beats[i], blank)
				pos += len(blank)
				continue
			}
			if raw[pos] != ':' {
				return beats, false, raw[pos:]
			}
			end := strings.IndexByte(raw[pos:], '\n')
			if end < 0 {
				return beats, false, raw[pos:]
			}
			end += pos + 1
			if end < len(raw) && raw[end] == '\n' {
				end++ // a comment block
			}
			beats[i] = append(beats[i], raw[pos:end])
			pos = end
		}
		if i == len(events) {
			break
		}
		ev := events[i].bytes
		if !strings.HasPrefix(raw[pos:], ev) {
			if strings.HasPrefix(ev, raw[pos:]) {
				return beats, false, "" // cut short
			}
			return beats, false, raw[pos:]
		}
		pos += len(ev)
	}
	return beats, true, raw[pos:]
}
