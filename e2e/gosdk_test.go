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

// The Go SDKs of the LLM APIs, in process, through the same Caddy and
// fake vendor as the npm clients (clients_test.go), with the same checks:
// every token in order, the exact text, no error, one request, heartbeats
// in the bytes the library parsed, the quiet stretch before the first
// event and in the middle, HTTP/1.1 and HTTP/2, every heartbeat frame.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	anthropic "github.com/anthropics/anthropic-sdk-go/v2"
	anthropicopt "github.com/anthropics/anthropic-sdk-go/v2/option"
	openai "github.com/openai/openai-go/v3"
	openaiopt "github.com/openai/openai-go/v3/option"
	goopenai "github.com/sashabaranov/go-openai"
	"google.golang.org/genai"
)

// goClient is one Go SDK, driven the way an application streams with it.
type goClient struct {
	npmClient // name, the vendor format it reads, the Accept it sends
	library   string
	run       func(ctx context.Context, base string, hc *http.Client, app *goApp) error
}

// goApp records what the application saw, as a clientRecord.
type goApp struct {
	mu  sync.Mutex
	rec clientRecord
}

func (a *goApp) token(s string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rec.Tokens = append(a.rec.Tokens, s)
	a.rec.TokenAt = append(a.rec.TokenAt, float64(time.Now().UnixMicro())/1000)
	a.rec.Text += s
}

const goPrompt = "Tell me something, slowly."

var goClients = []goClient{
	// openai-go and go-openai stop reading at [DONE]
	{npmClient{name: "openai-go", format: formatChat, accept: "application/json"}, "github.com/openai/openai-go/v3 v3.98.0",
		func(ctx context.Context, base string, hc *http.Client, app *goApp) error {
			client := openai.NewClient(openaiopt.WithAPIKey("sk-test"), openaiopt.WithBaseURL(base+"/v1/"),
				openaiopt.WithHTTPClient(hc), openaiopt.WithMaxRetries(0))
			stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
				Model:    "gpt-4o-mini",
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(goPrompt)},
			})
			for stream.Next() {
				if ch := stream.Current().Choices; len(ch) > 0 && ch[0].Delta.Content != "" {
					app.token(ch[0].Delta.Content)
				}
			}
			return stream.Err()
		}},
	{npmClient{name: "anthropic-sdk-go", format: formatAnthropic, accept: "application/json", toEOF: true}, "github.com/anthropics/anthropic-sdk-go/v2 v2.15.0",
		func(ctx context.Context, base string, hc *http.Client, app *goApp) error {
			client := anthropic.NewClient(anthropicopt.WithAPIKey("sk-ant-test"), anthropicopt.WithBaseURL(base+"/"),
				anthropicopt.WithHTTPClient(hc), anthropicopt.WithMaxRetries(0))
			stream := client.Messages.NewStreaming(ctx, anthropic.MessageNewParams{
				Model:     "claude-haiku-4-5",
				MaxTokens: 1024,
				Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(goPrompt))},
			})
			for stream.Next() {
				if d, ok := stream.Current().AsAny().(anthropic.ContentBlockDeltaEvent); ok {
					if td, ok := d.Delta.AsAny().(anthropic.TextDelta); ok {
						app.token(td.Text)
					}
				}
			}
			return stream.Err()
		}},
	{npmClient{name: "go-genai", format: formatGemini, accept: "", toEOF: true}, "google.golang.org/genai v1.77.0",
		func(ctx context.Context, base string, hc *http.Client, app *goApp) error {
			client, err := genai.NewClient(ctx, &genai.ClientConfig{
				APIKey: "test-key", Backend: genai.BackendGeminiAPI, HTTPClient: hc,
				HTTPOptions: genai.HTTPOptions{BaseURL: base + "/"},
			})
			if err != nil {
				return err
			}
			for resp, err := range client.Models.GenerateContentStream(ctx, "gemini-2.5-flash", genai.Text(goPrompt), nil) {
				if err != nil {
					return err
				}
				if s := resp.Text(); s != "" {
					app.token(s)
				}
			}
			return nil
		}},
	{npmClient{name: "go-openai", format: formatChat, accept: "text/event-stream"}, "github.com/sashabaranov/go-openai v1.43.0",
		func(ctx context.Context, base string, hc *http.Client, app *goApp) error {
			cfg := goopenai.DefaultConfig("sk-test")
			cfg.BaseURL, cfg.HTTPClient = base+"/v1", hc
			if limit, ok := ctx.Value(emptyLimitKey{}).(uint); ok {
				cfg.EmptyMessagesLimit = limit
			}
			stream, err := goopenai.NewClientWithConfig(cfg).CreateChatCompletionStream(ctx, goopenai.ChatCompletionRequest{
				Model:    "gpt-4o-mini",
				Messages: []goopenai.ChatCompletionMessage{{Role: goopenai.ChatMessageRoleUser, Content: goPrompt}},
				Stream:   true,
			})
			if err != nil {
				return err
			}
			defer stream.Close()
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if len(resp.Choices) > 0 && resp.Choices[0].Delta.Content != "" {
					app.token(resp.Choices[0].Delta.Content)
				}
			}
		}},
}

