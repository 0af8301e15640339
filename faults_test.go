package caddysse

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// defaultFrame is the heartbeat the module writes by default to the
// EventSource-style clients of these tests (heartbeat_frame auto: their
// Accept lists text/event-stream, so the line frame).
var defaultFrame = []byte(": heartbeat\n")

// matchStream checks that got is sent with only heartbeat frames added,
// and only where sent is between events (at its start, or after a blank
// line, whatever the line ends). With prefixOK, got may stop early, as a
// stream cut short does. The boundary rule here is written from the
// WHATWG event-stream grammar, independently of the module's tracker.
func matchStream(got, sent, frame []byte, prefixOK bool) error {
	i, j := 0, 0
	var ref refBoundary
	ref.boundary = true
	for {
		if ref.boundary {
			for bytes.HasPrefix(got[i:], frame) {
				i += len(frame)
			}
			if prefixOK && i < len(got) && len(got)-i < len(frame) && bytes.HasPrefix(frame, got[i:]) && !bytes.HasPrefix(sent[j:], got[i:]) {
				return nil // cut in the middle of a heartbeat
			}
		}
		switch {
		case j == len(sent) && i == len(got):
			return nil
		case j == len(sent):
			return fmt.Errorf("client got %q after all the upstream's bytes", clip(got[i:]))
		case i == len(got):
			if prefixOK {
				return nil
			}
			return fmt.Errorf("client is missing the upstream's bytes from %d on: %q (got %q)", j, clip(sent[j:]), clip(got))
		case got[i] != sent[j]:
			return fmt.Errorf("client byte %d is %q, upstream byte %d is %q: client got %q around it, upstream sent %q",
				i, got[i], j, sent[j], clip(got[max(0, i-20):]), clip(sent[max(0, j-20):]))
		}
		ref.feed(sent[j])
		i++
		j++
	}
}

func clip(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}

// refBoundary tells whether an event stream is between events: after a
// line end (CRLF, LF or CR) that ends an empty line. A LF right after a CR
// completes that line end.
type refBoundary struct {
	boundary bool
	cr       bool
	lineLen  int
}

func (r *refBoundary) feed(c byte) {
	switch {
	case c == '\n' && r.cr:
		r.cr = false
	case c == '\n' || c == '\r':
		r.boundary = r.lineLen == 0
		r.lineLen = 0
		r.cr = c == '\r'
	default:
		r.lineLen++
		r.boundary = false
		r.cr = false
	}
}

// checkStreamHeader checks what every stream response must carry.
func checkStreamHeader(t *testing.T, res *http.Response) {
	t.Helper()
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("Content-Type = %q, want text/event-stream", ct)
	}
	cc := res.Header.Get("Cache-Control")
	if !strings.Contains(cc, "no-cache") || !strings.Contains(cc, "no-transform") {
		t.Errorf("Cache-Control = %q, want no-cache and no-transform", cc)
	}
	if v := res.Header.Get("X-Accel-Buffering"); v != "no" {
		t.Errorf("X-Accel-Buffering = %q, want no", v)
	}
	if v, ok := res.Header["Content-Length"]; ok || res.ContentLength != -1 {
		t.Errorf("Content-Length = %v (length %d), want none on a stream", v, res.ContentLength)
	}
}

// checkUntouched checks that a response that is not a stream got none of
// the stream repairs.
func checkUntouched(t *testing.T, res *http.Response) {
	t.Helper()
	if v := res.Header.Get("X-Accel-Buffering"); v != "" {
		t.Errorf("X-Accel-Buffering = %q on a response that is not a stream", v)
	}
	if v := res.Header.Get("Cache-Control"); strings.Contains(v, "no-transform") {
		t.Errorf("Cache-Control = %q on a response that is not a stream", v)
	}
}

// upstreamCase is one misbehaving upstream: serve is its handler (out
// writes, flushes and records what it sent; gate is closed by the client
// once it has seen a heartbeat).
type upstreamCase struct {
	name   string
	method string
	fetch  bool // a POST fetch client that accepts gzip, not an EventSource
	serve  func(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{})
	check  func(t *testing.T, res *http.Response, st *caseState)
}

