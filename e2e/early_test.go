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

// open_after with real parts: Debian's nginx in front with a 3s read
// timeout, upstreams that send their header after it, and what gets
// through: Go's HTTP client, Chromium's EventSource, and the npm SDKs
// (openai, @anthropic-ai/sdk, @google/genai), each with the stock control
// (nginx's 504); then the upstream's errors after an early open, as each
// SDK raises them.

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// headerGap is how long the slow upstreams take to send their header:
// longer than nginx's proxy_read_timeout (3s, nginxConf).
const headerGap = 6 * time.Second

// earlySite is Caddy behind nginx: /raw/ without sse (stock), /off/ with
// sse and open_after off, and everything else with sse { heartbeat 1s }
// and the default open_after (EventSource-style requests after the
// heartbeat interval), or open_after 1s under /post/ for the requests
// that ask for a stream.
const earlySite = `
http://127.0.0.1:{{.HTTP}} {
	handle /raw/* {
		uri strip_prefix /raw
		reverse_proxy {{.Upstream}}
	}
	handle /off/* {
		uri strip_prefix /off
		sse {
			heartbeat 1s
			open_after off
		}
		reverse_proxy {{.Upstream}}
	}
	handle /post/* {
		uri strip_prefix /post
		sse {
			heartbeat 1s
			open_after 1s
		}
		reverse_proxy {{.Upstream}}
	}
	handle {
		sse {
			heartbeat 1s
		}` + pageRoute + `
		reverse_proxy {{.Upstream}}
	}
}`

// TestOpenEarlyBehindNginx: an upstream that sends its header after
// nginx's read timeout. Stock Caddy, and sse with open_after off, leave
// nginx nothing to read: the client gets nginx's 504, which a browser's
// EventSource treats as fatal. With sse's default, an EventSource-style
// request is opened after the heartbeat interval and kept alive until the
// upstream answers; with open_after 1s, so is a POST with "stream": true.
// Every event arrives, on one request.
func TestOpenEarlyBehindNginx(t *testing.T) {
	var requests sync.Map // path -> *int, requests the upstream got
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := requests.LoadOrStore(r.URL.Path, new(int))
		*n.(*int)++
		io.Copy(io.Discard, r.Body)
		if !quiet(r, headerGap) {
			return
		}
		w.Header().Set("X-Upstream", "1")
		streamHead(w)
		for i := 1; i <= 3; i++ {
			if _, err := send(w, event{ID: strconv.Itoa(i), Data: "event " + strconv.Itoa(i)}.encode()); err != nil {
				return
			}
		}
	})
	c := startCaddy(t, up, earlySite)
	n := startNginx(t, fmt.Sprintf("127.0.0.1:%d", c.HTTP))
	for _, tc := range []struct {
		name, method, path string
		alive              bool
	}{
		{"EventSource/WithSSE", "GET", "/h11/es", true},
		{"EventSource/OpenAfterOff", "GET", "/h11/off/es-off", false},
		{"EventSource/WithoutSSE", "GET", "/h11/raw/es-raw", false},
		{"POST/WithSSE", "POST", "/h11/post/chat", true},
		{"POST/WithoutSSE", "POST", "/h11/raw/chat-raw", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // the upstream's gaps overlap
			hdr := []string{"Accept", "text/event-stream"}
			var body io.Reader
			if tc.method == "POST" {
				hdr = []string{"Content-Type", "application/json", "Accept", "application/json"}
				body = strings.NewReader(`{"model":"m","stream":true}`)
			}
			res, _ := doRequest(t, h1Client(), tc.method, n.URL()+tc.path, body, hdr...)
			b, err := io.ReadAll(res.Body)
			if !tc.alive {
				if res.StatusCode != http.StatusGatewayTimeout {
					t.Errorf("stock control: status %d, body %q; want nginx's 504", res.StatusCode, b)
				}
				return
			}
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("status %d, %v, body %q; want 200 and the stream", res.StatusCode, err, b)
			}
			s := string(b)
			// an EventSource's heartbeats are comments; a POST's, blank lines
			beat := map[string]string{"GET": ": heartbeat\n", "POST": "\n\n"}[tc.method]
			if !strings.HasPrefix(s, beat) {
				t.Errorf("no heartbeat while the upstream thought: %q", s)
			}
			for i := 1; i <= 3; i++ {
				if !strings.Contains(s, fmt.Sprintf("id: %d\ndata: event %d\n\n", i, i)) {
					t.Errorf("event %d missing: %q", i, s)
				}
			}
			if res.Header.Get("X-Upstream") != "" {
				t.Errorf("the upstream's header fields arrived after an early open: %v", res.Header)
			}
			path := strings.TrimPrefix(strings.TrimPrefix(tc.path, "/h11"), "/post")
			if v, _ := requests.Load(path); v == nil || *v.(*int) != 1 {
				t.Errorf("the upstream got %v requests for %s, want 1", v, path)
			}
		})
	}
}