// sdkTap counts a client's requests and keeps the raw bytes of each
// response body as the library reads them.
type sdkTap struct {
	base http.RoundTripper
	app  *goApp
}

func (t *sdkTap) RoundTrip(req *http.Request) (*http.Response, error) {
	t.app.mu.Lock()
	t.app.rec.Requests++
	t.app.mu.Unlock()
	res, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	hdr := make(map[string]string)
	for k, v := range res.Header {
		hdr[strings.ToLower(k)] = strings.Join(v, ", ")
	}
	t.app.mu.Lock()
	i := len(t.app.rec.Responses)
	t.app.rec.Responses = append(t.app.rec.Responses, struct {
		Method  string            `json:"method"`
		URL     string            `json:"url"`
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
		Raw     string            `json:"raw"`
		Ended   bool              `json:"ended"`
	}{Method: req.Method, URL: req.URL.String(), Status: res.StatusCode, Headers: hdr})
	t.app.mu.Unlock()
	res.Body = &sdkTapBody{ReadCloser: res.Body, app: t.app, i: i}
	return res, nil
}

type sdkTapBody struct {
	io.ReadCloser
	app *goApp
	i   int
}

func (b *sdkTapBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.app.mu.Lock()
	r := &b.app.rec.Responses[b.i]
	r.Raw += string(p[:n])
	if err == io.EOF {
		r.Ended = true
	}
	b.app.mu.Unlock()
	return n, err
}

// runGoClient runs one SDK against base over h1 or h2 and returns what
// the application saw.
func runGoClient(c goClient, base string, h2 bool) *clientRecord {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: h2}
	tr.Protocols = new(http.Protocols)
	if h2 {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	defer tr.CloseIdleConnections()
	app := &goApp{rec: clientRecord{Client: c.name, Library: c.library}}
	hc := &http.Client{Transport: &sdkTap{base: tr, app: app}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := c.run(ctx, base, hc, app)
	app.mu.Lock()
	defer app.mu.Unlock()
	if err != nil {
		app.rec.Errors = append(app.rec.Errors, struct {
			Name, Class, Message, Cause string
			Status                      *int
			Code, Type                  any
		}{Name: fmt.Sprintf("%T", err), Message: err.Error()})
	} else {
		app.rec.Done = true
	}
	rec := app.rec
	return &rec
}

// TestGoSDKs runs every Go SDK under every heartbeat frame, with the quiet
// stretch before the first event and in the middle, over HTTP/1.1 and
// HTTP/2. google.golang.org/genai fails on a comment heartbeat in either
// frame (the controls); the default gives it blank lines, which it skips.
func TestGoSDKs(t *testing.T) {
	gap := clientsGap(t)
	vendor := startFakeVendor(t)
	results := &clientResults{}
	t.Cleanup(func() { t.Log(results) })
	type goCase struct {
		config, gapAt, proto, base string
		c                          goClient
		vr                         *vendorRun
		rec                        *clientRecord
	}
	var cases []*goCase
	for _, config := range []string{"default", "blank", "block", "line"} {
		var caddy *caddyProc
		for _, c := range goClients {
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
					cases = append(cases, &goCase{config: config, gapAt: gapAt, proto: proto, base: base, c: c, vr: vr})
				}
			}
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, clientsParallel(t))
	for _, gc := range cases {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			gc.rec = runGoClient(gc.c, gc.base, gc.proto == "h2")
		})
	}
	wg.Wait()
	for _, gc := range cases {
		t.Run(gc.config+"/"+gc.c.name+"/"+gc.gapAt+"/"+gc.proto, func(t *testing.T) {
			frame := wireFrame(gc.config, gc.c.npmClient)
			result := checkClientRun(t, gc.c.npmClient, frame, gc.gapAt, gc.proto, gc.rec, gc.vr.requests())
			results.add(gc.c.name, gc.c.library, gc.config, frame, gc.gapAt+"/"+gc.proto, result)
		})
	}
}

