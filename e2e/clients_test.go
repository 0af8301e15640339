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

// The npm SSE client libraries LLM applications use, run by Node against
// Caddy with encode and sse { heartbeat 1s } in front of a fake vendor
// (vendors_test.go), over HTTP/1.1 and HTTP/2, with the vendor quiet for a
// while before its first event or in the middle of the answer. The scripts
// are in clients/; each prints what the application saw, and the raw bytes
// the library parsed.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"mime"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// npmClient is one script in clients/, named <name>.mjs.
type npmClient struct {
	name   string
	format string // the vendor wire format it reads
	accept string // the Accept header it sends, as seen on the wire
	final  bool   // the library assembles the whole text itself
	toEOF  bool   // it reads the body to its end (others stop at a terminal event)
}

var npmClients = []npmClient{
	{name: "openai-chat", format: formatChat, accept: "application/json", toEOF: true},
	{name: "openai-responses", format: formatResponses, accept: "application/json", final: true, toEOF: true},
	{name: "anthropic-create", format: formatAnthropic, accept: "application/json", toEOF: true},
	{name: "anthropic-stream", format: formatAnthropic, accept: "application/json", final: true, toEOF: true},
	{name: "genai", format: formatGemini, accept: "*/*", toEOF: true},
	{name: "fetch-event-source", format: formatChat, accept: "text/event-stream", toEOF: true},
	{name: "eventsource", format: formatAnthropic, accept: "text/event-stream"},
	{name: "eventsource-parser", format: formatGemini, accept: "*/*", toEOF: true},
}

// clientRecord is the JSON line a script prints (clients/lib/run.mjs).
type clientRecord struct {
	Client   string    `json:"client"`
	Library  string    `json:"library"`
	Version  string    `json:"version"`
	Tokens   []string  `json:"tokens"`
	TokenAt  []float64 `json:"tokenAt"` // ms since the epoch
	Text     string    `json:"text"`
	Final    *string   `json:"final"`
	Done     bool      `json:"done"`
	Comments int       `json:"comments"`
	Requests int       `json:"requests"`
	Errors   []struct {
		Name, Class, Message, Cause string
		Status                      *int
		Code, Type                  any
	} `json:"errors"`
	Responses []struct {
		Method  string            `json:"method"`
		URL     string            `json:"url"`
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
		Raw     string            `json:"raw"`
		Ended   bool              `json:"ended"`
	} `json:"responses"`
	ElapsedMs int `json:"elapsedMs"`
}

func (r *clientRecord) errorText() string {
	var parts []string
	for _, e := range r.Errors {
		s := e.Name + ": " + e.Message
		if e.Cause != "" {
			s += " (" + e.Cause + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// Outcomes a run is expected to have.
const (
	outcomeOK     = "ok"     // every token, in order, one request, no error
	outcomeResend = "resend" // JSON.parse of an empty message throws, the POST is sent again
	outcomeLoss   = "loss"   // the event after the gap is dropped without an error
	outcomeChunk  = "chunk"  // google.golang.org/genai fails on the first heartbeat: "invalid stream chunk"
)

// acceptsEventStream reports whether an Accept header lists
// text/event-stream.
func acceptsEventStream(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && mt == "text/event-stream" {
			return true
		}
	}
	return false
}

// wireFrame is the heartbeat frame a client gets under a configuration:
// the forced frame, or by default (heartbeat_frame auto) a comment line
// for requests that accept text/event-stream and two blank lines for the
// others.
func wireFrame(config string, c npmClient) string {
	if config != "default" {
		return config
	}
	if acceptsEventStream(c.accept) {
		return "line"
	}
	return "blank"
}

// expectedOutcome is what a client makes of heartbeats in a frame:
// @microsoft/fetch-event-source hands the application an empty message for
// every blank line, and @google/genai drops a block that does not start
// with "data:", so a comment line glued to the next event loses it.
func expectedOutcome(c npmClient, frame string) string {
	switch {
	case c.name == "fetch-event-source" && (frame == "block" || frame == "blank"):
		return outcomeResend
	case c.name == "genai" && frame == "line":
		return outcomeLoss
	case c.name == "go-genai" && frame != "blank":
		// it splits the body at blank lines and fails on any piece
		// that does not start with "data:": a comment, in either frame
		return outcomeChunk
	}
	return outcomeOK
}

// clientsHeartbeat is the heartbeat interval of the Caddyfile.
const clientsHeartbeat = time.Second

// clientsSite is the Caddyfile site for one configuration: "default" (no
// heartbeat_frame), "blank", "block" or "line".
func clientsSite(config string) string {
	frame := ""
	if config != "default" {
		frame = "\n\t\theartbeat_frame " + config
	}
	return `
http://127.0.0.1:{{.HTTP}}, https://localhost:{{.HTTPS}} {
	encode gzip zstd
	sse {
		heartbeat 1s` + frame + `
	}
	reverse_proxy {{.Upstream}} {
		header_up X-Client-Proto {http.request.proto}
	}
}`
}

// clientsGap is the vendor's quiet stretch, SSE_CLIENTS_GAP (default 3s).
func clientsGap(t *testing.T) time.Duration {
	gap := 3 * time.Second
	if s := os.Getenv("SSE_CLIENTS_GAP"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SSE_CLIENTS_GAP: %v", err)
		}
		gap = d
	}
	if gap < 2*clientsHeartbeat+clientsHeartbeat/2 {
		t.Fatalf("SSE_CLIENTS_GAP %v: must be at least 2.5 heartbeat intervals (%v)", gap, clientsHeartbeat)
	}
	return gap
}

// clientsParallel is how many client scripts run at once,
// SSE_CLIENTS_PARALLEL (default 12): they spend most of their time in the
// vendor's gap.
func clientsParallel(t *testing.T) int {
	n := 12
	if s := os.Getenv("SSE_CLIENTS_PARALLEL"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("SSE_CLIENTS_PARALLEL: want a positive number, got %q", s)
		}
		n = v
	}
	return n
}

