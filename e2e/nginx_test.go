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
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"text/template"
	"time"
)

// nginxConf is a minimal nginx in front of Caddy, with nginx's defaults for
// proxying (proxy_buffering on, proxy_http_version 1.0) under /h10/, HTTP/1.1
// to Caddy under /h11/, and a short proxy_read_timeout. Every path nginx
// writes is in its own directory.
const nginxConf = `{{if .Root}}user root;
{{end}}worker_processes 1;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log info;
events {
	worker_connections 64;
}
http {
	access_log {{.Dir}}/access.log;
	client_body_temp_path {{.Dir}}/client_body;
	proxy_temp_path {{.Dir}}/proxy;
	fastcgi_temp_path {{.Dir}}/fastcgi;
	uwsgi_temp_path {{.Dir}}/uwsgi;
	scgi_temp_path {{.Dir}}/scgi;
	server {
		listen 127.0.0.1:{{.Port}};
		proxy_buffering on;
		proxy_read_timeout 3s;
		# nginx's default, proxy_http_version 1.0
		location /h10/ {
			proxy_pass http://{{.Backend}}/;
		}
		location /h11/ {
			proxy_pass http://{{.Backend}}/;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
`

// nginxProc is an nginx subprocess proxying to a backend.
type nginxProc struct {
	Dir     string
	Port    int
	Backend string // host:port
	Root    bool   // running as root: keep workers as root to use Dir
}

// URL is the address nginx listens on.
func (n *nginxProc) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", n.Port) }

// startNginx runs Debian's nginx in the foreground, in front of backend,
// until the test ends. It fails in CI, and skips elsewhere, without nginx.
func startNginx(t testing.TB, backend string) *nginxProc {
	t.Helper()
	bin := requireTool(t, "nginx", "/usr/sbin/nginx")
	n := &nginxProc{Dir: t.TempDir(), Port: freePort(t), Backend: backend, Root: os.Geteuid() == 0}
	conf := filepath.Join(n.Dir, "nginx.conf")
	f, err := os.Create(conf)
	if err != nil {
		t.Fatal(err)
	}
	err = template.Must(template.New("nginx.conf").Parse(nginxConf)).Execute(f, n)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", n.Dir, "-c", conf, "-g", "daemon off;")
	// SIGTERM is nginx's fast shutdown
	exited := startDaemon(t, "nginx", cmd, filepath.Join(n.Dir, "stderr.log"), filepath.Join(n.Dir, "error.log"))
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.Port), time.Second)
		if err == nil {
			conn.Close()
			return n
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(n.Dir, "stderr.log"))
			t.Fatalf("nginx exited: %s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx not listening after 20s: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition
	}
}

// TestNginxInFront runs Debian's nginx in front of Caddy, with nginx's
// proxy defaults (proxy_buffering on, proxy_http_version 1.0) and with
// proxy_http_version 1.1, both with proxy_read_timeout 3s. With sse, events
// pass nginx one by one and a 10s quiet stretch survives, because sse sends
// X-Accel-Buffering: no (nginx stops buffering) and heartbeats (nginx's
// read timeout never fires). Without sse, the same chains cut the stream
// at the read timeout, and nginx's defaults hold the events back until
// then: the controls prove that the sse cases pass because of sse.
//
// nginx 1.22 buffers only a response whose length it cannot tell: an
// HTTP/1.0 one. To an HTTP/1.1 request Caddy answers chunked, and nginx
// passes each complete chunk on at once, buffering or not.
func TestNginxInFront(t *testing.T) {
	const quietFor = 10 * time.Second
	var (
		mu     sync.Mutex
		writes = make(map[string]*writeLog) // per case
	)
	logFor := func(name string) *writeLog {
		mu.Lock()
		defer mu.Unlock()
		if writes[name] == nil {
			writes[name] = new(writeLog)
		}
		return writes[name]
	}
	upstream := func(w http.ResponseWriter, r *http.Request) {
		log := logFor(r.URL.Query().Get("case"))
		streamHead(w)
		for i := 1; i <= 5; i++ {
			gap := eventGap
			if i == 4 {
				gap = quietFor
			}
			if i > 1 && !quiet(r, gap) {
				return
			}
			id := strconv.Itoa(i)
			at, err := send(w, event{ID: id, Data: "event " + id}.encode())
			if err != nil {
				return
			}
			log.note(id, at)
		}
		// the response ends here, cleanly
	}
	c := startCaddy(t, startUpstream(t, upstream), `
http://127.0.0.1:{{.HTTP}} {
	handle /raw/* {
		reverse_proxy {{.Upstream}}
	}
	handle {
		sse {
			heartbeat 1s
		}
		reverse_proxy {{.Upstream}}
	}
}`)
	n := startNginx(t, fmt.Sprintf("127.0.0.1:%d", c.HTTP))

	for _, tc := range []struct {
		name     string
		path     string // through nginx to Caddy
		sse      bool
		buffered bool // nginx buffers this response without sse
	}{
		{"HTTP1.0/WithSSE", "/h10/events", true, true},
		{"HTTP1.1/WithSSE", "/h11/events", true, false},
		{"HTTP1.0/WithoutSSE", "/h10/raw/events", false, true},
		{"HTTP1.1/WithoutSSE", "/h11/raw/events", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // the quiet stretches overlap
			writes := logFor(tc.name)
			res, _ := openStream(t, h1Client(), n.URL()+tc.path+"?case="+tc.name, "Accept", "text/event-stream")
			r := newSSEReader(res.Body)
			if tc.sse {
				checkStreamSurvives(t, r, writes, quietFor)
			} else {
				checkStreamFails(t, r, writes, quietFor, tc.buffered)
			}
		})
	}
}

