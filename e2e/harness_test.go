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

// The harness: a Caddy binary built with the module once per test binary
// and run as a subprocess per test, scripted event-stream upstreams, HTTP
// clients for every protocol, and a minimal SSE parser for assertions on
// raw bytes.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// caddyBin is the Caddy binary built by TestMain, with the sse module.
var caddyBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "caddy-sse-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	caddyBin = filepath.Join(dir, "caddy")
	// cmd/caddy imports the module: this is the binary xcaddy would build
	// built in the plugin's own module, with its go.mod: the build users get
	build := exec.Command("go", "build", "-C", "..", "-o", caddyBin, "./cmd/caddy")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building caddy:", err)
		return 1
	}
	return m.Run()
}

// inCI reports whether the tests run in CI, where a missing tool is a
// failure, not a reason to skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// requireTool returns the path of the named program, looked up in PATH and
// then in the given places. If it is missing, the test fails in CI and is
// skipped elsewhere.
func requireTool(t testing.TB, name string, also ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range also {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found; run e2e/install-deps.sh (Debian package %q)", name, name)
	if inCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// caddyProc is a Caddy subprocess. Its exported fields are the template
// data of the Caddyfile it runs.
type caddyProc struct {
	HTTP, HTTPS, Admin int    // ports
	Upstream           string // host:port of the test's upstream
	Dir                string // a directory for files the sites serve
	Storage            string // certificate storage

	cmd    *exec.Cmd
	logf   string        // Caddy's log file
	exited chan struct{} // closed when the process has exited
}

// BaseURL is the plain HTTP site address.
func (c *caddyProc) BaseURL() string { return fmt.Sprintf("http://127.0.0.1:%d", c.HTTP) }

// TLSURL is the HTTPS site address (tls internal).
func (c *caddyProc) TLSURL() string { return fmt.Sprintf("https://localhost:%d", c.HTTPS) }

// startCaddy runs the Caddy binary with the given site blocks, a Go
// template over caddyProc ({{.HTTP}}, {{.HTTPS}}, {{.Admin}},
// {{.Upstream}}, {{.Dir}}), and waits until it serves. It stops when the
// test ends; its log is printed if the test failed (or always with
// SSE_TEST_LOG=1).
func startCaddy(t testing.TB, upstream, sites string) *caddyProc {
	t.Helper()
	home := t.TempDir()
	c := &caddyProc{
		HTTP: freePort(t), HTTPS: freePort(t), Admin: freePort(t),
		Upstream: upstream, Dir: t.TempDir(), Storage: filepath.Join(home, "storage"),
		logf: filepath.Join(home, "caddy.log"), exited: make(chan struct{}),
	}
	text := `{
	admin localhost:{{.Admin}}
	http_port {{.HTTP}}
	https_port {{.HTTPS}}
	default_bind 127.0.0.1
	skip_install_trust
	local_certs
	storage file_system {{.Storage}}
	grace_period 1s
	log {
		level DEBUG
	}
}
` + sites
	var cfg bytes.Buffer
	if err := template.Must(template.New("Caddyfile").Parse(text)).Execute(&cfg, c); err != nil {
		t.Fatalf("Caddyfile template: %v", err)
	}
	cfgPath := filepath.Join(home, "Caddyfile")
	if err := os.WriteFile(cfgPath, cfg.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(c.logf)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(caddyBin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	c.cmd.Dir = home
	c.cmd.Env = append(os.Environ(),
		"HOME="+home,
		"XDG_DATA_HOME="+filepath.Join(home, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
	)
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	if err := c.cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("starting caddy: %v", err)
	}
	go func() {
		c.cmd.Wait()
		logFile.Close()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.stop(t)
		if t.Failed() || os.Getenv("SSE_TEST_LOG") != "" {
			b, _ := os.ReadFile(c.logf)
			t.Logf("Caddyfile:\n%s\ncaddy log:\n%s", cfg.Bytes(), tail(b, 12000))
		}
	})
	c.waitReady(t, strings.Contains(sites, "{{.HTTP}}"), strings.Contains(sites, "{{.HTTPS}}"))
	return c
}

// stop ends Caddy gracefully (SIGINT: grace_period 1s, then open streams
// are ended by the module), and kills it if it does not exit in time.
func (c *caddyProc) stop(t testing.TB) {
	select {
	case <-c.exited:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		t.Errorf("caddy did not exit 15s after SIGINT; killing it")
		c.cmd.Process.Kill()
		<-c.exited
	}
}

// waitReady polls until the admin endpoint answers with a config and the
// site ports accept connections (a TLS handshake with the internal
// certificate for HTTPS).
func (c *caddyProc) waitReady(t testing.TB, plain, secure bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	admin := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{}}
	defer admin.CloseIdleConnections()
	ready := func() error {
		res, err := admin.Get(fmt.Sprintf("http://localhost:%d/config/", c.Admin))
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || bytes.HasPrefix(body, []byte("null")) {
			return fmt.Errorf("admin /config/: %s %q", res.Status, body)
		}
		if plain {
			conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.HTTP), time.Second)
			if err != nil {
				return err
			}
			conn.Close()
		}
		if secure {
			d := &net.Dialer{Timeout: time.Second}
			conn, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.0.1:%d", c.HTTPS),
				&tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
			if err != nil {
				return err
			}
			conn.Close()
		}
		return nil
	}
	for {
		err := ready()
		if err == nil {
			return
		}
		select {
		case <-c.exited:
			b, _ := os.ReadFile(c.logf)
			t.Fatalf("caddy exited before it was ready: %v\n%s", c.cmd.ProcessState, tail(b, 8000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy not ready after 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition
	}
}

// tail returns the last n bytes of b.
func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// freePort returns a loopback port that was free for TCP and UDP a moment
// ago (HTTP/3 listens on the HTTPS port's UDP twin).
func freePort(t testing.TB) int {
	t.Helper()
	for range 50 {
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

// eventGap is how long the upstreams wait between events in tests that
// check each event arrives before the next is written: long enough for a
// loaded machine to deliver one, short enough to keep the tests quick.
const eventGap = 500 * time.Millisecond

// startUpstream serves handler on a free loopback port until the test ends.
func startUpstream(t testing.TB, handler http.HandlerFunc) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/favicon.ico" { // browsers ask; streams only here
			http.NotFound(w, r)
			return
		}
		handler(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() {
		// streams still open end with their requests' contexts
		srv.Close()
	})
	return l.Addr().String()
}

// event is one server-sent event as an upstream writes it.
type event struct {
	ID, Type, Data string
}

// encode renders ev in the SSE syntax, one data line per line of Data.
func (ev event) encode() string {
	var b strings.Builder
	if ev.ID != "" {
		b.WriteString("id: " + ev.ID + "\n")
	}
	if ev.Type != "" {
		b.WriteString("event: " + ev.Type + "\n")
	}
	for _, line := range strings.Split(ev.Data, "\n") {
		b.WriteString("data: " + line + "\n")
	}
	b.WriteString("\n")
	return b.String()
}

// streamHead writes an event-stream response header and flushes it.
func streamHead(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w).Flush()
}

// send writes s, flushes it and returns the time the flush completed,
// the moment the bytes left the upstream.
func send(w http.ResponseWriter, s string) (time.Time, error) {
	if _, err := io.WriteString(w, s); err != nil {
		return time.Time{}, err
	}
	err := http.NewResponseController(w).Flush()
	return time.Now(), err
}

// quiet waits d, or less if the request ends; it reports whether the
// request is still alive.
func quiet(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// writeLog records when an upstream wrote each event, by id.
type writeLog struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (l *writeLog) note(id string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.at == nil {
		l.at = make(map[string]time.Time)
	}
	l.at[id] = at
}

func (l *writeLog) get(id string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.at[id]
	return at, ok
}

// h1Client speaks HTTP/1.1 without compression and without proxies.
func h1Client() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableCompression: true}}
}

