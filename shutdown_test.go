package caddysse

// Tests of what happens to open streams when their server shuts down:
// when the Caddy process exits, and when a reload replaces the config.
// Issue 5; DESIGN.md section 6.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildCaddy builds ./cmd/caddy (Caddy with this module) into a temporary
// directory and returns the binary's path.
func buildCaddy(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to build caddy: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "caddy")
	cmd := exec.Command(gobin, "build", "-o", bin, "./cmd/caddy")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/caddy: %v\n%s", err, out)
	}
	return bin
}

// caddyProcess is Caddy running as a child process.
type caddyProcess struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	output *bytes.Buffer // stdout and stderr, for failure messages
	HTTP   int
	Log    string // Caddy's log, JSON at DEBUG level
}

// startCaddyProcess runs bin with a Caddyfile made of default global
// options (no grace_period: Caddy's default, eternal) and site, where %d
// stands for the HTTP port. It returns once the site accepts connections.
// The process is killed when the test ends, if it is still running.
func startCaddyProcess(t *testing.T, bin, site string) *caddyProcess {
	t.Helper()
	dir := t.TempDir()
	p := &caddyProcess{
		exited: make(chan struct{}), output: new(bytes.Buffer),
		HTTP: freePort(t), Log: filepath.Join(dir, "caddy.log"),
	}
	caddyfile := fmt.Sprintf(`{
	admin localhost:%d
	http_port %d
	https_port %d
	auto_https off
	storage file_system %s
	log {
		output file %s
		format json
		level DEBUG
	}
}
`, freePort(t), p.HTTP, freePort(t), filepath.Join(dir, "storage"), p.Log) + fmt.Sprintf(site, p.HTTP)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	p.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	p.cmd.Stdout, p.cmd.Stderr = lockedWriter(p.output)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.HTTP))
		if err == nil {
			conn.Close()
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("caddy exited at start:\n%s", p.output)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not listen within 30s:\n%s", p.output)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not a guess
	}
}

// lockedWriter returns one writer, safe for the two goroutines of
// exec.Cmd's stdout and stderr copies, twice.
func lockedWriter(b *bytes.Buffer) (io.Writer, io.Writer) {
	w := &syncWriter{b: b}
	return w, w
}

type syncWriter struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// openStream is a client stream kept open in the background.
type openStream struct {
	started chan struct{} // closed once the first event arrived
	done    chan struct{} // closed when the body has ended
	mu      sync.Mutex
	body    bytes.Buffer // all of the body, guarded by mu until done
	err     error        // nil for a clean end (io.EOF); read after done
	endedAt time.Time
}

// openStreams opens n EventSource-style streams to url over HTTP/1.1, each
// on its own connection, and returns once every one has received firstEvent.
func openStreams(t *testing.T, n int, url, firstEvent string) []*openStream {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{
		DisableCompression:  true,
		MaxIdleConnsPerHost: n,
	}}
	t.Cleanup(client.CloseIdleConnections)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	streams := make([]*openStream, n)
	for i := range streams {
		s := &openStream{started: make(chan struct{}), done: make(chan struct{})}
		streams[i] = s
		go s.run(ctx, client, url, firstEvent)
	}
	timeout := time.After(60 * time.Second)
	for i, s := range streams {
		select {
		case <-s.started:
		case <-s.done:
			t.Fatalf("stream %d ended before its first event: %v, %q", i, s.err, s.body.String())
		case <-timeout:
			t.Fatalf("stream %d got no first event within 60s", i)
		}
	}
	return streams
}

func (s *openStream) run(ctx context.Context, client *http.Client, url, firstEvent string) {
	defer close(s.done)
	defer func() { s.endedAt = time.Now() }()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		s.err = err
		return
	}
	req.Header.Set("Accept", "text/event-stream")
	res, err := client.Do(req)
	if err != nil {
		s.err = err
		return
	}
	defer res.Body.Close()
	buf := make([]byte, 4096)
	started := false
	for {
		n, err := res.Body.Read(buf)
		s.mu.Lock()
		s.body.Write(buf[:n])
		got := !started && strings.Contains(s.body.String(), firstEvent)
		s.mu.Unlock()
		if got {
			started = true
			close(s.started)
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			s.err = err
			return
		}
	}
}

// waitEnded waits until every stream has ended, for at most timeout.
func waitEnded(t *testing.T, streams []*openStream, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for i, s := range streams {
		select {
		case <-s.done:
		case <-deadline:
			t.Fatalf("stream %d (and maybe more) still open after %v", i, timeout)
		}
	}
}

// holdingUpstream sends one event on each request and then holds the
// stream open until the request goes away.
func holdingUpstream(w http.ResponseWriter, r *http.Request) {
	streamHead(w)
	send(w, "id: 1\ndata: hello\n\n")
	<-r.Context().Done()
}