// TestBrowserSlowUpstream: Chromium's EventSource, behind nginx, on an
// upstream that sends its header after nginx's read timeout. Stock Caddy:
// nginx's 504 closes the EventSource for good. With sse: one open, no
// error, every event.
func TestBrowserSlowUpstream(t *testing.T) {
	chromium := requireTool(t, "chromium", "/usr/bin/chromium")
	browser := startBrowser(t, chromium)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if !quiet(r, headerGap) {
			return
		}
		streamHead(w)
		for i := 1; i <= 3; i++ {
			if _, err := send(w, event{ID: strconv.Itoa(i), Data: "event " + strconv.Itoa(i)}.encode()); err != nil {
				return
			}
		}
		<-r.Context().Done()
	})
	c := startCaddy(t, up, earlySite)
	n := startNginx(t, fmt.Sprintf("127.0.0.1:%d", c.HTTP))
	for _, tc := range []struct {
		name, path string
	}{{"WithSSE", "/h11/events"}, {"WithoutSSE", "/h11/raw/events"}} {
		t.Run(tc.name, func(t *testing.T) {
			p := openPage(t, browser, c.Dir, n.URL()+"/h11/page.html")
			p.start(tc.path)
			if tc.name == "WithoutSSE" {
				p.waitFor("rec.errors.length >= 1 && window.es.readyState == 2", 20*time.Second)
				if rec := p.record(); len(rec.Msgs) != 0 || rec.Opens != 0 {
					t.Errorf("stock control: page got %d messages, %d opens; want nginx's 504 to close it", len(rec.Msgs), rec.Opens)
				}
				return
			}
			p.waitFor("rec.msgs.length >= 3", 20*time.Second)
			rec := p.record()
			if got := strings.Join(rec.ids(), ","); got != "1,2,3" {
				t.Errorf("page got event ids %s, want 1,2,3", got)
			}
			if len(rec.Errors) != 0 || rec.Opens != 1 || rec.State != stateOpen {
				t.Errorf("page saw errors %+v, %d opens, readyState %d; want none, 1, OPEN", rec.Errors, rec.Opens, rec.State)
			}
		})
	}
}

// sdkClients are the SDK scripts that speak each vendor's API.
var sdkClients = []npmClient{
	{name: "openai-chat", format: formatChat},
	{name: "anthropic-stream", format: formatAnthropic},
	{name: "genai", format: formatGemini},
}

