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

// Fleet-wide limits through a failover: three Caddy subprocesses share a
// zone on a Sentinel-managed primary or a Redis Cluster (real servers on
// loopback), and race admissions before, during and after the primary
// that serves the zone is killed and a replica takes over.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/testredis"
)

// failoverMax is the limit of the one key the tests race for.
const failoverMax = 20

// failoverLease is the lease of the tests' zone: longer than a failover
// takes here (2-5s), so the slots of streams counted before it outlive it,
// as with the default 30s in production; a killed instance's slots come
// back within it.
const failoverLease = 8 * time.Second

// shape is a Redis deployment as the tests drive it.
type shape struct {
	redis   string                                           // the sse block's redis line and options
	servers func() []*testredis.Server                       // the running data nodes
	primary func(t *testing.T, set string) *testredis.Server // serving set now, nil during a failover
	kill    func(t *testing.T, set string) *testredis.Server // kill the primary serving set
}

// A primary, a replica and three sentinels; the zone follows the primary
// through the sentinels (redis failover, master_name). One Caddy instance
// is SIGKILLed during the failover.
func TestFailoverSentinel(t *testing.T) {
	s := testredis.StartSentinels(t, "ssefleet")
	runFailover(t, shape{
		redis: fmt.Sprintf(`redis failover %s {
			master_name %s
			password %s
			lease %s
			timeout 200ms
		}`, strings.Join(s.Addrs(), " "), s.Name, testredis.Password, failoverLease),
		servers: func() []*testredis.Server { return []*testredis.Server{s.Primary, s.Replica} },
		primary: func(t *testing.T, _ string) *testredis.Server {
			for _, n := range []*testredis.Server{s.Primary, s.Replica} {
				if n.Addr == s.MasterAddr(t) && !n.Stopped() {
					return n
				}
			}
			return nil
		},
		kill: func(t *testing.T, _ string) *testredis.Server {
			p := s.Primary
			p.Stop(t)
			return p
		},
	}, true)
}

// A 3-primary, 3-replica Redis Cluster given one seed node; the primary of
// the zone's slot is killed and its replica takes over.
func TestFailoverCluster(t *testing.T) {
	c := testredis.StartCluster(t)
	runFailover(t, shape{
		redis: fmt.Sprintf(`redis cluster %s {
			password %s
			lease %s
			timeout 200ms
		}`, c.Nodes[0].Addr, testredis.Password, failoverLease),
		servers: func() []*testredis.Server { return c.Nodes },
		primary: func(t *testing.T, set string) *testredis.Server { return c.PrimaryOf(t, set) },
		kill: func(t *testing.T, set string) *testredis.Server {
			p := c.PrimaryOf(t, set)
			if p == nil {
				t.Fatal("no primary serves the zone's slot")
			}
			p.Stop(t)
			return p
		},
	}, false)
}