// A Caddy process with 200 open streams and the default (eternal)
// grace_period exits within 5s of SIGTERM, because sse ends every stream
// with a retry field and a clean end of the response; without sse the same
// process does not exit (the reason it works is sse).
func TestShutdownEndsStreams(t *testing.T) {
	bin := buildCaddy(t)
	up := startUpstream(t, holdingUpstream)
	for _, tc := range []struct {
		name     string
		site     string
		streams  int
		wantExit bool
	}{
		{
			name:     "with sse",
			site:     "http://127.0.0.1:%d {\n\tsse\n\treverse_proxy " + up + "\n}\n",
			streams:  200,
			wantExit: true,
		},
		{
			name:    "without sse",
			site:    "http://127.0.0.1:%d {\n\treverse_proxy " + up + "\n}\n",
			streams: 10,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startCaddyProcess(t, bin, tc.site)
			streams := openStreams(t, tc.streams, fmt.Sprintf("http://127.0.0.1:%d/events", p.HTTP), "data: hello\n\n")

			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			const within = 5 * time.Second
			if !tc.wantExit {
				select {
				case <-p.exited:
					t.Fatalf("caddy without sse exited %v after SIGTERM; the control shows nothing", time.Since(sent))
				case <-time.After(within):
				}
				return // the cleanup kills it
			}
			select {
			case <-p.exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("caddy still running 30s after SIGTERM; output:\n%s", p.output)
			}
			took := time.Since(sent)
			if took > within {
				t.Errorf("caddy exited %v after SIGTERM, want within %v", took, within)
			}
			t.Logf("caddy exited %v after SIGTERM with %d open streams", took, len(streams))
			waitEnded(t, streams, 10*time.Second)
			bad := 0
			for i, s := range streams {
				body := s.body.String()
				rest, hello := strings.CutPrefix(body, "id: 1\ndata: hello\n\n")
				if s.err != nil || !hello || !retryOnly.MatchString(rest) {
					if bad++; bad <= 5 {
						t.Errorf("stream %d: body %q, end %v; want the event, then a retry field, then a clean EOF", i, body, s.err)
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d streams did not end with a retry field and a clean EOF", bad, len(streams))
			}
			// and Caddy logged each end, with the reason
			reasons := make(map[string]int)
			for _, e := range readLog(t, p.Log) {
				if e.Logger == "http.handlers.sse" && e.Msg == "stream ended" {
					var f struct{ Reason string }
					json.Unmarshal([]byte(e.raw), &f)
					reasons[f.Reason]++
				}
			}
			if reasons["shutdown"] != len(streams) || len(reasons) != 1 {
				t.Errorf("\"stream ended\" log lines by reason: %v, want %d for shutdown", reasons, len(streams))
			}
		})
	}
}

// By default a reload leaves open streams on the old config, and they keep
// receiving events. With drain_on_reload, the old config's streams end
// within the window, each with a retry field and a clean end, spread over
// the window rather than all at once.
func TestReloadDrain(t *testing.T) {
	up := newEventUpstream(100 * time.Millisecond)
	addr := startUpstream(t, up.ServeHTTP)
	const window = 2 * time.Second
	sites := func(drain bool, version int) string {
		opt := ""
		if drain {
			opt = "\t\tdrain_on_reload 2s\n"
		}
		return fmt.Sprintf(`
http://127.0.0.1:{{.HTTP}} {
	header X-Config-Version %d
	sse {
		retry 1s
%s	}
	reverse_proxy {{.Upstream}}
}
`, version, opt)
	}
	c := startCaddy(t, addr, sites(false, 0))
	const n = 20

	t.Run("without drain streams stay open", func(t *testing.T) {
		c.load(t, sites(false, 1))
		streams := openStreams(t, n, c.BaseURL()+"/events", "data: event 1\n\n")
		c.load(t, sites(false, 2))
		// each stream must go on through a time longer than a drain
		// window, receiving events from the old config's handler
		want := "data: event 30\n\n" // about 3s after the stream began
		deadline := time.After(20 * time.Second)
		for i, s := range streams {
			for !strings.Contains(bodyNow(s), want) {
				select {
				case <-s.done:
					t.Fatalf("stream %d ended after the reload: %v, body ends %q", i, s.err, tail(bodyNow(s)))
				case <-deadline:
					t.Fatalf("stream %d did not reach %q within 20s", i, want)
				case <-time.After(50 * time.Millisecond): // polling the body, not a guess
				}
			}
		}
		for i, s := range streams {
			if strings.Contains(bodyNow(s), "retry:") {
				t.Errorf("stream %d got a retry field without drain_on_reload", i)
			}
		}
	})

	t.Run("drain_on_reload 2s", func(t *testing.T) {
		c.load(t, sites(true, 3))
		streams := openStreams(t, n, c.BaseURL()+"/events", "data: event 1\n\n")
		reloaded := time.Now()
		c.load(t, sites(true, 4))
		const slack = 1500 * time.Millisecond
		waitEnded(t, streams, window+slack+5*time.Second)
		first, last := streams[0].endedAt, streams[0].endedAt
		for i, s := range streams {
			if s.err != nil {
				t.Errorf("stream %d ended with %v, want a clean EOF", i, s.err)
				continue
			}
			eventIDs(t, checkEndsWithRetry(t, s.body.String(), time.Second))
			if after := s.endedAt.Sub(reloaded); after > window+slack {
				t.Errorf("stream %d ended %v after the reload, want within %v", i, after, window+slack)
			}
			if s.endedAt.Before(first) {
				first = s.endedAt
			}
			if s.endedAt.After(last) {
				last = s.endedAt
			}
		}
		spread := last.Sub(first)
		t.Logf("streams ended from %v to %v after the reload", first.Sub(reloaded), last.Sub(reloaded))
		if spread < window*3/10 {
			t.Errorf("streams ended within %v of each other, want spread over the %v window (more than %v)", spread, window, window*3/10)
		}
	})
}

var retryOnly = regexp.MustCompile(`^retry: \d+\n\n?$`)

// bodyNow returns what a stream has received so far.
func bodyNow(s *openStream) string {
	select {
	case <-s.done:
		return s.body.String()
	default:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.body.String()
}