var (
	npmOnce sync.Once
	npmErr  error
)

// npmClientsDir returns the path of clients/ and of node, after installing
// the pinned libraries with npm ci when node_modules is missing or older
// than package-lock.json. Node and npm are required in CI.
func npmClientsDir(t *testing.T) (dir, node string) {
	t.Helper()
	node = requireTool(t, "node")
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	// undici 7 (HTTP/2 for fetch) needs Node 20.18.1
	if v := strings.TrimSpace(string(out)); !nodeAtLeast(v, 20, 18, 1) {
		msg := fmt.Sprintf("node %s is too old: the client libraries need Node >= 20.18.1", v)
		if inCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	npm := requireTool(t, "npm")
	dir, err = filepath.Abs("clients")
	if err != nil {
		t.Fatal(err)
	}
	npmOnce.Do(func() {
		lock, err := os.Stat(filepath.Join(dir, "package-lock.json"))
		if err != nil {
			npmErr = err
			return
		}
		installed, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json"))
		if err == nil && !installed.ModTime().Before(lock.ModTime()) {
			return
		}
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			npmErr = fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
		}
	})
	if npmErr != nil {
		t.Fatal(npmErr)
	}
	return dir, node
}

// nodeAtLeast reports whether a "vX.Y.Z" version is at least
// major.minor.patch.
func nodeAtLeast(v string, major, minor, patch int) bool {
	m := regexp.MustCompile(`^v(\d+)\.(\d+)\.(\d+)`).FindStringSubmatch(v)
	if m == nil {
		return false
	}
	var got [3]int
	for i := range got {
		got[i], _ = strconv.Atoi(m[i+1])
	}
	return slices.Compare(got[:], []int{major, minor, patch}) >= 0
}

// clientRun is one run of a client script: what it printed, or why it
// printed nothing usable, and its stderr.
type clientRun struct {
	rec    *clientRecord
	err    error
	stderr []byte
}

// runNodeClient runs clients/<name>.mjs against base. It is safe to call
// from any goroutine.
func runNodeClient(dir, node, name, base string, h2 bool) clientRun {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{name + ".mjs", "--base", base}
	if h2 {
		args = append(args, "--h2")
	}
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return clientRun{err: fmt.Errorf("node %s: %v\nstdout:\n%s", strings.Join(args, " "), err, stdout.Bytes()), stderr: stderr.Bytes()}
	}
	lines := bytes.Split(bytes.TrimSpace(stdout.Bytes()), []byte("\n"))
	var rec clientRecord
	if err := json.Unmarshal(lines[len(lines)-1], &rec); err != nil {
		return clientRun{err: fmt.Errorf("node %s printed no record: %v\nstdout:\n%s", strings.Join(args, " "), err, stdout.Bytes()), stderr: stderr.Bytes()}
	}
	return clientRun{rec: &rec, stderr: stderr.Bytes()}
}

// clientResults collects one line per run for the summary table.
type clientResults struct {
	mu       sync.Mutex
	versions map[string]string
	cells    map[[3]string]map[string]string // {client, config, frame} -> column -> result
}