// TestSDKsSlowHeader: each npm SDK, behind nginx, against a vendor that
// sends its header after nginx's read timeout. Stock Caddy: the SDK gets
// nginx's 504 (and retries it, each retry cut the same way). With sse
// (open_after 1s): every token, on one request. And when the vendor then
// answers an error instead of a stream, the SDK raises an API error with
// the vendor's message and status, on one request.
func TestSDKsSlowHeader(t *testing.T) {
	dir, node := npmClientsDir(t)
	vendor := startFakeVendor(t)
	c := startCaddy(t, vendor.addr, earlySite)
	n := startNginx(t, fmt.Sprintf("127.0.0.1:%d", c.HTTP))
	type run struct {
		c      npmClient
		mode   string // "stream", "stock" or "error"
		base   string
		vr     *vendorRun
		result clientRun
	}
	var runs []*run
	for _, cl := range sdkClients {
		for _, mode := range []string{"stream", "stock", "error"} {
			fail := 0
			if mode == "error" {
				fail = http.StatusServiceUnavailable
			}
			id, vr := vendor.newFailingRun("header", headerGap, fail)
			prefix := "/h11/post"
			if mode == "stock" {
				prefix = "/h11/raw"
			}
			runs = append(runs, &run{c: cl, mode: mode, base: n.URL() + prefix + "/r/" + id, vr: vr})
		}
	}
	sem := make(chan struct{}, clientsParallel(t))
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			r.result = runNodeClient(dir, node, r.c.name, r.base, false)
		})
	}
	wg.Wait()
	for _, r := range runs {
		t.Run(r.c.name+"/"+r.mode, func(t *testing.T) {
			if r.result.err != nil {
				t.Fatal(r.result.err)
			}
			rec := r.result.rec
			switch r.mode {
			case "stock":
				if rec.Text == vendorText || len(rec.Errors) == 0 {
					t.Errorf("stock control: text %q, errors %+v; want nginx's 504 as an error", rec.Text, rec.Errors)
				}
				for _, res := range rec.Responses {
					if res.Status != http.StatusGatewayTimeout {
						t.Errorf("stock control: a response had status %d, want 504", res.Status)
					}
				}
				t.Logf("stock: %d requests, error %+v", rec.Requests, rec.Errors)
			case "stream":
				if rec.Text != vendorText || len(rec.Errors) != 0 || rec.Requests != 1 {
					t.Errorf("text %q, errors %+v, %d requests; want every token on one request", rec.Text, rec.Errors, rec.Requests)
				}
				if strings.Join(rec.Tokens, "|") != strings.Join(vendorTokens, "|") {
					t.Errorf("tokens %q, want %q", rec.Tokens, vendorTokens)
				}
			case "error":
				checkSDKError(t, r.c, rec)
			}
			if got := len(r.vr.requests()); r.mode != "stock" && got != 1 {
				t.Errorf("the vendor got %d requests, want 1", got)
			}
		})
	}
}

// checkSDKError checks that an SDK raised its API error for the vendor's
// 503 after an early open, with the vendor's message and the status in the
// form each SDK carries it, and nothing else: no parse error, no hang, no
// silent success.
func checkSDKError(t *testing.T, c npmClient, rec *clientRecord) {
	t.Helper()
	if len(rec.Errors) != 1 || rec.Text != "" || rec.Done || rec.Requests != 1 {
		t.Fatalf("errors %+v, text %q, done %v, %d requests; want one API error, no text, one request", rec.Errors, rec.Text, rec.Done, rec.Requests)
	}
	e := rec.Errors[0]
	t.Logf("%s raised %s: %q (status %v, code %v, type %v)", c.name, e.Class, e.Message, e.Status, e.Code, e.Type)
	switch c.format {
	case formatChat:
		// openai: APIError for a data: event whose JSON has an error
		if e.Class != "APIError" || e.Message != "The server had an error while processing your request." || e.Code != "503" || e.Type != "server_error" {
			t.Errorf("openai raised %+v; want APIError with the vendor's message, code \"503\", type server_error", e)
		}
	case formatAnthropic:
		// @anthropic-ai/sdk: APIError for event: error, typed from it
		if e.Class != "APIError" || !strings.Contains(e.Message, `"message":"Overloaded"`) || e.Type != "overloaded_error" {
			t.Errorf("@anthropic-ai/sdk raised %+v; want APIError with the vendor's error, type overloaded_error", e)
		}
	case formatGemini:
		// @google/genai: ApiError with the status from the error's code
		if e.Class != "ApiError" || e.Status == nil || *e.Status != 503 || !strings.Contains(e.Message, "The model is overloaded") {
			t.Errorf("@google/genai raised %+v; want ApiError with status 503 and the vendor's message", e)
		}
	}
}
