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

// The fleet's count rebuilt in Redis after it stopped counting: three
// stores stand for three instances (each its own marker and local
// counters) sharing one zone on a real redis-server.

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/testredis"
	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// fleetMax is the limit of the fleet in these tests.
const fleetMax = 4

// instance is one store of the fleet, and the holds it admitted.
type instance struct {
	f     Fallback
	holds []*fleetHold
}

// fleetHold is an admitted stream, and whether its slot was revoked.
type fleetHold struct {
	h       *Hold
	local   bool // admitted while Redis did not count
	revoked atomic.Bool
}

func startFleet(t *testing.T, rs *testredis.Server, n int) []*instance {
	t.Helper()
	fleet := make([]*instance, n)
	for i := range fleet {
		r := NewRedis(RedisConfig{
			Zone: t.Name(), Prefix: "rebuild", Lease: 3 * time.Second, Timeout: 200 * time.Millisecond,
			Client: rueidis.ClientOption{InitAddress: []string{rs.Addr}, Password: rs.Password, DisableCache: true},
			Logger: zap.NewNop(),
		})
		t.Cleanup(func() { _ = r.Destruct() })
		fleet[i] = &instance{f: Fallback{Redis: r, Local: Local{Counters: NewCounters(), Limits: []Limit{{Max: fleetMax, ID: "k"}}}}}
	}
	return fleet
}

// admit admits streams on in until it refuses one, and returns how many.
func (in *instance) admit(t *testing.T, local bool) int {
	t.Helper()
	n := 0
	for {
		h, ref := in.f.Acquire([]string{Key("k", "v")})
		if ref != nil {
			return n
		}
		fh := &fleetHold{h: h, local: local}
		h.WhenRevoked(func() {
			if fh.revoked.Swap(true) {
				t.Error("a revocation ran twice")
			}
		})
		in.holds = append(in.holds, fh)
		n++
	}
}

// waitCounting waits until every instance counts in Redis again, after
// a renewal round that began after Redis came back (rounds: each
// instance's rounds before): an instance that saw no outage finds out at
// its next renewal that Redis lost its streams.
func waitCounting(t *testing.T, fleet []*instance, rounds []uint64) {
	t.Helper()
	testredis.WaitFor(t, "every instance to count in Redis again", func() bool {
		for i, in := range fleet {
			if in.f.Redis.Mode() != "redis" || in.f.Redis.rounds.Load() < rounds[i]+2 {
				return false
			}
		}
		return true
	})
}

// roundsOf returns how many renewal rounds each instance has done.
func roundsOf(fleet []*instance) []uint64 {
	out := make([]uint64, len(fleet))
	for i, in := range fleet {
		out[i] = in.f.Redis.rounds.Load()
	}
	return out
}

// members returns the members of the zone's set in Redis, sorted.
func members(t *testing.T, rs *testredis.Server, s *Redis) []string {
	t.Helper()
	var out []string
	for _, m := range rs.Do(t, "ZRANGE", s.SetKey(Key("k", "v")), "0", "-1") {
		if m != "" {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out
}

// checkRebuilt checks the fleet once every instance counts in Redis
// again: the set holds at most max members, exactly the streams whose
// slots were not revoked; the revoked ones are told once; and each
// instance's local counters still count all its holds until they are
// released.
func checkRebuilt(t *testing.T, rs *testredis.Server, fleet []*instance, rounds []uint64) (kept, revoked []*fleetHold) {
	t.Helper()
	waitCounting(t, fleet, rounds)
	var want []string
	for _, in := range fleet {
		for _, fh := range in.holds {
			if fh.revoked.Load() {
				revoked = append(revoked, fh)
				continue
			}
			kept = append(kept, fh)
			want = append(want, fh.h.lease.member)
		}
	}
	sort.Strings(want)
	got := members(t, rs, fleet[0].f.Redis)
	if len(got) > fleetMax {
		t.Fatalf("after the rebuild the key has %d streams in Redis, more than max %d", len(got), fleetMax)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("after the rebuild Redis holds %v, want the %d streams not revoked %v", got, len(want), want)
	}
	if len(kept) != fleetMax {
		t.Fatalf("%d streams kept their slot, want %d (the key was full)", len(kept), fleetMax)
	}
	return kept, revoked
}

// Redis stops counting while the key is full (paused: every call times
// out), each instance admits its own max against its local counters
// (on_error local), and Redis comes back with its data, as a replica in
// sync does after a failover: the streams Redis counted keep their slots,
// and every stream admitted locally is revoked, so no key has more than
// max open across the fleet.
func TestRebuildKeepsCountedStreams(t *testing.T) {
	rs := testredis.Start(t)
	fleet := startFleet(t, rs, 3)
	if a, b := fleet[0].admit(t, false), fleet[1].admit(t, false); a+b != fleetMax {
		t.Fatalf("admitted %d streams in Redis, want %d", a+b, fleetMax)
	}
	if n := fleet[2].admit(t, false); n != 0 {
		t.Fatalf("a third instance admitted %d streams over a full key", n)
	}
	rs.Pause(t)
	local := 0
	for _, in := range fleet {
		local += in.admit(t, true)
		if m := in.f.Redis.Mode(); m != "local" {
			t.Fatalf("mode %q while Redis does not answer, want local", m)
		}
	}
	// each instance caps the key alone: 4 - its own open streams
	if want := 3*fleetMax - fleetMax; local != want {
		t.Fatalf("admitted %d streams locally, want %d", local, want)
	}
	rounds := roundsOf(fleet)
	rs.Resume(t)
	kept, revoked := checkRebuilt(t, rs, fleet, rounds)
	for _, fh := range kept {
		if fh.local {
			t.Error("a stream admitted locally kept its slot over one Redis counted")
		}
	}
	if len(revoked) != local {
		t.Fatalf("%d slots revoked, want the %d admitted locally", len(revoked), local)
	}
	checkReleased(t, rs, fleet)
}

// Redis restarts empty: every slot is lost, and the count is rebuilt
// from what the instances hold, first come first served, up to max.
func TestRebuildAfterRestart(t *testing.T) {
	rs := testredis.Start(t)
	fleet := startFleet(t, rs, 3)
	fleet[0].admit(t, false)
	rs.Stop(t)
	for _, in := range fleet[1:] {
		if n := in.admit(t, true); n != fleetMax {
			t.Fatalf("admitted %d streams locally, want %d", n, fleetMax)
		}
	}
	rounds := roundsOf(fleet)
	rs.Restart(t)
	checkRebuilt(t, rs, fleet, rounds)
	checkReleased(t, rs, fleet)
}

// checkReleased ends every stream, the revoked ones as their streams
// would, concurrently: nothing is left in Redis or in the local counters.
func checkReleased(t *testing.T, rs *testredis.Server, fleet []*instance) {
	t.Helper()
	var wg sync.WaitGroup
	for _, in := range fleet {
		for _, fh := range in.holds {
			wg.Go(fh.h.Release)
		}
	}
	wg.Wait()
	for i, in := range fleet {
		if c := in.f.Local.Counters.Snapshot(); len(c) != 0 {
			t.Errorf("instance %d: local counters %v after every stream ended", i, c)
		}
	}
	testredis.WaitFor(t, "the key to empty in Redis", func() bool { return len(members(t, rs, fleet[0].f.Redis)) == 0 })
}
