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

package limit

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/testredis"
	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// BenchmarkRedisRenew10k is one renewal round of 10,000 open streams, and
// what it costs Caddy and Redis in CPU, as a share of one core at the
// default lease (30s: a round every 10s).
func BenchmarkRedisRenew10k(b *testing.B) {
	rs := testredis.Start(b)
	s := NewRedis(RedisConfig{
		Zone: b.Name(), Prefix: "caddy-sse", Lease: 30 * time.Second, Timeout: time.Second,
		Client: rueidis.ClientOption{InitAddress: []string{rs.Addr}, Password: rs.Password, DisableCache: true},
		Logger: zap.NewNop(),
	})
	b.Cleanup(func() { _ = s.Destruct() })
	const streams = 10000
	s.mu.Lock()
	for i := range streams {
		s.leases[&lease{
			member: incarnation + ".b" + strconv.Itoa(i),
			keys:   []string{s.SetKey("bench\x00" + strconv.Itoa(i%1000))},
			maxes:  []int{streams / 1000},
		}] = struct{}{}
	}
	s.mu.Unlock()
	redisCPU := func() float64 {
		var total float64
		for _, line := range rs.Do(b, "INFO", "cpu") {
			for _, l := range strings.Split(line, "\n") {
				k, v, ok := strings.Cut(strings.TrimSpace(l), ":")
				if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
					f, _ := strconv.ParseFloat(v, 64)
					total += f
				}
			}
		}
		return total
	}
	if err := s.renew(); err != nil { // loads the script
		b.Fatal(err)
	}
	cpu0, r0 := processCPU(), redisCPU()
	b.ResetTimer()
	for range b.N {
		if err := s.renew(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	period := (s.lease / 3).Seconds()
	caddyPerRound := (processCPU() - cpu0).Seconds() / float64(b.N)
	redisPerRound := (redisCPU() - r0) / float64(b.N)
	b.ReportMetric(caddyPerRound*1000, "caddy-cpu-ms/round")
	b.ReportMetric(redisPerRound*1000, "redis-cpu-ms/round")
	b.ReportMetric(100*caddyPerRound/period, "caddy-%core@30s")
	b.ReportMetric(100*redisPerRound/period, "redis-%core@30s")
	s.mu.Lock()
	clear(s.leases)
	s.mu.Unlock()
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