// caseState is what the client and the upstream of one case share.
type caseState struct {
	gate     chan struct{}
	gateOnce sync.Once
	mu       sync.Mutex
	sent     bytes.Buffer
}

func (s *caseState) openGate() { s.gateOnce.Do(func() { close(s.gate) }) }

func (s *caseState) sentBytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.sent.Bytes())
}

// readUpstreamCase reads res's body to its end. Once a heartbeat has arrived
// after the first occurrence of after, it opens the upstream's gate.
func readUpstreamCase(t *testing.T, res *http.Response, st *caseState, after string) ([]byte, error) {
	t.Helper()
	var got []byte
	buf := make([]byte, 32<<10)
	deadline := time.AfterFunc(15*time.Second, func() { res.Body.Close() })
	defer deadline.Stop()
	for {
		n, err := res.Body.Read(buf)
		got = append(got, buf[:n]...)
		if k := bytes.Index(got, []byte(after)); k >= 0 && bytes.Contains(got[k+len(after):], defaultFrame) {
			st.openGate()
		}
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
	}
}

// waitGate waits for the client's go-ahead, or the end of the request.
func waitGate(r *http.Request, gate <-chan struct{}) bool {
	select {
	case <-gate:
		return true
	case <-r.Context().Done():
		return false
	}
}