func (r *clientResults) add(client, version, config, frame, column, result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cells == nil {
		r.cells = make(map[[3]string]map[string]string)
		r.versions = make(map[string]string)
	}
	r.versions[client] = version
	key := [3]string{client, config, frame}
	if r.cells[key] == nil {
		r.cells[key] = make(map[string]string)
	}
	r.cells[key][column] = result
}

func (r *clientResults) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	columns := []string{"before/h1", "before/h2", "mid/h1", "mid/h2"}
	var keys [][3]string
	for k := range r.cells {
		keys = append(keys, k)
	}
	order := func(name string) int {
		return slices.IndexFunc(npmClients, func(c npmClient) bool { return c.name == name })
	}
	configs := []string{"default", "blank", "block", "line"}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return order(keys[i][0]) < order(keys[j][0])
		}
		return slices.Index(configs, keys[i][1]) < slices.Index(configs, keys[j][1])
	})
	var b strings.Builder
	b.WriteString("\n| client | config | frame on the wire | " + strings.Join(columns, " | ") + " |\n")
	b.WriteString("|---|---|---|" + strings.Repeat("---|", len(columns)) + "\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "| %s %s | %s | %s |", k[0], r.versions[k[0]], k[1], k[2])
		for _, c := range columns {
			fmt.Fprintf(&b, " %s |", r.cells[k][c])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestClients runs every client script under every heartbeat frame
// configuration, with the vendor's gap before the first event and in the
// middle, over HTTP/1.1 (Node's fetch as it comes) and HTTP/2 (undici with
// allowH2, over TLS). It asserts, for each run, what the frame does to the
// library: the default frame and the ones a library copes with deliver
// every token in order, the exact text, no error and one request, with
// heartbeats inside the gap in the very bytes the library parsed; a comment
// block makes @microsoft/fetch-event-source re-send its POST, and a comment
// line makes @google/genai drop the event after the gap. With -v it logs a
// table of the results.
//
// The runs spend most of their time in the vendor's gap, so they all start
// at once (at most SSE_CLIENTS_PARALLEL scripts at a time, whatever go
// test's -parallel), and each is checked in its own subtest afterwards.
func TestClients(t *testing.T) {
	dir, node := npmClientsDir(t)
	gap := clientsGap(t)
	vendor := startFakeVendor(t)
	results := &clientResults{}
	t.Cleanup(func() { t.Log(results) })

	type clientCase struct {
		config, gapAt, proto string
		base                 string
		c                    npmClient
		vr                   *vendorRun
		run                  clientRun
	}
	var cases []*clientCase
	for _, config := range []string{"default", "blank", "block", "line"} {
		var caddy *caddyProc
		for _, c := range npmClients {
			for _, gapAt := range []string{"before", "mid"} {
				for _, proto := range []string{"h1", "h2"} {
					if !testSelected(t.Name() + "/" + config + "/" + c.name + "/" + gapAt + "/" + proto) {
						continue
					}
					if caddy == nil {
						caddy = startCaddy(t, vendor.addr, clientsSite(config))
					}
					id, vr := vendor.newRun(gapAt, gap)
					base := caddy.BaseURL() + "/r/" + id
					if proto == "h2" {
						base = caddy.TLSURL() + "/r/" + id
					}
					cases = append(cases, &clientCase{config: config, gapAt: gapAt, proto: proto, base: base, c: c, vr: vr})
				}
			}
		}
	}
	sem := make(chan struct{}, clientsParallel(t))
	var wg sync.WaitGroup
	for _, cc := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			cc.run = runNodeClient(dir, node, cc.c.name, cc.base, cc.proto == "h2")
		}()
	}
	wg.Wait()

	for _, cc := range cases {
		t.Run(cc.config+"/"+cc.c.name+"/"+cc.gapAt+"/"+cc.proto, func(t *testing.T) {
			if len(cc.run.stderr) > 0 {
				t.Logf("node stderr:\n%s", tail(cc.run.stderr, 4000))
			}
			if cc.run.err != nil {
				t.Fatal(cc.run.err)
			}
			frame := wireFrame(cc.config, cc.c)
			result := checkClientRun(t, cc.c, frame, cc.gapAt, cc.proto, cc.run.rec, cc.vr.requests())
			results.add(cc.c.name, cc.run.rec.Version, cc.config, frame, cc.gapAt+"/"+cc.proto, result)
		})
	}
}