// runFailover races 200 admissions over three instances before, during and
// after a failover of sh's primary, with killOne an instance SIGKILLed
// during it, and checks the count: exact before; during, each instance
// admits at most max alone (on_error local); after the rebuild no key
// has more than max open across the fleet, the streams over it ended with
// a retry hint, the killed instance's slots are back within the lease;
// exact again after; and nothing is left when every stream ends.
func runFailover(t *testing.T, sh shape, killOne bool) {
	up := holdUpstream(t)
	site := redisSite(sh.redis, failoverMax)
	var fleet []*caddyProc
	for range 3 {
		fleet = append(fleet, startCaddy(t, up.addr, site))
	}
	var streams fleetStreams

	if n := streams.race(t, fleet, 200); n != failoverMax {
		t.Fatalf("before the failover: %d admitted, want exactly %d", n, failoverMax)
	}
	set := findSet(t, sh.servers())
	primary := sh.primary(t, set)
	if primary == nil || primary.ZCard(t, set) != failoverMax {
		t.Fatalf("the primary does not hold the %d streams", failoverMax)
	}

	// the replicas have every slot: the streams counted before the
	// failover keep them
	primary.WaitReplicated(t, sh.servers())
	before := streams.snapshot()
	old := sh.kill(t, set)
	killedAt := time.Now()
	live := fleet
	if killOne {
		// the instance with the most streams, mid-failover: no release runs
		victim := streams.busiest(fleet)
		victim.cmd.Process.Kill()
		<-victim.exited
		live = slices.DeleteFunc(slices.Clone(fleet), func(c *caddyProc) bool { return c == victim })
	}
	during := streams.race(t, live, 200)
	for _, c := range live {
		if n := streams.open(c); n > failoverMax {
			t.Errorf("during the failover an instance has %d streams open, more than max %d alone", n, failoverMax)
		}
	}

	var now *testredis.Server
	waitFor(t, "a replica to take over", 30*time.Second, func() bool {
		now = sh.primary(t, set)
		return now != nil && now != old
	})
	promotedAt := time.Now()
	waitFor(t, "every instance to count in Redis on the new primary", 30*time.Second, func() bool { return allCounting(t, live) })
	countingAt := time.Now()
	waitFor(t, "no more than max streams open after the rebuild", 10*time.Second, func() bool {
		return streams.openOn(live) <= failoverMax
	})
	// the killed instance's slots lapse within the lease: then the new
	// primary counts exactly the streams open
	waitFor(t, "the new primary to count exactly the open streams", 30*time.Second, func() bool {
		return now.ZCard(t, set) == streams.openOn(live)
	})
	exactAt := time.Now()
	t.Logf("failover: %d admitted during it; primary killed → replica promoted %s → every instance counting there %s → count exact %s (%d open, %d ended by the rebuild)",
		during, promotedAt.Sub(killedAt).Round(100*time.Millisecond), countingAt.Sub(promotedAt).Round(100*time.Millisecond),
		exactAt.Sub(countingAt).Round(100*time.Millisecond), streams.openOn(live), streams.revoked())
	if d := exactAt.Sub(killedAt); killOne && d > failoverLease+2*time.Second {
		t.Errorf("the killed instance's slots were back %s after it was killed; lease is %s", d, failoverLease)
	}
	streams.checkEnds(t)
	for _, st := range before {
		if slices.Contains(live, st.on) && !st.isOpen() {
			t.Fatal("a stream counted in Redis before the failover ended in it")
		}
	}

	open := streams.openOn(live)
	if n := streams.race(t, live, 200); n != failoverMax-open {
		t.Fatalf("after the rebuild: %d admitted with %d open, want exactly %d", n, open, failoverMax-open)
	}
	if n := now.ZCard(t, set); n != failoverMax {
		t.Fatalf("after the failover the new primary holds %d streams, want %d", n, failoverMax)
	}

	streams.closeAll()
	waitFor(t, "every slot to go when the streams end", 10*time.Second, func() bool {
		return now.ZCard(t, set) == 0 && zoneEmpty(t, live)
	})
}

// fleetStreams are the streams a test opened, by instance.
type fleetStreams struct {
	mu  sync.Mutex
	all []*fleetStream
}

// fleetStream is one admitted stream.
type fleetStream struct {
	on     *caddyProc
	cancel context.CancelFunc
	ended  chan struct{} // closed when the response has ended
	rest   string        // what came after the upstream's event
	err    error         // how the body ended: io.EOF for a clean end
	closed bool          // canceled by the test
}

// race opens n streams at once, spread over fleet, and returns how many
// were admitted; each is refused or admitted, nothing else.
func (fs *fleetStreams) race(t *testing.T, fleet []*caddyProc, n int) int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			if s := openFleetStream(t, fleet[i%len(fleet)]); s != nil {
				fs.mu.Lock()
				fs.all = append(fs.all, s)
				fs.mu.Unlock()
				mu.Lock()
				admitted++
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	return admitted
}

// openFleetStream opens an EventSource-style stream with X-Key: k on c:
// the stream if it was admitted (the upstream's event arrived), nil if it
// was refused (a retry answer).
func openFleetStream(t *testing.T, c *caddyProc) *fleetStream {
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL()+"/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("X-Key", "k")
	res, err := fleetClient.Do(req)
	if err != nil {
		cancel()
		t.Errorf("GET: %v", err)
		return nil
	}
	t.Cleanup(func() { cancel(); res.Body.Close() })
	br := bufio.NewReader(res.Body)
	line, err := br.ReadString('\n')
	switch {
	case strings.HasPrefix(line, "retry:"):
		cancel()
		return nil
	case !strings.HasPrefix(line, "data: hello"):
		cancel()
		t.Errorf("unexpected answer: %s %q %v", res.Status, line, err)
		return nil
	}
	s := &fleetStream{on: c, cancel: cancel, ended: make(chan struct{})}
	go func() {
		defer close(s.ended)
		b, err := io.ReadAll(br)
		if err == nil {
			err = io.EOF
		}
		s.rest, s.err = string(b), err
	}()
	return s
}

