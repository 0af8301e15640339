package caddysse

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// One GET /sse/streams, and one GET /sse/zones, with 10,000 open streams
// (each counted under its own key in one zone): how long the admin API
// takes to answer, the registry's locks being held only to copy pointers.
// Issue 14, item 1.
func BenchmarkAdminStreams(b *testing.B) {
	benchAdmin(b, "/sse/streams", adminSSE{}.handleStreams)
}

// The part of a /sse/streams call that reads the registry and the streams'
// counters, without encoding: the shards' locks are taken within it, each
// only to copy its pointers.
func BenchmarkAdminStreamsSnapshot(b *testing.B) {
	benchAdmin(b, "/sse/streams", func(http.ResponseWriter, *http.Request) error {
		statuses(liveStreams)
		return nil
	})
}

func BenchmarkAdminZones(b *testing.B) {
	benchAdmin(b, "/sse/zones", adminSSE{}.handleZones)
}

func benchAdmin(b *testing.B, path string, handle func(http.ResponseWriter, *http.Request) error) {
	const streams = 10_000
	h, _ := limHandler(b, &Handler{Limits: []Limit{{Max: 1, Per: "{http.request.header.X-Key}"}}, Zone: "bench"})
	sws := make([]*streamWriter, streams)
	for i := range sws {
		req := httptest.NewRequest(http.MethodGet, fmt.Sprintf("http://tenant-%d.example/events/%d", i%100, i), nil)
		req.Header.Set("X-Key", fmt.Sprint(i))
		req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), httptest.NewRecorder(), nil)
		sw := &streamWriter{h: h, req: req, start: time.Now(), frame: stream.FrameLine, cancel: func(error) {}}
		if ref := admitted(sw); ref != nil {
			b.Fatalf("stream %d refused", i)
		}
		sw.mode = modeStream
		sw.out.init(httptest.NewRecorder())
		sw.st.Open(&sw.out, &h.streams.set, stream.Options{Start: sw.start, Frame: sw.frame, Cancel: sw.cancel, Label: sw.describe()})
		liveStreams.Add(&sw.st, h.streams.group)
		sws[i] = sw
	}
	b.Cleanup(func() {
		for _, sw := range sws {
			sw.finish(stream.EndUpstream)
		}
	})
	req := httptest.NewRequest(http.MethodGet, path, nil)
	var size int
	b.ResetTimer()
	for b.Loop() {
		rec := httptest.NewRecorder()
		if err := handle(rec, req); err != nil {
			b.Fatal(err)
		}
		size = rec.Body.Len()
	}
	b.ReportMetric(float64(size), "bytes/answer")
}
