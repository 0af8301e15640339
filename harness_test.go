package caddysse

// A test harness that runs a real Caddy in this process from a Caddyfile,
// with real encode and reverse_proxy, on free loopback ports, plus clients
// for HTTP/1.1, HTTP/2 (TLS) and HTTP/3 (quic-go).

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/quic-go/quic-go/http3"
)

// testCaddy is a running in-process Caddy.
type testCaddy struct {
	HTTP, HTTPS, Admin int    // ports
	Upstream           string // host:port of the test's upstream, if any
	Storage            string // certificate storage directory
}

// BaseURL is the plain HTTP site address, http://127.0.0.1:<HTTP>.
func (c *testCaddy) BaseURL() string { return fmt.Sprintf("http://127.0.0.1:%d", c.HTTP) }

// TLSURL is the HTTPS site address, https://localhost:<HTTPS>.
func (c *testCaddy) TLSURL() string { return fmt.Sprintf("https://localhost:%d", c.HTTPS) }

// caddyMu keeps tests that run Caddy from overlapping: there is one Caddy
// per process.
var caddyMu sync.Mutex

// startCaddy runs Caddy with the given site blocks. The text is a Go
// template over testCaddy ({{.HTTP}}, {{.HTTPS}}, {{.Admin}},
// {{.Upstream}}); the harness adds the global options. Caddy stops when
// the test ends.
func startCaddy(t testing.TB, upstream, sites string) *testCaddy {
	t.Helper()
	caddyMu.Lock()
	c := &testCaddy{
		HTTP: freePort(t), HTTPS: freePort(t), Admin: freePort(t),
		Upstream: upstream, Storage: t.TempDir(),
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
		caddyMu.Unlock()
	})
	c.load(t, sites)
	if strings.Contains(sites, "{{.HTTPS}}") {
		c.waitForCert(t)
	}
	return c
}

// waitForCert waits until the HTTPS site has its internal certificate,
// which Caddy issues in the background after a load.
func (c *testCaddy) waitForCert(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", c.HTTPS),
			&tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate for localhost after 10s: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not a guess
	}
}

// load adapts and loads a new config on the running Caddy: a reload.
func (c *testCaddy) load(t testing.TB, sites string) {
	t.Helper()
	cfg := c.adapt(t, sites)
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading config: %v\n%s", err, cfg)
	}
}

// adapt turns the site blocks into JSON, with the harness's globals.
func (c *testCaddy) adapt(t testing.TB, sites string) []byte {
	t.Helper()
	return c.adaptWithGlobals(t, "", sites)
}

// loadWithGlobals reloads c with extra global options (inside the global
// block) besides the harness's own.
func (c *testCaddy) loadWithGlobals(t testing.TB, globals, sites string) {
	t.Helper()
	cfg := c.adaptWithGlobals(t, globals, sites)
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading config: %v\n%s", err, cfg)
	}
}

// adaptWithGlobals is adapt with extra global options.
func (c *testCaddy) adaptWithGlobals(t testing.TB, globals, sites string) []byte {
	t.Helper()
	logOutput := "discard"
	if os.Getenv("SSE_TEST_LOG") != "" {
		logOutput = "stderr"
	}
	text := `{
	admin localhost:{{.Admin}}
	http_port {{.HTTP}}
	https_port {{.HTTPS}}
	skip_install_trust
	local_certs
	storage file_system {{.Storage}}
	grace_period 2s
	log {
		output ` + logOutput + `
		level DEBUG
	}
` + globals + `
}
` + sites
	var buf bytes.Buffer
	if err := template.Must(template.New("caddyfile").Parse(text)).Execute(&buf, c); err != nil {
		t.Fatalf("caddyfile template: %v", err)
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	cfg, warnings, err := adapter.Adapt(buf.Bytes(), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v\n%s", err, buf.String())
	}
	for _, w := range warnings {
		t.Logf("caddyfile warning: %s", w.String())
	}
	return cfg
}

// freePort returns a loopback TCP port that was free a moment ago, and
// checks the same UDP port is free too (HTTP/3 listens on it).
func freePort(t testing.TB) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		u.Close()
		return port
	}
	t.Fatal("no free port")
	return 0
}

// h1Client speaks HTTP/1.1 and never asks for or decodes compression, so
// tests see the bytes on the wire.
func h1Client() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableCompression: true, ForceAttemptHTTP2: false}}
}

// h2Client speaks HTTP/2 over TLS to Caddy's internal certificate.
func h2Client() *http.Client {
	tr := &http.Transport{
		TLSClientConfig:    &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2:  true,
		DisableCompression: true,
	}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	return &http.Client{Transport: tr}
}

// h3Client speaks HTTP/3 (quic-go) to Caddy's internal certificate.
func h3Client(t testing.TB) *http.Client {
	tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr}
}

// chunk is a piece of a response body and when it arrived.
type chunk struct {
	data []byte
	at   time.Time
}

// readChunks reads body in the background and sends every read, as it
// arrives, until EOF or an error; the channel closes then.
func readChunks(body io.Reader) <-chan chunk {
	ch := make(chan chunk, 1024)
	go func() {
		defer close(ch)
		buf := make([]byte, 64<<10)
		for {
			n, err := body.Read(buf)
			if n > 0 {
				ch <- chunk{data: bytes.Clone(buf[:n]), at: time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

// readUntil reads chunks until the bytes received contain want, or the
// timeout passes; it returns everything received.
func readUntil(t testing.TB, ch <-chan chunk, got *bytes.Buffer, want string, timeout time.Duration) bool {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !strings.Contains(got.String(), want) {
		select {
		case c, ok := <-ch:
			if !ok {
				return strings.Contains(got.String(), want)
			}
			got.Write(c.data)
		case <-deadline.C:
			return false
		}
	}
	return true
}

// get sends a GET with the given headers and fails the test on error.
func get(t testing.TB, client *http.Client, url string, hdr ...string) *http.Response {
	t.Helper()
	return do(t, client, http.MethodGet, url, nil, hdr...)
}

// do sends a request with headers given as name, value pairs.
func do(t testing.TB, client *http.Client, method, url string, body io.Reader, hdr ...string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("%s %s: %v", method, url, err)
	}
	t.Cleanup(func() {
		cancel()
		res.Body.Close()
	})
	return res
}

// startUpstream serves handler on a free loopback port until the test ends.
func startUpstream(t testing.TB, handler http.HandlerFunc) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Close()
	})
	return l.Addr().String()
}

// streamHead writes an event-stream response header and flushes it.
func streamHead(w http.ResponseWriter, extra ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	for i := 0; i+1 < len(extra); i += 2 {
		w.Header().Set(extra[i], extra[i+1])
	}
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w).Flush()
}

// send writes s and flushes it.
func send(w http.ResponseWriter, s string) error {
	if _, err := io.WriteString(w, s); err != nil {
		return err
	}
	return http.NewResponseController(w).Flush()
}

// provisionTestHandler provisions and validates h outside a Caddy config,
// as Caddy would, and cleans it up when the test ends.
func provisionTestHandler(t testing.TB, h *Handler) *Handler {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("provision: %v", err)
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	if err := h.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	return h
}