// Upstreams that misbehave are passed through exactly, with the right
// headers and without a panic: the client sees the upstream's bytes, plus
// only heartbeat comments and only between events. That holds for an
// upstream killed mid-event, a 10 MiB line with no line end (streamed
// through without the module holding it), CR-only line ends, NUL bytes and
// invalid UTF-8, a leading BOM, a Content-Length on a stream, a stream the
// upstream compressed itself, 103 Early Hints before the stream, 204, 304
// and HEAD responses, text/event-stream on a 500, and a stream that ends
// without a final blank line.
func TestMisbehavingUpstreams(t *testing.T) {
	cases := []upstreamCase{
		{
			name: "killed mid-event by a panic",
			serve: func(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{}) {
				streamHead(w)
				out("data: one\n\n")
				if waitGate(r, gate) {
					out("data: par")
					pause(r, 30*time.Millisecond) // a heartbeat here would be mid-event
					panic(http.ErrAbortHandler)
				}
			},
			check: func(t *testing.T, res *http.Response, st *caseState) {
				checkStreamHeader(t, res)
				got, err := readUpstreamCase(t, res, st, "data: one\n\n")
				if err == nil {
					t.Error("the stream ended cleanly; the client must see that it was cut")
				}
				if err := matchStream(got, st.sentBytes(), defaultFrame, false); err != nil {
					t.Error(err)
				}
			},
		},
		{
			name: "killed mid-event by a closed connection",
			serve: func(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{}) {
				streamHead(w)
				out("data: one\n\n")
				if waitGate(r, gate) {
					out("data: par")
					pause(r, 30*time.Millisecond)
					if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
						conn.Close()
					}
				}
			},
			check: func(t *testing.T, res *http.Response, st *caseState) {
				checkStreamHeader(t, res)
				got, err := readUpstreamCase(t, res, st, "data: one\n\n")
				if err == nil {
					t.Error("the stream ended cleanly; the client must see that it was cut")
				}
				if err := matchStream(got, st.sentBytes(), defaultFrame, false); err != nil {
					t.Error(err)
				}
			},
		},
		{
			name: "CR-only line ends",
			serve: func(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{}) {
				streamHead(w)
				out("data: a\rdata: b\r\r")
				if waitGate(r, gate) {
					out("data: c\r")
					pause(r, 30*time.Millisecond)
					out("\rid: 1\r")
					pause(r, 30*time.Millisecond)
					out("\r")
				}
			},
			check: func(t *testing.T, res *http.Response, st *caseState) {
				checkStreamHeader(t, res)
				got, err := readUpstreamCase(t, res, st, "data: b\r\r")
				if err != nil {
					t.Fatal(err)
				}
				if err := matchStream(got, st.sentBytes(), defaultFrame, false); err != nil {
					t.Error(err)
				}
			},
		},
		{
			name: "NUL bytes and invalid UTF-8",
			serve: func(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{}) {
				streamHead(w)
				out("data: \x00\xff\xfe\xc3\x28\xed\xa0\x80\r\n\r\n")
				if waitGate(r, gate) {
					out("data: \x00")
					pause(r, 30*time.Millisecond)
					out("\xf8\x88\x80\x80\x80\n\n")
				}
			},
			check: func(t *testing.T, res *http.Response, st *caseState) {
				checkStreamHeader(t, res)
				got, err := readUpstreamCase(t, res, st, "\r\n\r\n")
				if err != nil {
					t.Fatal(err)
				}
				if err := matchStream(got, st.sentBytes(), defaultFrame, false); err != nil {
					t.Error(err)
				}
			},
		},
		{
			name: "leading BOM",
			serve: func(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{}) {
				streamHead(w)
				out("\xEF\xBB\xBFdata: a\n\n")
			},
			check: func(t *testing.T, res *http.Response, st *caseState) {
				checkStreamHeader(t, res)
				got, err := readUpstreamCase(t, res, st, "\x00never")
				if err != nil {
					t.Fatal(err)
				}
				sent := st.sentBytes()
				if bytes.HasPrefix(got, defaultFrame) {
					// a heartbeat went first: the BOM must not follow it
					sent = bytes.TrimPrefix(sent, utf8BOM)
				}
				if err := matchStream(got, sent, defaultFrame, false); err != nil {
					t.Error(err)
				}
			},
		},
		{
			name: "BOM after a heartbeat",
			serve: func(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{}) {
				streamHead(w)
				if waitGate(r, gate) {
					out("\xEF\xBB")
					pause(r, 10*time.Millisecond)
					out("\xBFdata: a\n\n")
				}
			},
			check: func(t *testing.T, res *http.Response, st *caseState) {
				checkStreamHeader(t, res)
				got, err := readUpstreamCase(t, res, st, "")
				if err != nil {
					t.Fatal(err)
				}
				// a BOM after a heartbeat would turn "data" into
				// "\uFEFFdata" and lose the event: it is dropped
				if err := matchStream(got, []byte("data: a\n\n"), defaultFrame, false); err != nil {
					t.Error(err)
				}
			},
		},
		{
			name: "half a BOM, then EOF",
			serve: func(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{}) {
				streamHead(w)
				if waitGate(r, gate) {
					out("\xEF\xBB")
				}
			},
			check: func(t *testing.T, res *http.Response, st *caseState) {
				checkStreamHeader(t, res)
				got, err := readUpstreamCase(t, res, st, "")
				if err != nil {
					t.Fatal(err)
				}
				if err := matchStream(got, st.sentBytes(), defaultFrame, false); err != nil {
					t.Error(err)
				}
			},
		},
		{
			name: "Content-Length on a stream",
			serve: func(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{}) {
				body := "data: a\n\ndata: b\n\n"
				streamHead(w, "Content-Length", fmt.Sprint(len(body)))
				out(body[:9])
				if waitGate(r, gate) {
					out(body[9:])
				}
			},
			check: func(t *testing.T, res *http.Response, st *caseState) {
				checkStreamHeader(t, res)
				got, err := readUpstreamCase(t, res, st, "data: a\n\n")
				if err != nil {
					t.Fatal(err)
				}
				if err := matchStream(got, st.sentBytes(), defaultFrame, false); err != nil {
					t.Error(err)
				}
				if !bytes.Contains(got, defaultFrame) {
					t.Error("no heartbeat went out, so the test proved nothing about the length")
				}
			},
		},
		{
			// sse asks the upstream for identity on EventSource requests;
			// one that compresses anyway reaches the client as it sent it,
			// with nothing added inside the compressed bytes
			name:  "gzip from the upstream, EventSource client",
			serve: serveGzip,
			check: checkUpstreamGzip,
		},
		{
			// a fetch client that accepts gzip gets the upstream's
			// compressed bytes as they are: nothing may be added inside
			name:  "gzip from the upstream, fetch client",
			fetch: true,
			serve: serveGzip,
			check: checkUpstreamGzip,
		},
		{
			name: "103 Early Hints before the stream",
			serve: func(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{}) {
				w.Header().Set("Link", "</app.css>; rel=preload; as=style")
				w.WriteHeader(http.StatusEarlyHints)
				w.Header().Del("Link")
				streamHead(w)
				out("data: a\n\n")
			},
			check: func(t *testing.T, res *http.Response, st *caseState) {
				checkStreamHeader(t, res)
				got, err := readUpstreamCase(t, res, st, "\x00never")
				if err != nil {
					t.Fatal(err)
				}
				if err := matchStream(got, st.sentBytes(), defaultFrame, false); err != nil {
					t.Error(err)
				}
			},
		},
		{
			name: "204 with an event-stream type",
			serve: func(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{}) {
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusNoContent)
			},
			check: checkNoBody(http.StatusNoContent),
		},
		{
			name: "304 with an event-stream type",
			serve: func(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{}) {
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusNotModified)
			},
			check: checkNoBody(http.StatusNotModified),
		},
		{
			// (an upstream that streams forever on HEAD holds its
			// connection, which the proxy then reuses: see HARDENING.md)
			name:   "HEAD of a stream",
			method: http.MethodHead,
			serve: func(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{}) {
				streamHead(w)
				out("data: a\n\n")
				pause(r, 30*time.Millisecond)
			},
			check: func(t *testing.T, res *http.Response, st *caseState) {
				checkStreamHeader(t, res)
				if res.StatusCode != http.StatusOK {
					t.Errorf("status %d, want 200", res.StatusCode)
				}
				got, err := readUpstreamCase(t, res, st, "\x00never")
				if err != nil || len(got) != 0 {
					t.Errorf("HEAD body %q, %v; want none, and no hang", got, err)
				}
			},
		},
		{
			name: "event-stream type on a 500",
			serve: func(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{}) {
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusInternalServerError)
				out("data: error\n\n")
				pause(r, 50*time.Millisecond)
				out("data: more\n\n")
			},
			check: func(t *testing.T, res *http.Response, st *caseState) {
				if res.StatusCode != http.StatusInternalServerError {
					t.Errorf("status %d, want the upstream's 500", res.StatusCode)
				}
				checkUntouched(t, res)
				got, err := readUpstreamCase(t, res, st, "\x00never")
				if err != nil {
					t.Fatal(err)
				}
				if sent := st.sentBytes(); !bytes.Equal(got, sent) {
					t.Errorf("client got %q, upstream sent %q", got, sent)
				}
			},
		},
		{
			name: "EOF without a final blank line",
			serve: func(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{}) {
				streamHead(w)
				out("data: a\n\n")
				if waitGate(r, gate) {
					out("data: b")
					pause(r, 30*time.Millisecond)
				}
			},
			check: func(t *testing.T, res *http.Response, st *caseState) {
				checkStreamHeader(t, res)
				got, err := readUpstreamCase(t, res, st, "data: a\n\n")
				if err != nil {
					t.Fatal(err)
				}
				if err := matchStream(got, st.sentBytes(), defaultFrame, false); err != nil {
					t.Error(err)
				}
				if !bytes.HasSuffix(got, []byte("data: b")) {
					t.Errorf("the stream ends with %q, want the upstream's last bytes and nothing else", clip(got[max(0, len(got)-20):]))
				}
			},
		},
	}

	states := make(map[string]*caseState)
	byPath := make(map[string]upstreamCase)
	for i, tc := range cases {
		path := fmt.Sprintf("/case/%d", i)
		states[path] = &caseState{gate: make(chan struct{})}
		byPath[path] = tc
	}
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/long" {
			serveLongLine(w, r)
			return
		}
		st, tc := states[r.URL.Path], byPath[r.URL.Path]
		out := func(s string) {
			st.mu.Lock()
			st.sent.WriteString(s)
			st.mu.Unlock()
			send(w, s)
		}
		tc.serve(w, r, out, st.gate)
	})
	c := startCaddy(t, up, `
http://127.0.0.1:{{.HTTP}} {
	encode gzip
	sse {
		heartbeat 5ms
		# these upstreams' answers must reach the client as they are: at
		# 5ms, the default would open some streams before they answer
		open_after off
	}
	reverse_proxy {{.Upstream}}
}
`)
	client := h1Client()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := fmt.Sprintf("/case/%d", i)
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			var early []int
			var earlyLink string
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
					early = append(early, code)
					earlyLink = http.Header(hdr).Get("Link")
					return nil
				},
			})
			if tc.fetch {
				method = http.MethodPost
			}
			req, _ := http.NewRequestWithContext(ctx, method, c.BaseURL()+path, nil)
			if tc.fetch {
				req.Header.Set("Accept-Encoding", "gzip")
			} else {
				req.Header.Set("Accept", "text/event-stream")
			}
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			tc.check(t, res, states[path])
			if strings.HasPrefix(tc.name, "103") {
				if len(early) != 1 || early[0] != http.StatusEarlyHints || earlyLink == "" {
					t.Errorf("1xx responses seen: %v (Link %q), want one 103 with its Link", early, earlyLink)
				}
			}
		})
	}

	t.Run("a 10 MiB line with no line end", func(t *testing.T) {
		testLongLine(t, client, c.BaseURL()+"/long")
	})

	waitFor(t, 10*time.Second, "caddy_sse_streams_open back to 0", func() bool {
		return sumSeries(metrics.open) == 0
	})
}

