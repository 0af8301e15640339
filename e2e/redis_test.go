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

// Fleet-wide limits: several Caddy subprocesses share one redis-server
// subprocess (loopback, password, no persistence, so a restart is empty).

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"github.com/caddy-sse/caddy-sse/internal/testredis"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Three instances, 200 racing admissions spread over them, one key with
// max 20: exactly 20 streams open. An instance killed with SIGKILL gives
// its slots back within the lease; the others can then use them.
// The instances log in as an ACL user with a password.
func TestRedisFleetExactCapAndKill(t *testing.T) {
	rs := testredis.Start(t)
	rs.Do(t, "ACL", "SETUSER", "caddy", "on", ">caddy-pw", "~*", "+@all")
	up := holdUpstream(t)
	site := redisSite(fmt.Sprintf(`redis %s {
			username caddy
			password {env.SSE_TEST_REDIS_PASSWORD}
			lease 2s
			timeout 500ms
		}`, rs.Addr), 20)
	t.Setenv("SSE_TEST_REDIS_PASSWORD", "caddy-pw")
	var fleet []*caddyProc
	for range 3 {
		fleet = append(fleet, startCaddy(t, up.addr, site))
	}

	var admitted [3]atomic.Int32
	var refused atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 200 {
		wg.Go(func() {
			<-start
			switch openCounted(t, fleet[i%3], "tenant-a") {
			case "admitted":
				admitted[i%3].Add(1)
			case "refused":
				refused.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	total := admitted[0].Load() + admitted[1].Load() + admitted[2].Load()
	if total != 20 || refused.Load() != 180 {
		t.Fatalf("admitted %d (%d, %d, %d per instance), refused %d; want exactly 20 admitted and 180 refused",
			total, admitted[0].Load(), admitted[1].Load(), admitted[2].Load(), refused.Load())
	}
	set := onlySet(t, rs)
	if n := rs.ZCard(t, set); n != 20 {
		t.Fatalf("ZCARD = %d, want 20", n)
	}

	// SIGKILL the instance holding the most streams: no release runs
	killed := 0
	for i := range 3 {
		if admitted[i].Load() > admitted[killed].Load() {
			killed = i
		}
	}
	held := int(admitted[killed].Load())
	if held == 0 {
		t.Fatal("no instance holds a stream")
	}
	killedAt := time.Now()
	fleet[killed].cmd.Process.Kill()
	<-fleet[killed].exited
	waitFor(t, "the killed instance's slots to expire", 10*time.Second, func() bool { return rs.ZCard(t, set) == 20-held })
	if d := time.Since(killedAt); d > 2*time.Second+time.Second {
		t.Errorf("the killed instance's slots came back after %s; lease is 2s", d)
	}
	other := fleet[(killed+1)%3]
	for range held {
		if got := openCounted(t, other, "tenant-a"); got != "admitted" {
			t.Fatalf("a slot freed by the killed instance was %s", got)
		}
	}
	if got := openCounted(t, other, "tenant-a"); got != "refused" {
		t.Fatalf("stream 21 was %s", got)
	}
}

// Redis dies: open streams go on; the instance with on_error local admits
// against its own counters, the one with on_error refuse refuses. Redis
// comes back empty: both register their open streams again, up to max.
func TestRedisFleetRedisDown(t *testing.T) {
	rs := testredis.Start(t)
	up := holdUpstream(t)
	conf := func(onError string) string {
		return redisSite(fmt.Sprintf(`redis redis://:%s@%s {
			lease 2s
			timeout 200ms
			on_error %s
		}`, rs.Password, rs.Addr, onError), 3)
	}
	local := startCaddy(t, up.addr, conf("local"))
	refuse := startCaddy(t, up.addr, conf("refuse"))
	if got := openCounted(t, local, "k"); got != "admitted" {
		t.Fatalf("first stream on the local instance: %s", got)
	}
	if got := openCounted(t, refuse, "k"); got != "admitted" {
		t.Fatalf("first stream on the refuse instance: %s", got)
	}
	set := onlySet(t, rs)
	if n := rs.ZCard(t, set); n != 2 {
		t.Fatalf("ZCARD = %d, want 2", n)
	}
	openBefore := up.open.Load()

	rs.Stop(t)
	if got := openCounted(t, refuse, "k"); got != "refused" {
		t.Fatalf("with Redis down, on_error refuse: %s, want refused", got)
	}
	// the local instance counts alone: 1 open there, so 2 more fit
	for i := range 2 {
		if got := openCounted(t, local, "k"); got != "admitted" {
			t.Fatalf("with Redis down, on_error local, stream %d: %s", i+2, got)
		}
	}
	if got := openCounted(t, local, "k"); got != "refused" {
		t.Fatalf("with Redis down, the local counters admitted a 4th stream with max 3: %s", got)
	}
	if n := up.open.Load(); n != openBefore+2 {
		t.Fatalf("%d streams open at the upstream, want %d: open streams must go on", n, openBefore+2)
	}

	rs.Restart(t) // empty
	// 4 streams open for 3 slots: the count is rebuilt up to max, and the
	// stream that finds no room is ended (its upstream request too)
	waitFor(t, "both instances to register 3 of their 4 open streams again, and the 4th to end", 10*time.Second, func() bool {
		return rs.ZCard(t, set) == 3 && up.open.Load() == openBefore+1
	})
	if got := openCounted(t, refuse, "k"); got != "refused" {
		t.Fatalf("with 3 registered and max 3, Redis admitted: %s", got)
	}
}

// A reload keeps the counts: streams opened before it still hold their
// slots, in Redis and locally, and the max still holds after it.
func TestRedisFleetReload(t *testing.T) {
	rs := testredis.Start(t)
	up := holdUpstream(t)
	site := redisSite(fmt.Sprintf(`redis %s {
			password %s
			lease 2s
		}`, rs.Addr, rs.Password), 2)
	c := startCaddy(t, up.addr, site)
	for range 2 {
		if got := openCounted(t, c, "k"); got != "admitted" {
			t.Fatalf("before the reload: %s", got)
		}
	}
	set := onlySet(t, rs)
	cfg, err := os.ReadFile(filepath.Join(filepath.Dir(c.logf), "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	// the same config with a change elsewhere: a real reload
	cfg = bytes.Replace(cfg, []byte("retry 1s"), []byte("retry 2s"), 1)
	res, err := http.Post(fmt.Sprintf("http://localhost:%d/load", c.Admin), "text/caddyfile", bytes.NewReader(cfg))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("reload: %s", res.Status)
	}
	if got := openCounted(t, c, "k"); got != "refused" {
		t.Fatalf("after the reload, a third stream with max 2 was %s", got)
	}
	// two leases later, the streams from before the reload are still
	// counted: their leases are renewed
	until := rs.Now(t).Add(4 * time.Second)
	waitFor(t, "two leases to pass", 10*time.Second, func() bool { return rs.Now(t).After(until) })
	if n := rs.ZCard(t, set); n != 2 {
		t.Fatalf("ZCARD = %d two leases after the reload, want 2", n)
	}
}

// redisSite is a site with an sse block that limits streams to max per
// X-Key in zone "fleet", counted in Redis as redis says.
func redisSite(redis string, max int) string {
	return fmt.Sprintf(`http://127.0.0.1:{{.HTTP}} {
	sse {
		zone fleet
		limit %d per {http.request.header.X-Key}
		retry 1s
		%s
	}
	reverse_proxy {{.Upstream}}
}
`, max, redis)
}

// heldUpstream answers every request with an event stream that stays open
// until the client goes away, and counts the open ones.
type heldUpstream struct {
	addr string
	open atomic.Int32
}

func holdUpstream(t testing.TB) *heldUpstream {
	u := new(heldUpstream)
	u.addr = startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		u.open.Add(1)
		defer u.open.Add(-1)
		streamHead(w)
		if _, err := send(w, "data: hello\n\n"); err != nil {
			return
		}
		<-r.Context().Done()
	})
	return u
}

// openCounted opens an EventSource-style stream with X-Key: key and
// reports "admitted" (the upstream's event arrived; the stream stays open
// until the test ends) or "refused" (a retry answer).
func openCounted(t testing.TB, c *caddyProc, key string) string {
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL()+"/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("X-Key", key)
	res, err := fleetClient.Do(req)
	if err != nil {
		cancel()
		t.Errorf("GET: %v", err)
		return "error"
	}
	t.Cleanup(func() { cancel(); res.Body.Close() })
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	switch {
	case strings.HasPrefix(line, "data: hello"):
		return "admitted"
	case strings.HasPrefix(line, "retry:"):
		return "refused"
	}
	t.Errorf("unexpected answer: %s %q %v", res.Status, line, err)
	return "error"
}

var fleetClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}
}

// onlySet returns the one counting set in Redis (a zone with one key in
// use), failing unless there is exactly one.
func onlySet(t testing.TB, rs *testredis.Server) string {
	t.Helper()
	keys := rs.Do(t, "--scan", "--pattern", "caddy-sse:{fleet}:k:*")
	if len(keys) != 1 || keys[0] == "" {
		t.Fatalf("want one counting set, got %q", keys)
	}
	return keys[0]
}