// snapshot returns the streams opened so far.
func (fs *fleetStreams) snapshot() []*fleetStream {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return slices.Clone(fs.all)
}

// isOpen reports whether s is still open.
func (s *fleetStream) isOpen() bool {
	select {
	case <-s.ended:
		return false
	default:
		return true
	}
}

// open returns the streams open on c.
func (fs *fleetStreams) open(c *caddyProc) int { return fs.openOn([]*caddyProc{c}) }

// openOn returns the streams open on the instances of fleet.
func (fs *fleetStreams) openOn(fleet []*caddyProc) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n := 0
	for _, s := range fs.all {
		if slices.Contains(fleet, s.on) && s.isOpen() {
			n++
		}
	}
	return n
}

// busiest returns the instance with the most open streams.
func (fs *fleetStreams) busiest(fleet []*caddyProc) *caddyProc {
	best := fleet[0]
	for _, c := range fleet[1:] {
		if fs.open(c) > fs.open(best) {
			best = c
		}
	}
	return best
}

// revoked returns the streams sse ended cleanly (not the test, not a
// killed instance).
func (fs *fleetStreams) revoked() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n := 0
	for _, s := range fs.all {
		if !s.isOpen() && !s.closed && s.err == io.EOF {
			n++
		}
	}
	return n
}

// checkEnds checks how the streams that ended had ended: on a live
// instance, cleanly with a retry hint (a stream the rebuild had no room
// for); on the killed one, cut.
func (fs *fleetStreams) checkEnds(t *testing.T) {
	t.Helper()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, s := range fs.all {
		if s.isOpen() || s.closed {
			continue
		}
		alive := true
		select {
		case <-s.on.exited:
			alive = false
		default:
		}
		if alive && (s.err != io.EOF || !strings.HasPrefix(strings.TrimLeft(s.rest, "\n"), "retry:")) {
			t.Errorf("a stream of a live instance ended with %q (%v), want a retry hint and a clean end", s.rest, s.err)
		}
	}
}

// closeAll ends every stream from the client side, and waits for them.
func (fs *fleetStreams) closeAll() {
	fs.mu.Lock()
	all := slices.Clone(fs.all)
	for _, s := range all {
		s.closed = s.closed || s.isOpen()
	}
	fs.mu.Unlock()
	for _, s := range all {
		s.cancel()
		<-s.ended
	}
}

// allCounting reports whether every instance of fleet counts zone fleet
// in Redis (GET /sse/zones?mode=1).
func allCounting(t *testing.T, fleet []*caddyProc) bool {
	for _, c := range fleet {
		if zones(t, c)["fleet"].Mode != "redis" {
			return false
		}
	}
	return true
}

// zoneEmpty reports whether zone fleet has no open stream on any instance.
func zoneEmpty(t *testing.T, fleet []*caddyProc) bool {
	for _, c := range fleet {
		for _, n := range zones(t, c)["fleet"].Keys {
			if n != 0 {
				return false
			}
		}
	}
	return true
}

// zoneMode is one zone in GET /sse/zones?mode=1.
type zoneMode struct {
	Mode string         `json:"mode"`
	Keys map[string]int `json:"keys"`
}

func zones(t *testing.T, c *caddyProc) map[string]zoneMode {
	t.Helper()
	res, err := http.Get(fmt.Sprintf("http://localhost:%d/sse/zones?mode=1", c.Admin))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]zoneMode
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatalf("/sse/zones?mode=1: %v", err)
	}
	return out
}

// findSet returns the zone's one counting set, looked up on every running
// data node (a cluster's keys live on the primary of their slot).
func findSet(t *testing.T, servers []*testredis.Server) string {
	t.Helper()
	var found []string
	for _, n := range servers {
		for _, k := range n.Do(t, "--scan", "--pattern", "caddy-sse:{fleet}:k:*") {
			if k != "" && !slices.Contains(found, k) {
				found = append(found, k)
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one counting set, got %q", found)
	}
	return found[0]
}