// serveGzip sends a stream it compressed itself, with a pause between
// its two events where heartbeats would be due.
func serveGzip(w http.ResponseWriter, r *http.Request, out func(string), gate <-chan struct{}) {
	streamHead(w, "Content-Encoding", "gzip")
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	emit := func() {
		out(buf.String())
		buf.Reset()
	}
	io.WriteString(zw, "data: a\n\n")
	zw.Flush()
	emit()
	pause(r, 50*time.Millisecond) // ten heartbeat intervals
	io.WriteString(zw, "data: b\n\n")
	zw.Close()
	emit()
}

// checkUpstreamGzip checks that a stream the upstream compressed itself
// reaches the client byte for byte, with nothing added inside, and decodes
// to the upstream's events.
func checkUpstreamGzip(t *testing.T, res *http.Response, st *caseState) {
	if ce := res.Header.Get("Content-Encoding"); ce != "gzip" {
		t.Errorf("Content-Encoding = %q, want the upstream's gzip", ce)
	}
	got, err := readUpstreamCase(t, res, st, "\x00never")
	if err != nil {
		t.Fatal(err)
	}
	if sent := st.sentBytes(); !bytes.Equal(got, sent) {
		t.Fatalf("client got %q, upstream sent %q: nothing may be added to a compressed stream", got, sent)
	}
	zr, err := gzip.NewReader(bytes.NewReader(got))
	if err != nil {
		t.Fatal(err)
	}
	if plain, err := io.ReadAll(zr); err != nil || string(plain) != "data: a\n\ndata: b\n\n" {
		t.Errorf("decoded %q, %v", plain, err)
	}
}