// What a go-openai user must know. It counts every line that is not a
// data line between two events as an "empty message", and fails past
// ClientConfig.EmptyMessagesLimit (300 by default) with
// ErrTooManyEmptyStreamMessages: heartbeats count, one per beat in the
// line frame it gets (it sends Accept: text/event-stream), so a long
// enough silence fails it unless the limit is raised. And it keeps every
// comment line it skipped, and parses them with an error event, so an API
// error after a comment heartbeat reaches the caller as "unexpected end
// of JSON input"; blank lines add nothing there, so with
// heartbeat_frame blank the caller gets the API's error.
func TestGoOpenAI(t *testing.T) {
	vendor := startFakeVendor(t)
	c := startCaddy(t, vendor.addr, `
http://127.0.0.1:{{.HTTP}} {
	handle_path /fast/* {
		sse {
			heartbeat 5ms
		}
		reverse_proxy {{.Upstream}}
	}
	handle_path /line/* {
		sse {
			heartbeat 200ms
			open_after 300ms
		}
		reverse_proxy {{.Upstream}}
	}
	handle_path /blank/* {
		sse {
			heartbeat 200ms
			open_after 300ms
			heartbeat_frame blank
		}
		reverse_proxy {{.Upstream}}
	}
}`)
	goOpenAI := goClients[len(goClients)-1]
	if goOpenAI.name != "go-openai" {
		t.Fatal("goClients changed: go-openai is not last")
	}
	run := func(prefix, gapAt string, gap time.Duration, fail int, limit uint) *clientRecord {
		id, _ := vendor.newFailingRun(gapAt, gap, fail)
		cl := goOpenAI
		if limit != 0 {
			cl.run = func(ctx context.Context, base string, hc *http.Client, app *goApp) error {
				return goOpenAI.run(context.WithValue(ctx, emptyLimitKey{}, limit), base, hc, app)
			}
		}
		return runGoClient(cl, c.BaseURL()+prefix+"/r/"+id, false)
	}
	t.Run("EmptyMessagesLimit", func(t *testing.T) {
		// 3s of silence at 5ms: several hundred beats
		rec := run("/fast", "before", 3*time.Second, 0, 0)
		if len(rec.Errors) != 1 || !strings.Contains(rec.Errors[0].Message, goopenai.ErrTooManyEmptyStreamMessages.Error()) {
			t.Errorf("default limit: errors %+v, want %q", rec.Errors, goopenai.ErrTooManyEmptyStreamMessages)
		}
		rec = run("/fast", "before", 3*time.Second, 0, 1<<20)
		if len(rec.Errors) != 0 || rec.Text != vendorText {
			t.Errorf("EmptyMessagesLimit raised: errors %+v, text %q; want every token", rec.Errors, rec.Text)
		}
	})
	t.Run("ErrorAfterHeartbeats", func(t *testing.T) {
		rec := run("/line", "header", 2*time.Second, http.StatusServiceUnavailable, 0)
		if len(rec.Errors) != 1 || !strings.Contains(rec.Errors[0].Message, "unexpected end of JSON input") {
			t.Errorf("line frame: errors %+v, want unexpected end of JSON input", rec.Errors)
		}
		rec = run("/blank", "header", 2*time.Second, http.StatusServiceUnavailable, 0)
		if len(rec.Errors) != 1 || !strings.Contains(rec.Errors[0].Message, "The server had an error while processing your request.") {
			t.Errorf("blank frame: errors %+v, want the API's error", rec.Errors)
		}
		t.Logf("blank frame: go-openai raised %+v", rec.Errors)
	})
}

// emptyLimitKey carries a go-openai EmptyMessagesLimit to its run.
type emptyLimitKey struct{}
