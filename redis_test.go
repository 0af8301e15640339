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

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/limit"
	"github.com/caddy-sse/caddy-sse/internal/testredis"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

// A stream admitted through Redis holds a member in its key's set, kept
// past its lease by renewals and removed when it ends; the max holds.
func TestRedisLeaseRenewedAndReleased(t *testing.T) {
	rs := testredis.Start(t)
	h := redisHandler(t, rs, "renew", onErrorLocal)
	a := openRedisStream(t, h, "k1")
	b := openRedisStream(t, h, "k1")
	if c := openRedisStream(t, h, "k1"); c.admitted {
		t.Fatal("a third stream was admitted with limit 2")
	}
	set := redisSetKey(h, "k1")
	if n := rs.ZCard(t, set); n != 2 {
		t.Fatalf("ZCARD = %d, want 2", n)
	}
	// two leases later, the members are still there: renewed
	until := rs.Now(t).Add(2 * h.Redis.lease())
	limWaitFor(t, "two leases to pass", func() bool { return rs.Now(t).After(until) })
	if n := rs.ZCard(t, set); n != 2 {
		t.Fatalf("after two leases, ZCARD = %d, want 2 (leases not renewed)", n)
	}
	now := strconv.FormatInt(rs.Now(t).UnixMilli(), 10)
	if n := rs.Do(t, "ZCOUNT", set, "-inf", now)[0]; n != "0" {
		t.Fatalf("%s leases expired before Redis's now", n)
	}
	a.end()
	limWaitFor(t, "the ended stream's member to go", func() bool { return rs.ZCard(t, set) == 1 })
	b.end()
	limWaitFor(t, "both members to go", func() bool { return rs.ZCard(t, set) == 0 })
	if c := openRedisStream(t, h, "k1"); !c.admitted {
		t.Fatal("a stream was refused after the others ended")
	}
}

// Keys reach Redis hashed: no client value appears in any key or member.
func TestRedisKeysHashed(t *testing.T) {
	rs := testredis.Start(t)
	h := redisHandler(t, rs, "hashed", onErrorLocal)
	openRedisStream(t, h, "secret-token-value")
	keys := rs.Do(t, "KEYS", "*")
	if len(keys) == 0 {
		t.Fatal("no key in Redis")
	}
	for _, k := range keys {
		if strings.Contains(k, "secret") {
			t.Errorf("key %q holds the client's value", k)
		}
	}
}

// Redis dies: open streams go on, new ones are counted by this instance
// (on_error local); Redis comes back empty: the open streams are
// registered again before Redis counts new ones.
func TestRedisDownLocalThenResync(t *testing.T) {
	rs := testredis.Start(t)
	h := redisHandler(t, rs, "down", onErrorLocal)
	a := openRedisStream(t, h, "k")
	set := redisSetKey(h, "k")
	if n := rs.ZCard(t, set); n != 1 {
		t.Fatalf("ZCARD = %d, want 1", n)
	}
	rs.Stop(t)
	b := openRedisStream(t, h, "k") // trips the breaker, admitted locally
	if !b.admitted {
		t.Fatal("with on_error local, a stream within the limit was refused while Redis was down")
	}
	if m := h.lim.redis.Mode(); m != "local" {
		t.Fatalf("mode = %q, want local", m)
	}
	if c := openRedisStream(t, h, "k"); c.admitted {
		t.Fatal("the local counters admitted a third stream with limit 2")
	}
	if a.done() || b.done() {
		t.Fatal("an open stream ended when Redis went down")
	}
	rs.Restart(t) // empty: no persistence
	limWaitFor(t, "the zone to count in Redis again", func() bool { return h.lim.redis.Mode() == "redis" })
	if n := rs.ZCard(t, set); n != 2 {
		t.Fatalf("after Redis came back, ZCARD = %d, want 2 (open streams not registered again)", n)
	}
	if c := openRedisStream(t, h, "k"); c.admitted {
		t.Fatal("Redis admitted a third stream with limit 2")
	}
	a.end()
	limWaitFor(t, "the ended stream's member to go", func() bool { return rs.ZCard(t, set) == 1 })
}

// Redis restarted empty while the breaker saw nothing: the instance finds
// its marker gone and registers its streams again before counting there.
func TestRedisRestartedEmptyResync(t *testing.T) {
	rs := testredis.Start(t)
	h := redisHandler(t, rs, "restart", onErrorLocal)
	openRedisStream(t, h, "k")
	set := redisSetKey(h, "k")
	rs.Do(t, "FLUSHALL")
	// the next admission sees the marker gone: it must not count on the
	// empty set (which would admit two more)
	openRedisStream(t, h, "k")
	limWaitFor(t, "the zone to count in Redis again", func() bool { return h.lim.redis.Mode() == "redis" })
	if n := rs.ZCard(t, set); n != 2 {
		t.Fatalf("ZCARD = %d, want 2", n)
	}
	if c := openRedisStream(t, h, "k"); c.admitted {
		t.Fatal("a third stream was admitted with limit 2")
	}
}