// checkStreamSurvives fails unless all five events came through, each
// before the next was written, with heartbeats in the quiet stretch
// between events 3 and 4, and the stream ended cleanly.
func checkStreamSurvives(t *testing.T, r *sseReader, writes *writeLog, quietFor time.Duration) {
	t.Helper()
	if !r.next(5, quietFor+20*time.Second) {
		t.Fatalf("got %d events through the hop, want 5; end %v; body %q", len(r.events), r.end, r.raw.String())
	}
	if end := r.waitEnd(10 * time.Second); !isCleanEnd(end) {
		t.Errorf("stream ended with %v, want a clean end after the last event", end)
	}
	for i, ev := range r.events {
		if want := strconv.Itoa(i + 1); ev.ID != want {
			t.Fatalf("event %d has id %q, want %s", i, ev.ID, want)
		}
		if i+1 < len(r.events) {
			next, _ := writes.get(strconv.Itoa(i + 2))
			if !ev.at.Before(next) {
				t.Errorf("event %s arrived %v after the upstream wrote the next: the hop buffered it", ev.ID, ev.at.Sub(next))
			}
		}
	}
	w3, _ := writes.get("3")
	w4, _ := writes.get("4")
	if n := r.commentsBetween(w3, w4); n < 5 {
		t.Errorf("got %d heartbeats through the hop in the %v quiet stretch, want >= 5", n, quietFor)
	}
}

// checkStreamFails fails unless nginx cut the stream at its read timeout,
// about 3s after the last write, before the quiet stretch ended; and, if
// buffered, unless the first event arrived only after the second was
// written.
func checkStreamFails(t *testing.T, r *sseReader, writes *writeLog, quietFor time.Duration, buffered bool) {
	t.Helper()
	end := r.waitEnd(quietFor + 20*time.Second)
	if end == nil {
		t.Fatalf("stream did not end; events %d", len(r.events))
	}
	w2, _ := writes.get("2")
	w3, _ := writes.get("3")
	if _, ok := writes.get("4"); ok || len(r.events) > 3 {
		t.Errorf("stream survived the %v quiet stretch (%d events): the hop's read timeout did not cut it", quietFor, len(r.events))
	}
	if cut := end.at.Sub(w3); cut < 2*time.Second || cut > quietFor-time.Second {
		t.Errorf("stream ended %v after the last write, want about 3s (proxy_read_timeout)", cut)
	}
	if buffered && len(r.events) > 0 && r.events[0].at.Before(w2) {
		t.Errorf("event 1 arrived before event 2 was written: the hop did not buffer, the control shows nothing")
	}
	var delays []string
	for _, ev := range r.events {
		w, _ := writes.get(ev.ID)
		delays = append(delays, fmt.Sprintf("%s:%v", ev.ID, ev.at.Sub(w).Round(time.Millisecond)))
	}
	t.Logf("without sse: events (id:delay) %v; stream cut %v after the last write (%v)",
		delays, end.at.Sub(w3).Round(time.Millisecond), end.err)
}
