package caddysse

import (
	"bytes"
	"net/http"
	"testing"
	"time"
)

// The harness serves a stream through encode + sse + reverse_proxy over
// HTTP/1.1, HTTP/2 and HTTP/3, uncompressed.
func TestHarnessStreamsOverEveryProtocol(t *testing.T) {
	release := make(chan struct{})
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		streamHead(w)
		send(w, "data: one\n\n")
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	c := startCaddy(t, up, `
http://127.0.0.1:{{.HTTP}} {
	encode gzip zstd
	sse
	reverse_proxy {{.Upstream}}
}
https://localhost:{{.HTTPS}} {
	tls internal
	encode gzip zstd
	sse
	reverse_proxy {{.Upstream}}
}
`)
	defer close(release)
	for _, tc := range []struct {
		name   string
		client *http.Client
		url    string
		proto  int
	}{
		{"h1", h1Client(), c.BaseURL(), 1},
		{"h2", h2Client(), c.TLSURL(), 2},
		{"h3", h3Client(t), c.TLSURL(), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := get(t, tc.client, tc.url+"/", "Accept-Encoding", "gzip, zstd")
			if res.ProtoMajor != tc.proto {
				t.Fatalf("proto = %s, want major %d", res.Proto, tc.proto)
			}
			if ce := res.Header.Get("Content-Encoding"); ce != "" {
				t.Errorf("Content-Encoding = %q, want none", ce)
			}
			var got bytes.Buffer
			if !readUntil(t, readChunks(res.Body), &got, "data: one\n\n", 5*time.Second) {
				t.Fatalf("body = %q, want the first event", got.String())
			}
		})
	}
}