// Redis stops answering while another instance holds one of the key's
// two slots: a second stream here is admitted locally (on_error local),
// over the fleet's max. When Redis answers again the count is rebuilt
// with no room for it: it ends at an event boundary with a retry hint,
// its slot goes back, and the stream Redis counted goes on.
func TestRedisRebuildEndsStreamOverMax(t *testing.T) {
	rs := testredis.Start(t)
	h := redisHandler(t, rs, "rebuild", onErrorLocal)
	a := openRedisStream(t, h, "k")
	// another instance of the fleet: its own marker and local counters
	opt, err := h.Redis.clientOption()
	if err != nil {
		t.Fatal(err)
	}
	other := limit.NewRedis(limit.RedisConfig{
		Zone: h.lim.zoneName, Prefix: h.Redis.KeyPrefix, Lease: 2 * time.Second, Timeout: 200 * time.Millisecond,
		Client: opt, Logger: zap.NewNop(),
	})
	t.Cleanup(func() { _ = other.Destruct() })
	fb := limit.Fallback{Redis: other, Local: limit.Local{Counters: limit.NewCounters(), Limits: h.lim.limits}}
	oh, ref := fb.Acquire([]string{limit.Key(h.lim.limits[0].ID, "k")})
	if ref != nil {
		t.Fatalf("the other instance was refused the key's second slot: %+v", ref)
	}
	defer oh.Release()
	set := redisSetKey(h, "k")
	if n := rs.ZCard(t, set); n != 2 {
		t.Fatalf("ZCARD = %d, want 2", n)
	}
	rs.Pause(t)
	b := openRedisStream(t, h, "k") // times out, trips, admitted locally
	if !b.admitted || h.lim.redis.Mode() != "local" {
		t.Fatalf("admitted %v in mode %q, want a local admission", b.admitted, h.lim.redis.Mode())
	}
	rs.Resume(t)
	select {
	case <-b.finished:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream admitted over the fleet's max still runs 10s after Redis answered again")
	}
	body := b.body()
	if !retryAtEnd.MatchString(body) || !strings.HasPrefix(body, "data: x\n\n") {
		t.Fatalf("the stream over max ended with %q, want its event, then a retry field", body)
	}
	if a.done() {
		t.Fatal("the stream Redis counted ended in the rebuild")
	}
	if n := h.lim.redis.Revoked(); n != 1 {
		t.Fatalf("%d slots revoked, want 1", n)
	}
	limWaitFor(t, "the zone to count in Redis again", func() bool { return h.lim.redis.Mode() == "redis" })
	if n := rs.ZCard(t, set); n != 2 {
		t.Fatalf("after the rebuild ZCARD = %d, want the 2 streams counted before", n)
	}
	if got := h.lim.counters.Snapshot()[limit.Key(h.lim.limits[0].ID, "k")]; got != 1 {
		t.Fatalf("local count %d after the revoked stream ended, want 1", got)
	}
	if c := openRedisStream(t, h, "k"); c.admitted {
		t.Fatal("a stream was admitted over the rebuilt count")
	}
}

// on_error refuse: while Redis is down, new streams get the usual
// EventSource-safe refusal; open streams go on.
func TestRedisDownRefuse(t *testing.T) {
	rs := testredis.Start(t)
	h := redisHandler(t, rs, "refuse", onErrorRefuse)
	a := openRedisStream(t, h, "k")
	rs.Stop(t)
	b := openRedisStream(t, h, "k")
	if b.admitted {
		t.Fatal("with on_error refuse, a stream was admitted while Redis was down")
	}
	if !strings.Contains(b.body(), "retry:") || b.status() != http.StatusOK {
		t.Fatalf("refusal = %d %q, want 200 with a retry field", b.status(), b.body())
	}
	if m := h.lim.redis.Mode(); m != "refuse" {
		t.Fatalf("mode = %q, want refuse", m)
	}
	if a.done() {
		t.Fatal("an open stream ended when Redis went down")
	}
	rs.Restart(t)
	limWaitFor(t, "the zone to count in Redis again", func() bool { return h.lim.redis.Mode() == "redis" })
	if c := openRedisStream(t, h, "k"); !c.admitted {
		t.Fatal("a stream within the limit was refused after Redis came back")
	}
}