// h2Client speaks HTTP/2 over TLS to Caddy's internal certificate.
func h2Client() *http.Client {
	tr := &http.Transport{
		TLSClientConfig:    &tls.Config{InsecureSkipVerify: true},
		DisableCompression: true,
	}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	return &http.Client{Transport: tr}
}

// h3Transport speaks HTTP/3 (quic-go) to Caddy's internal certificate,
// with the given QUIC idle timeout (0: quic-go's default, 30s).
func h3Transport(t testing.TB, idle time.Duration) *http3.Transport {
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		QUICConfig:      &quic.Config{MaxIdleTimeout: idle},
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// waitH3 waits until Caddy answers HTTP/3 on url: its QUIC listener starts
// alongside the TCP one, and a first dial may race it.
func waitH3(t testing.TB, client *http.Client, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		res, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			cancel()
			if res.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %s", res.Status)
		}
		cancel()
		if time.Now().After(deadline) {
			t.Fatalf("no HTTP/3 answer from %s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond) // polling a condition
	}
}

// openStream sends a GET and fails the test unless it gets a 200. The
// request ends when the test does, or when cancel is called.
func openStream(t testing.TB, client *http.Client, url string, hdr ...string) (*http.Response, context.CancelFunc) {
	t.Helper()
	res, cancel := doRequest(t, client, http.MethodGet, url, nil, hdr...)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %s, want 200", url, res.Status)
	}
	return res, cancel
}