// testSelected reports whether go test's -run and -skip patterns select
// a subtest of this name, so that runs nobody asked for do not start.
func testSelected(name string) bool {
	levels := strings.Split(name, "/")
	matches := func(pattern string) bool {
		for i, elem := range splitTestPattern(pattern) {
			if i >= len(levels) {
				break
			}
			if ok, err := regexp.MatchString(elem, levels[i]); err != nil || !ok {
				return false
			}
		}
		return true
	}
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() != "" && !matches(f.Value.String()) {
		return false
	}
	if f := flag.Lookup("test.skip"); f != nil && f.Value.String() != "" && matches(f.Value.String()) {
		return false
	}
	return true
}

// splitTestPattern splits a -run pattern at the slashes outside brackets
// and parentheses, as go test does.
func splitTestPattern(p string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '[', '(':
			depth++
		case ']', ')':
			depth--
		case '\\':
			i++
		case '/':
			if depth == 0 {
				out = append(out, p[start:i])
				start = i + 1
			}
		}
	}
	return append(out, p[start:])
}

// checkClientRun asserts what one run must show, and returns a short
// description of what it did show.
func checkClientRun(t *testing.T, c npmClient, frame, gapAt, proto string, rec *clientRecord, reqs []vendorRequest) string {
	t.Helper()
	want := expectedOutcome(c, frame)
	stream := streamFor(c.format)
	gapIdx := 0
	if gapAt == "mid" {
		gapIdx = stream.midGap
	}
	before := stream.tokensBefore(gapIdx) // tokens the client had before the gap

	defer func() {
		if t.Failed() {
			t.Logf("record: %+v\nvendor saw: %+v", *rec, reqs)
		}
	}()

	// the requests, as the vendor saw them
	wantProto := map[string]string{"h1": "HTTP/1.1", "h2": "HTTP/2.0"}[proto]
	if len(reqs) == 0 {
		t.Fatalf("the vendor got no request; client errors: %s", rec.errorText())
	}
	if rec.Requests != len(reqs) {
		t.Errorf("the client made %d requests, the vendor got %d", rec.Requests, len(reqs))
	}
	for i, q := range reqs {
		if q.proto != wantProto {
			t.Errorf("request %d reached Caddy over %q, want %s", i, q.proto, wantProto)
		}
		if q.accept != c.accept {
			t.Errorf("request %d: Accept %q, want %q", i, q.accept, c.accept)
		}
		if q.format != c.format {
			t.Errorf("request %d: %s %s is a %s request, want %s", i, q.method, q.path, q.format, c.format)
		}
	}

	// the first response, as the library read it
	if len(rec.Responses) == 0 {
		t.Fatalf("no response recorded; client errors: %s", rec.errorText())
	}
	res := rec.Responses[0]
	if res.Status != 200 {
		t.Fatalf("status %d, want 200", res.Status)
	}
	if ce := res.Headers["content-encoding"]; ce != "" {
		t.Errorf("Content-Encoding %q: the stream was compressed", ce)
	}
	if inc := res.Headers["incremental"]; inc != "?1" {
		t.Errorf("Incremental %q, want ?1", inc)
	}
	if ct := res.Headers["content-type"]; ct != stream.contentType {
		t.Errorf("Content-Type %q, want the vendor's %q", ct, stream.contentType)
	}
	beats, complete, rest := splitBody(res.Raw, stream.events)
	if rest != "" {
		t.Errorf("the body holds bytes that are neither the vendor's events nor heartbeats at event boundaries, from %q", truncate(rest, 200))
	}
	nBeats := 0
	for i, frames := range beats {
		for _, f := range frames {
			nBeats++
			if kind := frameOf(f); kind != frame {
				t.Errorf("heartbeat %q before event %d is in the %s frame, want %s", f, i, kind, frame)
			}
		}
	}
	if len(beats[gapIdx]) == 0 {
		t.Errorf("no heartbeat in the body the library parsed where the vendor was quiet (before event %d); body:\n%q", gapIdx, truncate(res.Raw, 3000))
	}

	switch want {
	case outcomeOK:
		if len(rec.Errors) > 0 {
			t.Errorf("the application got errors: %s", rec.errorText())
		}
		if !rec.Done {
			t.Errorf("the stream did not complete")
		}
		if !slices.Equal(rec.Tokens, vendorTokens) {
			t.Errorf("tokens %q, want %q", rec.Tokens, vendorTokens)
		}
		if rec.Text != vendorText {
			t.Errorf("text %q, want %q", rec.Text, vendorText)
		}
		if c.final && (rec.Final == nil || *rec.Final != vendorText) {
			t.Errorf("the library assembled %v, want %q", rec.Final, vendorText)
		}
		if len(reqs) != 1 {
			t.Errorf("%d requests, want exactly one", len(reqs))
		}
		if !complete {
			t.Errorf("the body did not hold every event of the vendor:\n%q", truncate(res.Raw, 3000))
		}
		if c.toEOF && !res.Ended {
			t.Errorf("the library did not read the body to its end")
		}
		if n := len(beats[len(stream.events)]); n > 0 {
			t.Errorf("%d comments after the last event: a dangling comment at the end of the body", n)
		}
		if q := reqs[0]; q.gapEnd.Sub(q.gapStart) < 2*clientsHeartbeat {
			t.Errorf("the vendor was quiet for %v, want at least %v", q.gapEnd.Sub(q.gapStart), 2*clientsHeartbeat)
		} else {
			// the tokens before the gap reached the application while
			// the vendor was still quiet: nothing held them back
			for i := 0; i < before && i < len(rec.TokenAt); i++ {
				at := time.UnixMicro(int64(rec.TokenAt[i] * 1000))
				if !at.Before(reqs[0].gapEnd) {
					t.Errorf("token %d arrived %v after the gap ended, want before", i, at.Sub(reqs[0].gapEnd))
				}
			}
		}
		if c.name == "eventsource-parser" && frame != "blank" && rec.Comments != nBeats {
			t.Errorf("the parser reported %d comments, the body holds %d heartbeats", rec.Comments, nBeats)
		}
		if c.name == "eventsource-parser" && frame == "blank" && rec.Comments != 0 {
			t.Errorf("the parser reported %d comments, want none: blank lines are not comments", rec.Comments)
		}
	case outcomeResend:
		if len(rec.Errors) == 0 || rec.Errors[0].Name != "SyntaxError" {
			t.Errorf("errors %q, want a SyntaxError from JSON.parse of an empty message first", rec.errorText())
		}
		if len(reqs) < 2 {
			t.Errorf("%d requests, want the POST sent again", len(reqs))
		}
		if rec.Done {
			t.Errorf("the stream completed, want it failed")
		}
		if before > 0 {
			twice := append(slices.Clone(vendorTokens[:before]), vendorTokens[:before]...)
			if len(rec.Tokens) < len(twice) || !slices.Equal(rec.Tokens[:len(twice)], twice) {
				t.Errorf("tokens %q, want the first %d twice (the answer started over)", rec.Tokens, before)
			}
		} else if len(rec.Tokens) != 0 {
			t.Errorf("tokens %q, want none", rec.Tokens)
		}
	case outcomeChunk:
		if len(rec.Errors) == 0 || !strings.Contains(rec.Errors[0].Message, "invalid stream chunk") {
			t.Errorf("errors %q, want iterateResponseStream: invalid stream chunk", rec.errorText())
		}
		if !slices.Equal(rec.Tokens, vendorTokens[:before]) {
			t.Errorf("tokens %q, want the %d before the first heartbeat", rec.Tokens, before)
		}
		if len(reqs) != 1 {
			t.Errorf("%d requests, want one", len(reqs))
		}
	case outcomeLoss:
		lost := stream.events[gapIdx].token
		wantTokens := slices.Delete(slices.Clone(vendorTokens), lost, lost+1)
		if len(rec.Errors) > 0 {
			t.Errorf("errors %q, want none (the loss is silent)", rec.errorText())
		}
		if !slices.Equal(rec.Tokens, wantTokens) {
			t.Errorf("tokens %q, want all but %q, the one right after the gap", rec.Tokens, vendorTokens[lost])
		}
		if len(reqs) != 1 {
			t.Errorf("%d requests, want one", len(reqs))
		}
	}

	// what happened, whatever was expected
	var what string
	switch {
	case slices.Equal(rec.Tokens, vendorTokens) && len(rec.Errors) == 0 && rec.Done:
		what = "ok"
	case len(rec.Errors) > 0:
		what = truncate(rec.Errors[0].Name+": "+rec.Errors[0].Message, 40)
	case len(rec.Tokens) < len(vendorTokens):
		what = "silent loss"
	default:
		what = "wrong tokens"
	}
	return fmt.Sprintf("%s: %d/%d tokens, %d req, %d beats", what, len(rec.Tokens), len(vendorTokens), len(reqs), nBeats)
}

// truncate returns at most n bytes of s.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