// checkNoBody checks a response with no body that is not a stream.
func checkNoBody(status int) func(t *testing.T, res *http.Response, st *caseState) {
	return func(t *testing.T, res *http.Response, st *caseState) {
		if res.StatusCode != status {
			t.Errorf("status %d, want %d", res.StatusCode, status)
		}
		checkUntouched(t, res)
		got, err := readUpstreamCase(t, res, st, "\x00never")
		if err != nil || len(got) != 0 {
			t.Errorf("body %q, %v; want none, and no hang", got, err)
		}
	}
}

const longLineSize = 10 << 20

// serveLongLine sends "data: " and 10 MiB of x with no line end, with a
// pause a megabyte in, where a heartbeat would land mid-line.
func serveLongLine(w http.ResponseWriter, r *http.Request) {
	streamHead(w)
	if send(w, "data: ") != nil {
		return
	}
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	for sent := 0; sent < longLineSize; sent += len(chunk) {
		if _, err := w.Write(chunk); err != nil {
			return
		}
		if sent == 1<<20 {
			http.NewResponseController(w).Flush()
			pause(r, 30*time.Millisecond)
		}
	}
}

// testLongLine streams the long line and checks it arrives whole, with no
// heartbeat inside it, while the heap stays far below its size.
func testLongLine(t *testing.T, client *http.Client, url string) {
	base := heapInUse()
	res := get(t, client, url, "Accept", "text/event-stream")
	checkStreamHeader(t, res)
	buf := make([]byte, 32<<10)
	var (
		prefix    []byte
		xs        int
		peak      uint64
		nextCheck = 1 << 20
	)
	for {
		n, err := res.Body.Read(buf)
		for _, c := range buf[:n] {
			switch {
			case len(prefix) < len("data: ") || !bytes.HasSuffix(prefix, []byte("data: ")):
				prefix = append(prefix, c)
				if len(prefix) > 64*len(defaultFrame) {
					t.Fatalf("the stream starts with %q", clip(prefix))
				}
			case c == 'x':
				xs++
			default:
				t.Fatalf("byte %q after %d x: something was inserted in the line", c, xs)
			}
		}
		if xs >= nextCheck {
			nextCheck += 1 << 20
			peak = max(peak, heapInUse())
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", xs, err)
		}
	}
	if xs != longLineSize {
		t.Errorf("got %d x, want %d", xs, longLineSize)
	}
	head := bytes.TrimSuffix(prefix, []byte("data: "))
	if len(bytes.ReplaceAll(head, defaultFrame, nil)) != 0 {
		t.Errorf("before the line: %q, want only heartbeats", head)
	}
	delta := int64(peak) - int64(base)
	t.Logf("heap in use: %.1f MiB before, %.1f MiB at peak", float64(base)/(1<<20), float64(peak)/(1<<20))
	if delta > 4<<20 {
		t.Errorf("heap in use grew by %.1f MiB while a 10 MiB line streamed through: something holds the line", float64(delta)/(1<<20))
	}
}