// doRequest sends a request with headers given as name, value pairs. The
// request ends when the test does, or when cancel is called.
func doRequest(t testing.TB, client *http.Client, method, url string, body io.Reader, hdr ...string) (*http.Response, context.CancelFunc) {
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
	return res, cancel
}

// chunk is a piece of a response body and when it arrived; the last one
// sent carries the error that ended the body (io.EOF for a clean end).
type chunk struct {
	data []byte
	at   time.Time
	err  error
}

// readChunks reads body in the background and sends every read as it
// arrives, then one chunk with the error that ended the body, then closes.
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
				ch <- chunk{at: time.Now(), err: err}
				return
			}
		}
	}()
	return ch
}

// received is an event and when the reader had its last byte.
type received struct {
	event
	at time.Time
}

// sseReader parses a stream of chunks into events, timestamped by the
// chunk that completed them, and counts comment lines (heartbeats).
type sseReader struct {
	ch       <-chan chunk
	pending  []byte
	cur      event
	hasData  bool
	events   []received
	comments []time.Time // when each comment line arrived
	raw      bytes.Buffer
	end      *chunk // the end of the body, once seen
}

func newSSEReader(body io.Reader) *sseReader { return &sseReader{ch: readChunks(body)} }

// feed parses the lines of one chunk. The test upstreams end lines with LF.
func (r *sseReader) feed(c chunk) {
	r.raw.Write(c.data)
	r.pending = append(r.pending, c.data...)
	for {
		i := bytes.IndexByte(r.pending, '\n')
		if i < 0 {
			return
		}
		line := string(r.pending[:i])
		r.pending = r.pending[i+1:]
		switch {
		case line == "":
			if r.hasData {
				r.events = append(r.events, received{event: r.cur, at: c.at})
			}
			r.cur, r.hasData = event{}, false
		case strings.HasPrefix(line, ":"):
			r.comments = append(r.comments, c.at)
		default:
			name, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch name {
			case "id":
				r.cur.ID = value
			case "event":
				r.cur.Type = value
			case "data":
				if r.hasData {
					r.cur.Data += "\n"
				}
				r.cur.Data += value
				r.hasData = true
			}
		}
	}
}

// next reads until the stream has n events or ends, or the timeout
// passes. It reports whether n events were read.
func (r *sseReader) next(n int, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for len(r.events) < n {
		if r.end != nil {
			return false
		}
		select {
		case c, ok := <-r.ch:
			if !ok {
				return false
			}
			if c.err != nil {
				r.end = &c
				continue
			}
			r.feed(c)
		case <-deadline.C:
			return false
		}
	}
	return true
}

// waitEnd reads until the body ends or the timeout passes, and returns
// the end (nil on timeout).
func (r *sseReader) waitEnd(timeout time.Duration) *chunk {
	r.next(int(^uint(0)>>1), timeout)
	return r.end
}

// isCleanEnd reports whether a body ended with io.EOF.
func isCleanEnd(c *chunk) bool { return c != nil && errors.Is(c.err, io.EOF) }

// commentsBetween counts the comment lines that arrived in (from, to).
func (r *sseReader) commentsBetween(from, to time.Time) int {
	n := 0
	for _, at := range r.comments {
		if at.After(from) && at.Before(to) {
			n++
		}
	}
	return n
}

// startDaemon starts cmd with its output in logPath and stops it when t
// ends: SIGTERM, then SIGKILL after 10 s. When t failed, it logs the end of
// each of the files in logs, named as the log line says. The channel it
// returns is closed when the program has exited.
func startDaemon(t testing.TB, name string, cmd *exec.Cmd, logPath string, logs ...string) <-chan struct{} {
	t.Helper()
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		out.Close()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			for _, p := range append([]string{logPath}, logs...) {
				b, _ := os.ReadFile(p)
				t.Logf("%s %s:\n%s", name, filepath.Base(p), tail(b, 8000))
			}
		}
	})
	return exited
}
