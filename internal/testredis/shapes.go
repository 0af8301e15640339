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

package testredis

// The shapes production Redis comes in: a Redis Cluster made with
// redis-cli --cluster create, and a primary with a replica managed by
// three sentinels (Debian's redis-sentinel). All on loopback, with one
// password, no persistence.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Password is the password of every node of a Cluster or Sentinels.
const Password = "pw-shapes"

// Cluster is a Redis Cluster of three primaries, each with one replica.
type Cluster struct {
	Nodes []*Server // in the order given to redis-cli --cluster create
}

// StartCluster starts six nodes and makes them a cluster, and stops them
// when t ends. A replica takes over 2s after its primary stops answering.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	c := new(Cluster)
	var addrs []string
	for range 6 {
		n := start(t, Password, "--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
			"--masterauth", Password)
		c.Nodes = append(c.Nodes, n)
		addrs = append(addrs, n.Addr)
	}
	args := append([]string{"--no-auth-warning", "-a", Password, "--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v: %s", err, out)
	}
	for _, n := range c.Nodes {
		waitFor(t, "cluster_state:ok on "+n.Addr, func() bool {
			return strings.Contains(strings.Join(n.Do(t, "CLUSTER", "INFO"), "\n"), "cluster_state:ok")
		})
		// a replica that never synced with its primary cannot take over
		waitFor(t, "every replica in sync", func() bool {
			info := strings.Join(n.Do(t, "INFO", "replication"), "\n")
			return strings.Contains(info, "role:master") || strings.Contains(info, "master_link_status:up")
		})
	}
	return c
}

// PrimaryOf returns the running node that serves key's slot now, nil
// while none does (during a failover).
func (c *Cluster) PrimaryOf(t testing.TB, key string) *Server {
	t.Helper()
	var slot string
	for _, n := range c.Nodes {
		if !n.stopped() {
			slot = n.Do(t, "CLUSTER", "KEYSLOT", key)[0]
			break
		}
	}
	for _, n := range c.Nodes {
		if n.stopped() {
			continue
		}
		info := strings.Join(n.Do(t, "ROLE"), "\n")
		if !strings.HasPrefix(info, "master") {
			continue
		}
		if n.ownsSlot(t, slot) {
			return n
		}
	}
	return nil
}

// ownsSlot reports whether n, a primary, serves slot.
func (n *Server) ownsSlot(t testing.TB, slot string) bool {
	t.Helper()
	want, _ := strconv.Atoi(slot)
	for _, line := range n.Do(t, "CLUSTER", "NODES") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.Contains(f[2], "myself") {
			continue
		}
		for _, r := range f[8:] {
			lo, hi, _ := strings.Cut(r, "-")
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err2 != nil {
				b = a
			}
			if err1 == nil && want >= a && want <= b {
				return true
			}
		}
	}
	return false
}

// Sentinels are a primary and its replica, managed by three sentinels.
type Sentinels struct {
	Name             string    // the master name the sentinels monitor
	Primary, Replica *Server   // as started; a failover swaps their roles
	Sentinels        []*Server // the sentinels' processes
}

// StartSentinels starts a primary, a replica of it and three sentinels
// monitoring it as name (quorum 2, down after 1s), and stops them when t
// ends.
func StartSentinels(t testing.TB, name string) *Sentinels {
	t.Helper()
	p := start(t, Password, "--masterauth", Password)
	r := start(t, Password, "--masterauth", Password, "--replicaof", "127.0.0.1", strconv.Itoa(p.Port))
	s := &Sentinels{Name: name, Primary: p, Replica: r}
	waitFor(t, "the replica in sync", func() bool {
		return strings.Contains(strings.Join(r.Do(t, "INFO", "replication"), "\n"), "master_link_status:up")
	})
	for range 3 {
		s.Sentinels = append(s.Sentinels, startSentinel(t, name, p))
	}
	waitFor(t, "the sentinels to see each other and the replica", func() bool {
		for _, sn := range s.Sentinels {
			info := strings.Join(sn.Do(t, "SENTINEL", "MASTER", name), "\n")
			if !strings.Contains(info, "num-other-sentinels\n2") || !strings.Contains(info, "num-slaves\n1") {
				return false
			}
		}
		return true
	})
	return s
}

// startSentinel runs redis-sentinel (Debian's redis-sentinel package)
// monitoring primary as name.
func startSentinel(t testing.TB, name string, primary *Server) *Server {
	t.Helper()
	requireTools(t, "redis-sentinel")
	sn := &Server{dir: t.TempDir()}
	sn.Port = freePort(t)
	sn.Addr = fmt.Sprintf("127.0.0.1:%d", sn.Port)
	conf := filepath.Join(sn.dir, "sentinel.conf")
	text := fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
logfile %s
sentinel monitor %s 127.0.0.1 %d 2
sentinel auth-pass %s %s
sentinel down-after-milliseconds %s 1000
sentinel failover-timeout %s 5000
`, sn.Port, sn.dir, filepath.Join(sn.dir, "sentinel.log"), name, primary.Port, name, Password, name, name)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	sn.sentinel = []string{conf}
	sn.Restart(t)
	t.Cleanup(func() { sn.Stop(t) })
	return sn
}

// MasterAddr is where the sentinels say the primary is now.
func (s *Sentinels) MasterAddr(t testing.TB) string {
	t.Helper()
	r := s.Sentinels[0].Do(t, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.Name)
	if len(r) != 2 {
		t.Fatalf("SENTINEL GET-MASTER-ADDR-BY-NAME = %q", r)
	}
	return r[0] + ":" + r[1]
}

// Addrs are the sentinels' addresses.
func (s *Sentinels) Addrs() []string {
	var out []string
	for _, sn := range s.Sentinels {
		out = append(out, sn.Addr)
	}
	return out
}

// waitFor polls cond every 50ms, for at most 30s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %s", what)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, not a guess
	}
}

// WaitFor is waitFor for the tests.
func WaitFor(t testing.TB, what string, cond func() bool) { t.Helper(); waitFor(t, what, cond) }

// Log returns the server's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	return string(b)
}

// WaitReplicated waits until every server of others that replicates s has
// everything s had written when it was called: its replication offset
// has reached s's. A failover then loses nothing written before.
func (s *Server) WaitReplicated(t testing.TB, others []*Server) {
	t.Helper()
	off := s.replInfo(t, "master_repl_offset")
	for _, r := range others {
		if r == s || r.Stopped() || r.replInfo(t, "master_port") != int64(s.Port) {
			continue
		}
		waitFor(t, r.Addr+" to replicate "+s.Addr, func() bool { return r.replInfo(t, "slave_repl_offset") >= off })
	}
}

// replInfo returns a number of INFO replication, -1 if it is not there.
func (s *Server) replInfo(t testing.TB, field string) int64 {
	t.Helper()
	for _, line := range s.Do(t, "INFO", "replication") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}
