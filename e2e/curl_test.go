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
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// curlResult is what one curl run produced.
type curlResult struct {
	code    int         // exit code
	body    []byte      // stdout
	stderr  string      // stderr
	header  http.Header // the final response's header fields, names canonical
	status  string      // the status line
	elapsed time.Duration
}

// runCurl runs curl with args against url, dumping the response header
// to a file, and returns what it produced. Proxies from the environment
// are ignored.
func runCurl(t *testing.T, bin, url string, args ...string) curlResult {
	t.Helper()
	dump := filepath.Join(t.TempDir(), "headers")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := append([]string{"-sS", "--noproxy", "*", "--max-time", "20", "-D", dump}, args...)
	cmd := exec.CommandContext(ctx, bin, append(all, url)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := curlResult{body: stdout.Bytes(), stderr: stderr.String(), elapsed: time.Since(start), header: make(http.Header)}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("running curl: %v", err)
	}
	raw, _ := os.ReadFile(dump)
	// the dump holds every response's header block; keep the last one
	for _, line := range strings.Split(strings.ReplaceAll(string(raw), "\r\n", "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "HTTP/"):
			res.status, res.header = line, make(http.Header)
		case strings.Contains(line, ":"):
			k, v, _ := strings.Cut(line, ":")
			res.header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
	}
	return res
}

// withoutComments drops comment lines (heartbeats) from an event stream,
// whose timing varies between runs.
func withoutComments(b []byte) string {
	var out []string
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if !strings.HasPrefix(line, ":") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}

// TestCurlHTTP2 runs curl (nghttp2) over HTTP/2 against a stream whose
// response carries hop-by-hop fields added by header_down and by header.
// With sse, curl gets the whole stream and exits 0, and --compressed
// changes nothing on the stream (no Content-Encoding, the same events).
// Without sse, the same response is a protocol error in curl: the control.
func TestCurlHTTP2(t *testing.T) {
	curl := requireTool(t, "curl", "/usr/bin/curl")
	var want strings.Builder
	evs := []event{
		{ID: "1", Data: "one"},
		{ID: "2", Type: "update", Data: "two\nlines"},
		{ID: "3", Data: strings.Repeat("x", 2000)}, // long enough that encode would compress it
	}
	for _, ev := range evs {
		want.WriteString(ev.encode())
	}
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		streamHead(w)
		for _, ev := range evs {
			if _, err := send(w, ev.encode()); err != nil {
				return
			}
			if !quiet(r, 50*time.Millisecond) {
				return
			}
		}
	})
	c := startCaddy(t, up, `
https://localhost:{{.HTTPS}} {
	tls internal
	header Keep-Alive "timeout=5"
	encode gzip zstd
	handle /big.txt {
		root * {{.Dir}}
		file_server
	}
	handle /raw/* {
		reverse_proxy {{.Upstream}} {
			header_down Proxy-Connection "keep-alive"
			header_down Upgrade "h2c"
		}
	}
	handle {
		sse {
			heartbeat 1s
		}
		reverse_proxy {{.Upstream}} {
			header_down Proxy-Connection "keep-alive"
			header_down Upgrade "h2c"
		}
	}
}`)
	if err := os.WriteFile(filepath.Join(c.Dir, "big.txt"), bytes.Repeat([]byte("compressible text\n"), 500), 0o644); err != nil {
		t.Fatal(err)
	}
	h2 := []string{"-N", "--http2", "-k"}

	var plain curlResult
	t.Run("Stream", func(t *testing.T) {
		plain = runCurl(t, curl, c.TLSURL()+"/events", h2...)
		if plain.code != 0 {
			t.Fatalf("curl exited %d: %s", plain.code, plain.stderr)
		}
		if !strings.HasPrefix(plain.status, "HTTP/2 200") {
			t.Errorf("status line %q, want HTTP/2 200", plain.status)
		}
		for _, name := range []string{"Keep-Alive", "Proxy-Connection", "Upgrade", "Connection", "Content-Encoding"} {
			if v := plain.header.Get(name); v != "" {
				t.Errorf("stream response has %s: %q, want none", name, v)
			}
		}
		if got := withoutComments(plain.body); got != want.String() {
			t.Errorf("curl got\n%q\nwant the upstream's events\n%q", got, want.String())
		}
	})

	t.Run("CompressedChangesNothing", func(t *testing.T) {
		if plain.header == nil {
			t.Fatal("the Stream case did not get a response to compare with")
		}
		comp := runCurl(t, curl, c.TLSURL()+"/events", append(h2, "--compressed")...)
		if comp.code != 0 {
			t.Fatalf("curl --compressed exited %d: %s", comp.code, comp.stderr)
		}
		if v := comp.header.Get("Content-Encoding"); v != "" {
			t.Errorf("stream compressed (%s) for curl --compressed, want identity", v)
		}
		if got := withoutComments(comp.body); got != withoutComments(plain.body) {
			t.Errorf("curl --compressed got\n%q\nwant the same bytes as without\n%q", got, withoutComments(plain.body))
		}
		// encode is active on this site: a plain file is compressed
		// (over HTTP/1.1, where the site's Keep-Alive is legal)
		file := runCurl(t, curl, c.TLSURL()+"/big.txt", "--http1.1", "-k", "--compressed")
		if v := file.header.Get("Content-Encoding"); file.code != 0 || v == "" {
			t.Errorf("big.txt: curl exited %d, Content-Encoding %q; want 0 and compressed (encode must be on for the check above to mean anything)",
				file.code, v)
		}
	})

	t.Run("WithoutSSEFails", func(t *testing.T) {
		raw := runCurl(t, curl, c.TLSURL()+"/raw/events", h2...)
		if raw.code == 0 {
			t.Errorf("curl exited 0 on a stream with hop-by-hop fields over HTTP/2 without sse; the control shows nothing")
		}
		t.Logf("without sse: curl exit %s, %s", strconv.Itoa(raw.code), strings.TrimSpace(raw.stderr))
	})
}
