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

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	sse "github.com/tmaxmax/go-sse"
)

// tapTransport keeps a copy of every response body it carries, so a test
// can see the bytes a client library hides (heartbeat comments).
type tapTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	raw  bytes.Buffer
}

func (t *tapTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	res.Body = &tapBody{ReadCloser: res.Body, t: t}
	return res, nil
}

// comments counts the comment lines in the bodies carried so far.
func (t *tapTransport) comments() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, line := range strings.Split(t.raw.String(), "\n") {
		if strings.HasPrefix(line, ":") {
			n++
		}
	}
	return n
}

type tapBody struct {
	io.ReadCloser
	t *tapTransport
}

func (b *tapBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.t.mu.Lock()
	b.t.raw.Write(p[:n])
	b.t.mu.Unlock()
	return n, err
}

// TestSSEClientLibrary reads streams with a third-party SSE client,
// github.com/tmaxmax/go-sse, through every chain the other tests use:
// HTTP/1.1 through Caddy, nginx (its defaults) in front of Caddy, HTTP/2
// and HTTP/3 (quic-go), all with heartbeats on and a quiet stretch longer
// than nginx's read timeout and the QUIC idle timeout. The library must
// see exactly the upstream's events: ids, types and data, and no
// heartbeat as an event.
func TestSSEClientLibrary(t *testing.T) {
	const quietFor = 4 * time.Second // > proxy_read_timeout 3s, > QUIC idle 3s
	want := []event{
		{ID: "1", Data: "first"},
		{ID: "2", Type: "greeting", Data: "hello\nworld"},
		{ID: "3", Type: "update", Data: `{"n":3}`},
		{ID: "4", Data: "last"},
	}
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		streamHead(w)
		for i, ev := range want {
			if i == 2 && !quiet(r, quietFor) {
				return
			}
			if _, err := send(w, ev.encode()); err != nil {
				return
			}
		}
		<-r.Context().Done() // the client ends the stream
	})
	c := startCaddy(t, up, `
http://127.0.0.1:{{.HTTP}} {
	encode gzip zstd
	sse {
		heartbeat 1s
	}
	reverse_proxy {{.Upstream}}
}
https://localhost:{{.HTTPS}} {
	tls internal
	@notReady not path /ready
	header @notReady Keep-Alive "timeout=5"
	encode gzip zstd
	handle /ready {
		respond "ok"
	}
	handle {
		sse {
			heartbeat 1s
		}
		reverse_proxy {{.Upstream}}
	}
}`)
	n := startNginx(t, fmt.Sprintf("127.0.0.1:%d", c.HTTP))

	h3 := &http.Client{Transport: h3Transport(t, 3*time.Second)}
	for _, tc := range []struct {
		name  string
		url   string
		base  http.RoundTripper
		proto int
	}{
		{"HTTP1", c.BaseURL() + "/events", h1Client().Transport, 1},
		{"Nginx", n.URL() + "/h10/events", h1Client().Transport, 1},
		{"HTTP2", c.TLSURL() + "/events", h2Client().Transport, 2},
		{"HTTP3", c.TLSURL() + "/events", h3.Transport, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.proto == 3 {
				waitH3(t, h3, c.TLSURL()+"/ready")
			}
			t.Parallel() // the quiet stretches overlap
			tap := &tapTransport{base: tc.base}
			var gotProto int
			client := &sse.Client{
				HTTPClient: &http.Client{Transport: tap},
				Backoff:    sse.Backoff{MaxRetries: -1}, // a lost stream is a failure here
				ResponseValidator: func(res *http.Response) error {
					gotProto = res.ProtoMajor
					return sse.DefaultValidator(res)
				},
			}
			ctx, cancel := context.WithTimeout(context.Background(), quietFor+30*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			conn := client.NewConnection(req)
			var got []event
			conn.SubscribeToAll(func(e sse.Event) {
				got = append(got, event{ID: e.LastEventID, Type: e.Type, Data: e.Data})
				if len(got) == len(want) {
					cancel() // done: end the stream
				}
			})
			err = conn.Connect()
			// it returns once the test cancels after the last event (over
			// HTTP/3 with quic-go's H3_REQUEST_CANCELLED, not ctx.Err())
			if !errors.Is(ctx.Err(), context.Canceled) {
				t.Errorf("Connect returned %v before the last event arrived", err)
			}
			if gotProto != tc.proto {
				t.Errorf("stream over HTTP/%d, want HTTP/%d", gotProto, tc.proto)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("library got events\n%q\nwant\n%q", got, want)
			}
			if n := tap.comments(); n < 2 {
				t.Errorf("saw %d heartbeat comments on the wire in %v of quiet, want >= 2", n, quietFor)
			}
		})
	}
}