// A client that stops reading (its process hangs, or it vanished without
// a FIN and its socket stalls the same way) costs a bounded amount: while
// its write is blocked no heartbeat is written or queued and memory does
// not grow with what the upstream keeps sending; Caddy's server write_idle
// timeout (here 2s) ends the stream, the upstream request is cancelled,
// and the stream's limit slot is given back, so a new stream is admitted
// at limit 1.
func TestDeadClient(t *testing.T) {
	var (
		upWrites  atomic.Int64
		lastWrite atomic.Int64 // unix nanos of the upstream's last completed write
		started   = make(chan struct{}, 1)
		ended     = make(chan time.Time, 1)
	)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/quiet" {
			streamHead(w)
			send(w, "data: hello\n\n")
			<-r.Context().Done()
			return
		}
		defer func() { ended <- time.Now() }()
		streamHead(w)
		started <- struct{}{}
		event := []byte("data: " + strings.Repeat("y", 16<<10) + "\n\n")
		for {
			if _, err := w.Write(event); err != nil {
				return
			}
			if http.NewResponseController(w).Flush() != nil {
				return
			}
			upWrites.Add(int64(len(event)))
			lastWrite.Store(time.Now().UnixNano())
		}
	})
	c := startCaddy(t, up, `
http://127.0.0.1:{{.HTTP}} {
	respond "placeholder"
}
`)
	c.loadWithGlobals(t, `
	servers {
		timeouts {
			write_idle 2s
		}
	}
`, `
http://127.0.0.1:{{.HTTP}} {
	sse {
		heartbeat 50ms
		limit 1
	}
	reverse_proxy {{.Upstream}}
}
`)
	heapBase := heapInUse()
	goBase := runtime.NumGoroutine()
	beatsBefore := sumSeries(metrics.heartbeats)

	conn := dialSmallBuffer(t, fmt.Sprintf("127.0.0.1:%d", c.HTTP))
	fmt.Fprintf(conn, "GET /busy HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: text/event-stream\r\n\r\n", c.HTTP)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not reach the upstream")
	}

	// while the dead client's stream runs, the limit holds its slot
	client := h1Client()
	res := get(t, client, c.BaseURL()+"/quiet", "Accept", "text/event-stream")
	if body, _ := io.ReadAll(res.Body); !isRetryAnswer(body) {
		t.Fatalf("a second stream at limit 1 got %q, want the refusal's retry answer", body)
	}

	var endedAt time.Time
	var peakHeap uint64
	var peakGo int
	deadline := time.After(30 * time.Second)
