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

// A zone counted in the Redis people run: a Redis Cluster and a primary
// managed by Sentinel, real servers on loopback, each failed over while
// streams are open.

import (
	"testing"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/testredis"
	"github.com/caddyserver/caddy/v2"
)

// shapeHandler is a handler whose zone counts in the Redis store: limit 2
// per X-Key, a 2s lease, local admission while Redis is unreachable.
func shapeHandler(t *testing.T, store *RedisStore) *Handler {
	t.Helper()
	store.KeyPrefix = "shape"
	store.Lease, store.Timeout, store.OnError = caddy.Duration(2*time.Second), caddy.Duration(200*time.Millisecond), onErrorLocal
	h := &Handler{Zone: t.Name(), Limits: []Limit{{Max: 2, Per: "{http.request.header.X-Key}"}}, Redis: store}
	h, _ = limHandler(t, h)
	if h.lim.redis == nil || h.lim.redis.Mode() != "redis" {
		t.Fatalf("the zone does not count in Redis after provisioning")
	}
	return h
}

// checkFailedOver checks what must hold once a zone's Redis primary was
// replaced: the streams opened before go on; the zone counts in Redis
// again, on the new primary (count), with every open stream registered
// there; the limit is exact there again; and a stream's slot goes when it
// ends.
func checkFailedOver(t *testing.T, h *Handler, open []*redisStream, count func() int) {
	t.Helper()
	limWaitFor(t, "the zone to count in Redis on the new primary", func() bool {
		return h.lim.redis.Mode() == "redis" && count() == len(open)
	})
	for i, s := range open {
		if s.done() {
			t.Fatalf("stream %d ended in the failover", i)
		}
	}
	if s := openRedisStream(t, h, "k"); s.admitted {
		t.Fatal("after the failover, a third stream was admitted with limit 2")
	}
	open[0].end()
	limWaitFor(t, "the ended stream's slot to go", func() bool { return count() == len(open)-1 })
	if s := openRedisStream(t, h, "k"); !s.admitted {
		t.Fatal("after a stream ended, a new one within the limit was refused")
	}
}

// A Redis Cluster given one seed node: the zone's keys share one slot
// ({zone} hash tag), the limit is exact, and when the primary of that
// slot dies its replica takes over and the count goes on there.
func TestRedisClusterFailover(t *testing.T) {
	c := testredis.StartCluster(t)
	h := shapeHandler(t, &RedisStore{ClientType: clientCluster, Addresses: []string{c.Nodes[0].Addr}, Password: testredis.Password})
	open := []*redisStream{openRedisStream(t, h, "k"), openRedisStream(t, h, "k")}
	if s := openRedisStream(t, h, "k"); s.admitted {
		t.Fatal("a third stream was admitted with limit 2")
	}
	set := redisSetKey(h, "k")
	primary := c.PrimaryOf(t, set)
	if primary == nil || primary.ZCard(t, set) != 2 {
		t.Fatalf("the primary of the zone's slot does not hold the 2 streams")
	}
	primary.Stop(t)
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("%s:\n%s", n.Addr, n.Log())
			}
		}
	})
	checkFailedOver(t, h, open, func() int {
		if p := c.PrimaryOf(t, set); p != nil && p != primary {
			return p.ZCard(t, set)
		}
		return -1
	})
}

// A primary managed by three sentinels: the zone finds it through them
// (failover, master_name), and when it dies and the sentinels promote
// its replica, the count goes on there.
func TestRedisSentinelFailover(t *testing.T) {
	s := testredis.StartSentinels(t, "ssemaster")
	h := shapeHandler(t, &RedisStore{ClientType: clientFailover, Addresses: s.Addrs(), MasterName: s.Name, Password: testredis.Password})
	open := []*redisStream{openRedisStream(t, h, "k"), openRedisStream(t, h, "k")}
	if x := openRedisStream(t, h, "k"); x.admitted {
		t.Fatal("a third stream was admitted with limit 2")
	}
	set := redisSetKey(h, "k")
	if n := s.Primary.ZCard(t, set); n != 2 {
		t.Fatalf("the primary holds %d streams, want 2", n)
	}
	s.Primary.Stop(t)
	testredis.WaitFor(t, "the sentinels to promote the replica", func() bool { return s.MasterAddr(t) == s.Replica.Addr })
	checkFailedOver(t, h, open, func() int { return s.Replica.ZCard(t, set) })
}
