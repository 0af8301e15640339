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

package caddysse

// What a Redis zone costs, against a real redis-server on loopback. Run:
//
//	go test -run '^$' -bench 'Redis' -benchtime 3000x .
//
// (BENCHMARKS.md, "Limits across instances", has the figures.)

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/testredis"

	"go.uber.org/zap"
)

// BenchmarkRedisAdmission times one EventSource request through sse, from
// admission to release, with a local zone and with a Redis zone, and
// reports p50 and p99.
func BenchmarkRedisAdmission(b *testing.B) {
	rs := testredis.Start(b)
	for _, store := range []string{"local", "redis"} {
		b.Run(store, func(b *testing.B) {
			h := benchRedisHandler(b, rs, store)
			next := func(w http.ResponseWriter, r *http.Request) error { return limStreamNext(w, r) }
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				req := httptest.NewRequest(http.MethodGet, "http://example.com/events", nil)
				req.Header.Set("Accept", "text/event-stream")
				req.Header.Set("X-Key", strconv.Itoa(i%100))
				start := time.Now()
				if _, err := limServe(h, req, next); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			if h.lim.redis != nil && h.lim.redis.Mode() != "redis" {
				b.Fatalf("the zone fell back to %s", h.lim.redis.Mode())
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkRedisAdmissionParallel is how many admissions (and releases)
// per second one instance sustains against one Redis.
func BenchmarkRedisAdmissionParallel(b *testing.B) {
	rs := testredis.Start(b)
	h := benchRedisHandler(b, rs, "redis")
	next := func(w http.ResponseWriter, r *http.Request) error { return limStreamNext(w, r) }
	b.SetParallelism(16)
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			req := httptest.NewRequest(http.MethodGet, "http://example.com/events", nil)
			req.Header.Set("Accept", "text/event-stream")
			req.Header.Set("X-Key", strconv.Itoa(i%100))
			if _, err := limServe(h, req, next); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.StopTimer()
	if h.lim.redis.Mode() != "redis" {
		b.Fatalf("the zone fell back to %s", h.lim.redis.Mode())
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "admissions/s")
}

// benchRedisHandler is redisHandler with a limit nothing reaches, and a
// timeout a loaded machine does not trip; store "local" has no redis.
func benchRedisHandler(b *testing.B, rs *testredis.Server, store string) *Handler {
	h := &Handler{
		Zone:   b.Name(),
		Limits: []Limit{{Max: 1 << 30, Per: "{http.request.header.X-Key}"}},
	}
	if store == "redis" {
		h.Redis = &RedisStore{Address: rs.Addr, Password: rs.Password, Timeout: caddy1s}
	}
	h, _ = limHandler(b, h)
	useLogger(h, zap.NewNop())
	return h
}

const caddy1s = 1e9 // 1s, as a caddy.Duration

// BenchmarkRedisAdmissionShapes is BenchmarkRedisAdmission against the
// shapes production Redis comes in, side by side in one run: one server,
// a 3-primary Redis Cluster (given one seed node), and a primary found
// through three sentinels.
func BenchmarkRedisAdmissionShapes(b *testing.B) {
	single := testredis.Start(b)
	cluster := testredis.StartCluster(b)
	sentinels := testredis.StartSentinels(b, "benchmaster")
	for _, shape := range []struct {
		name  string
		store *RedisStore
	}{
		{"single", &RedisStore{Address: single.Addr, Password: single.Password}},
		{"cluster", &RedisStore{ClientType: clientCluster, Addresses: []string{cluster.Nodes[0].Addr}, Password: testredis.Password}},
		{"sentinel", &RedisStore{ClientType: clientFailover, Addresses: sentinels.Addrs(), MasterName: sentinels.Name, Password: testredis.Password}},
	} {
		b.Run(shape.name, func(b *testing.B) {
			shape.store.Timeout = caddy1s
			h := &Handler{Zone: b.Name(), Limits: []Limit{{Max: 1 << 30, Per: "{http.request.header.X-Key}"}}, Redis: shape.store}
			h, _ = limHandler(b, h)
			useLogger(h, zap.NewNop())
			next := func(w http.ResponseWriter, r *http.Request) error { return limStreamNext(w, r) }
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				req := httptest.NewRequest(http.MethodGet, "http://example.com/events", nil)
				req.Header.Set("Accept", "text/event-stream")
				req.Header.Set("X-Key", strconv.Itoa(i%100))
				start := time.Now()
				if _, err := limServe(h, req, next); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			if h.lim.redis.Mode() != "redis" {
				b.Fatalf("the zone fell back to %s", h.lim.redis.Mode())
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