wait:
	for {
		select {
		case endedAt = <-ended:
			break wait
		case <-deadline:
			t.Fatalf("the dead client's stream still runs 30s later (upstream wrote %d bytes)", upWrites.Load())
		case <-time.After(100 * time.Millisecond): // sampling while blocked
			peakHeap = max(peakHeap, heapInUse())
			peakGo = max(peakGo, runtime.NumGoroutine())
		}
	}
	blocked := endedAt.Sub(time.Unix(0, lastWrite.Load()))
	t.Logf("upstream wrote %.1f MiB; its last write completed %v before the stream ended; heap peak +%.1f MiB; goroutines %d → peak %d",
		float64(upWrites.Load())/(1<<20), blocked.Round(time.Millisecond),
		float64(int64(peakHeap)-int64(heapBase))/(1<<20), goBase, peakGo)
	if blocked > 12*time.Second {
		t.Errorf("the stream ended %v after the upstream could last write; want about write_idle (2s)", blocked)
	}
	if d := sumSeries(metrics.heartbeats) - beatsBefore; d != 0 {
		t.Errorf("%v heartbeats were written to a client that never read", d)
	}
	if delta := int64(peakHeap) - int64(heapBase); delta > 4<<20 {
		t.Errorf("heap in use grew by %.1f MiB while the client did not read", float64(delta)/(1<<20))
	}
	if peakGo > goBase+20 {
		t.Errorf("goroutines grew from %d to %d while the client did not read", goBase, peakGo)
	}

	// the slot is free again: a new stream is admitted
	waitFor(t, 10*time.Second, "a new stream admitted at limit 1", func() bool {
		res := get(t, client, c.BaseURL()+"/quiet", "Accept", "text/event-stream")
		defer res.Body.Close()
		line := make([]byte, len("data: hello"))
		_, err := io.ReadFull(res.Body, line)
		return err == nil && string(line) == "data: hello"
	})
	// the new stream's client hung up after its first event
	waitFor(t, 10*time.Second, "caddy_sse_streams_open back to 0", func() bool {
		return sumSeries(metrics.open) == 0
	})
}

// dialSmallBuffer connects with a small receive buffer, so a client that
// does not read stalls the server soon.
func dialSmallBuffer(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// A compressed stream that sse ends on purpose (max_duration here; the
// same holds for idle_timeout, shutdown and drain) ends without a retry
// field: plain bytes written into a gzip body would corrupt it, so the
// client's decoder would fail instead of seeing the stream end.
func TestEndKeepsCompressedStreamIntact(t *testing.T) {
	h := fuzzHandler(t, `{"max_duration": "20ms"}`)
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	io.WriteString(zw, "data: a\n\n")
	zw.Close()
	for _, tc := range []struct {
		name string
		body []byte // what the upstream sends before it waits
	}{
		{"before the first byte", nil},
		{"after a whole gzip member", zipped.Bytes()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newGuardedRecorder()
			req := fuzzRequest(http.MethodGet, true)
			err := h.ServeHTTP(rec, req, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Type", "text/event-stream")
				w.Header().Set("Content-Encoding", "gzip")
				w.WriteHeader(http.StatusOK)
				if _, err := w.Write(tc.body); err != nil {
					return err
				}
				<-r.Context().Done() // until max_duration ends the stream
				return nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			rec.mu.Lock()
			got := rec.rec.Body.Bytes()
			rec.mu.Unlock()
			if !bytes.Equal(got, tc.body) {
				t.Errorf("client got %q, upstream sent %q: nothing may be added to a compressed body", got, tc.body)
			}
		})
	}
}