// A Redis that accepts connections and never answers costs an admission
// one timeout, and then none: the breaker is open.
func TestRedisSlowBreaker(t *testing.T) {
	rs := testredis.Start(t)
	h := redisHandler(t, rs, "slow", onErrorLocal)
	openRedisStream(t, h, "k")
	rs.Pause(t)
	start := time.Now()
	if s := openRedisStream(t, h, "k"); !s.admitted {
		t.Fatal("on_error local refused a stream within the limit")
	}
	if d := time.Since(start); d > h.Redis.timeout()+500*time.Millisecond {
		t.Fatalf("admission against a stalled Redis took %s, timeout is %s", d, h.Redis.timeout())
	}
	start = time.Now()
	openRedisStream(t, h, "other")
	if d := time.Since(start); d > h.Redis.timeout()/2 {
		t.Fatalf("with the breaker open, admission took %s: it still called Redis", d)
	}
	rs.Resume(t)
	limWaitFor(t, "the zone to count in Redis again", func() bool { return h.lim.redis.Mode() == "redis" })
}

// The Caddyfile's redis block, and its errors, which name the field and
// never quote the password.
func TestRedisCaddyfile(t *testing.T) {
	h := new(Handler)
	d := caddyfile.NewTestDispenser(`sse {
		zone chat
		limit 2 per {http.request.remote.host}
		redis redis://10.0.0.1:6379/2 {
			username caddy
			password {env.REDIS_PASSWORD}
			db 3
			tls insecure ca /etc/ca.pem
			key_prefix sse1
			lease 20s
			timeout 50ms
			on_error refuse
		}
		retry 5s
	}`)
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := RedisStore{
		Address: "redis://10.0.0.1:6379/2", Username: "caddy", Password: "{env.REDIS_PASSWORD}", DB: 3,
		TLS: &RedisTLS{InsecureSkipVerify: true, CA: "/etc/ca.pem"}, KeyPrefix: "sse1",
		Lease: caddy.Duration(20 * time.Second), Timeout: caddy.Duration(50 * time.Millisecond), OnError: "refuse",
	}
	if h.Redis == nil || fmt.Sprint(*h.Redis.TLS) != fmt.Sprint(*want.TLS) {
		t.Fatalf("redis = %+v", h.Redis)
	}
	got := *h.Redis
	got.TLS, want.TLS = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("redis = %+v, want %+v", got, want)
	}
	if h.Retry == nil {
		t.Fatal("the option after the redis block was not parsed")
	}

	// the shapes: several addresses are a cluster's seed nodes, or the
	// sentinels of a failover primary; one address with no word is one
	// server, as before
	for _, c := range []struct {
		in   string
		want RedisStore
	}{
		{"redis 10.0.0.1:6379", RedisStore{Address: "10.0.0.1:6379"}},
		{"redis simple 10.0.0.1:6379", RedisStore{ClientType: "simple", Addresses: []string{"10.0.0.1:6379"}}},
		{"redis cluster 10.0.0.1:7000 10.0.0.2:7000 10.0.0.3:7000",
			RedisStore{ClientType: "cluster", Addresses: []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"}}},
		{"redis failover 10.0.0.1:26379 10.0.0.2:26379 {\nmaster_name mymaster\nsentinel_username sen\nsentinel_password {env.SENTINEL_PASSWORD}\npassword p\n}",
			RedisStore{ClientType: "failover", Addresses: []string{"10.0.0.1:26379", "10.0.0.2:26379"}, MasterName: "mymaster",
				SentinelUsername: "sen", SentinelPassword: "{env.SENTINEL_PASSWORD}", Password: "p"}},
	} {
		h := new(Handler)
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("sse {\n" + c.in + "\n}")); err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(*h.Redis, c.want) {
			t.Errorf("%s: redis = %+v, want %+v", c.in, *h.Redis, c.want)
		}
	}

	for _, c := range []struct{ in, want string }{
		{`redis`, "redis: missing address"},
		{"redis 127.0.0.1:6379 {\nlease 500ms\n}", "redis: lease: must be at least 1s"},
		{"redis 127.0.0.1:6379 {\non_error maybe\n}", `redis: on_error: must be "local" or "refuse"`},
		{"redis 127.0.0.1:6379 {\ntimeout 20s\n}", "redis.timeout: 20s is more than a third of the lease"},
		{"redis 127.0.0.1:6379 {\nbogus\n}", `redis: unrecognized option "bogus"`},
		{"redis 127.0.0.1:6379 {\nkey_prefix a:b\n}", "redis: key_prefix: must not contain"},
		{"redis redis://u:hunter2@[::1 {\n}", "redis.address: not a valid URL"},
		{`redis http://u:hunter2@x:1`, `scheme must be redis, rediss or unix, got "http"`},
		{`redis 10.0.0.1:6379 10.0.0.2:6379`, "redis.addresses: 2 addresses for one server: use client_type cluster (seed nodes) or failover (sentinels)"},
		{"redis failover 10.0.0.1:26379 {\nsentinel_password hunter2\n}", "redis.master_name: required with client_type failover"},
		{`redis cluster redis://u:hunter2@10.0.0.1:6379`, "redis.addresses: want host:port with client_type cluster"},
		{"redis 10.0.0.1:6379 {\nmaster_name m\n}", "redis.master_name: only with client_type failover"},
		{"redis 10.0.0.1:6379 {\nsentinel_password hunter2\n}", "redis.sentinel_password: only with client_type failover"},
		{"redis cluster 10.0.0.1:6379 {\ndb 2\n}", "redis.db: a Redis Cluster has database 0 only"},
		{"redis failover 10.0.0.1:26379 {\nmaster_name m\nsentinel_password\n}", "redis: sentinel_password: missing value"},
	} {
		err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser("sse {\n" + c.in + "\n}"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.in, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error quotes the password: %v", c.in, err)
		}
		if !strings.Contains(err.Error(), "Testfile:") {
			t.Errorf("%s: the error does not name the line: %v", c.in, err)
		}
	}
}

// JSON errors name the field path; a zone is required; blocks sharing a
// zone must share its redis settings.
func TestRedisValidate(t *testing.T) {
	for _, c := range []struct {
		h    Handler
		want string
	}{
		{Handler{Limits: []Limit{{Max: 1}}, Redis: &RedisStore{Address: "x:1"}}, "redis: needs a zone name"},
		{Handler{Zone: "z", Redis: &RedisStore{Address: "x:1"}}, "redis: has nothing to count without a limit"},
		{Handler{Zone: "z", Limits: []Limit{{Max: 1}}, Redis: &RedisStore{}}, "redis.address: required"},
		{Handler{Zone: "z", Limits: []Limit{{Max: 1}}, Redis: &RedisStore{Address: "x:1", Lease: caddy.Duration(time.Millisecond)}}, "redis.lease: must be at least 1s"},
		{Handler{Zone: "z", Limits: []Limit{{Max: 1}}, Redis: &RedisStore{Address: "x:1", OnError: "x"}}, "redis.on_error"},
		{Handler{Zone: "z", Limits: []Limit{{Max: 1}}, Redis: &RedisStore{Address: "x:1", DB: -1}}, "redis.db"},
		{Handler{Zone: "a{b}", Limits: []Limit{{Max: 1}}, Redis: &RedisStore{Address: "x:1"}}, "zone: with redis"},
	} {
		if err := c.h.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want %q", c.h.Redis, err, c.want)
		}
	}

	rs := testredis.Start(t)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	mk := func(r *RedisStore) *Handler {
		return &Handler{Zone: "shared", Limits: []Limit{{Max: 1, Per: "{http.request.host}"}}, Redis: r}
	}
	a := mk(&RedisStore{Address: rs.Addr, Password: rs.Password})
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Cleanup()
	b := mk(&RedisStore{Address: rs.Addr, Password: rs.Password, Lease: caddy.Duration(time.Minute)})
	err := b.Provision(ctx)
	if err == nil {
		b.Cleanup()
		t.Fatal("two blocks of one config share a zone with different redis settings")
	}
	if !strings.Contains(err.Error(), `zone "shared" is used with other redis settings`) || strings.Contains(err.Error(), rs.Password) {
		t.Fatalf("err = %v", err)
	}
	_ = b.Cleanup()
	c := mk(nil)
	if err := c.Provision(ctx); err == nil {
		c.Cleanup()
		t.Fatal("a block without redis shares a zone with one with redis")
	}
	_ = c.Cleanup()
}

// Nothing outlives Cleanup: caddy validate provisions and cleans up.
func TestRedisStoreStopsAtCleanup(t *testing.T) {
	rs := testredis.Start(t)
	h := redisHandler(t, rs, "cleanup", onErrorLocal)
	s := h.lim.redis
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the renewal loop still runs after the last Cleanup")
	}
	h.lim.redis, h.lim.redisKey, h.lim.zoneKey = nil, "", "" // cleaned up; the test's own Cleanup must not count twice
}

// redisStream is a stream opened through a handler, held open until end.
type redisStream struct {
	admitted bool
	rec      *httptest.ResponseRecorder
	stop     chan struct{}
	finished chan struct{}
}

func (s *redisStream) end() {
	close(s.stop)
	<-s.finished
}

func (s *redisStream) done() bool {
	select {
	case <-s.finished:
		return true
	default:
		return false
	}
}

func (s *redisStream) body() string { <-s.finished; return s.rec.Body.String() }
func (s *redisStream) status() int  { <-s.finished; return s.rec.Code }

// openRedisStream runs an EventSource request with X-Key: key through h,
// and returns once it is admitted (the inner handler runs) or answered.
func openRedisStream(t testing.TB, h *Handler, key string) *redisStream {
	t.Helper()
	s := &redisStream{stop: make(chan struct{}), finished: make(chan struct{})}
	entered := make(chan struct{})
	req := httptest.NewRequest(http.MethodGet, "http://example.com/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("X-Key", key)
	go func() {
		defer close(s.finished)
		s.rec, _ = limServe(h, req, func(w http.ResponseWriter, r *http.Request) error {
			close(entered)
			if err := limStreamNext(w, r); err != nil {
				return err
			}
			select {
			case <-s.stop:
			case <-r.Context().Done():
			}
			return nil
		})
	}()
	select {
	case <-entered:
		s.admitted = true
		t.Cleanup(func() {
			select {
			case <-s.stop:
			default:
				s.end()
			}
		})
	case <-s.finished:
	case <-time.After(10 * time.Second):
		t.Fatal("the request was neither admitted nor answered")
	}
	return s
}

// redisHandler provisions an sse handler whose zone counts in rs: limit 2
// per X-Key, lease 2s, timeout 200ms.
func redisHandler(t testing.TB, rs *testredis.Server, zone, onError string) *Handler {
	t.Helper()
	h := &Handler{
		Zone:   t.Name() + "-" + zone,
		Limits: []Limit{{Max: 2, Per: "{http.request.header.X-Key}"}},
		Redis: &RedisStore{
			Address: rs.Addr, Password: rs.Password, KeyPrefix: "test" + strconv.Itoa(rs.Port),
			Lease: caddy.Duration(2 * time.Second), Timeout: caddy.Duration(200 * time.Millisecond), OnError: onError,
		},
	}
	h, _ = limHandler(t, h)
	if h.lim.redis == nil || h.lim.redis.Mode() != "redis" {
		t.Fatalf("the zone does not count in Redis after provisioning")
	}
	return h
}

// redisSetKey is the Redis key of the set that counts X-Key: key.
func redisSetKey(h *Handler, key string) string {
	return h.lim.redis.SetKey(limit.Key(h.lim.limits[0].ID, key))
}

// GET /sse/zones?mode=1 says how each zone counts now: "redis", then
// "local" while Redis is down (on_error local), and "process" for a zone
// without a Redis side; the keys are those of /sse/zones.
func TestRedisZoneModeInAdminAPI(t *testing.T) {
	rs := testredis.Start(t)
	h := redisHandler(t, rs, "admin", onErrorLocal)
	local, _ := limHandler(t, &Handler{Zone: t.Name() + "-process", Limits: []Limit{{Max: 5, Per: "{http.request.header.X-Key}"}}})
	openRedisStream(t, h, "k")
	openRedisStream(t, local, "p")
	type zoneState struct {
		Mode string         `json:"mode"`
		Keys map[string]int `json:"keys"`
	}
	modes := func() map[string]zoneState {
		t.Helper()
		rec := httptest.NewRecorder()
		if err := (adminSSE{}).handleZones(rec, httptest.NewRequest(http.MethodGet, "/sse/zones?mode=1", nil)); err != nil {
			t.Fatal(err)
		}
		var got map[string]zoneState
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatalf("%v: %s", err, rec.Body.String())
		}
		return got
	}
	got := modes()
	if z := got[h.Zone]; z.Mode != "redis" || z.Keys["k"] != 1 {
		t.Errorf("redis zone = %+v, want mode redis and k: 1", z)
	}
	if z := got[local.Zone]; z.Mode != modeProcess || z.Keys["p"] != 1 {
		t.Errorf("process zone = %+v, want mode %s and p: 1", z, modeProcess)
	}
	rs.Stop(t)
	openRedisStream(t, h, "k") // trips the breaker
	if z := modes()[h.Zone]; z.Mode != "local" || z.Keys["k"] != 2 {
		t.Errorf("redis zone with Redis down = %+v, want mode local and k: 2", z)
	}
}
