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

// What the module asks of a managed Redis: the README's blocks for each
// service, and a user that may not run CLIENT.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/testredis"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/redis/rueidis"
)

// managedWant is what the module must make of a managed service's block.
type managedWant struct {
	shape      string   // client type
	addrs      []string // InitAddress
	tls        bool
	serverName string // verified name; "" for each node's own host
	ca         bool   // verified with the given CA
	user, pass string
	master     string // Sentinel master set
}

// managedBlocks are the README's blocks, by the first words of their
// comment.
var managedBlocks = map[string]managedWant{
	"AWS ElastiCache (Redis OSS or Valkey), cluster mode disabled": {shape: clientSimple,
		addrs: []string{"master.my-cache.abc123.use1.cache.amazonaws.com:6379"}, tls: true,
		serverName: "master.my-cache.abc123.use1.cache.amazonaws.com", user: "caddy", pass: "redis-pw"},
	"AWS ElastiCache, cluster mode enabled": {shape: clientCluster,
		addrs: []string{"clustercfg.my-cache.abc123.use1.cache.amazonaws.com:6379"}, tls: true, user: "caddy", pass: "redis-pw"},
	"Google Memorystore for Redis:": {shape: clientSimple, addrs: []string{"10.0.0.3:6378"}, tls: true,
		serverName: "10.0.0.3", ca: true, pass: "auth-string"},
	"Google Memorystore for Redis Cluster": {shape: clientCluster, addrs: []string{"10.0.0.4:6379"}, tls: true, ca: true},
	"Azure Cache for Redis:": {shape: clientSimple, addrs: []string{"my-cache.redis.cache.windows.net:6380"}, tls: true,
		serverName: "my-cache.redis.cache.windows.net", pass: "azure-key"},
	"Azure Cache for Redis with clustering": {shape: clientCluster, addrs: []string{"my-cache.redis.cache.windows.net:6380"},
		tls: true, pass: "azure-key"},
	"Valkey, self-run with Sentinel": {shape: clientFailover,
		addrs: []string{"10.0.0.5:26379", "10.0.0.6:26379", "10.0.0.7:26379"}, pass: "valkey-pw", master: "valkey-main"},
}

// Every block of the README's "Managed Redis" list is accepted, and makes
// the client the service needs: its shape and addresses, TLS verified
// against the right name, its user and password, and no client-side
// cache (no CLIENT TRACKING).
func TestRedisManagedServiceBlocks(t *testing.T) {
	t.Setenv("REDIS_PASSWORD", "redis-pw")
	t.Setenv("REDIS_AUTH", "auth-string")
	t.Setenv("AZURE_REDIS_KEY", "azure-key")
	t.Setenv("VALKEY_PASSWORD", "valkey-pw")
	ca := writeTestCA(t)
	blocks := readmeManagedBlocks(t)
	if len(blocks) != len(managedBlocks) {
		t.Fatalf("the README lists %d managed services, the test knows %d", len(blocks), len(managedBlocks))
	}
	for comment, block := range blocks {
		var want managedWant
		found := false
		for prefix, w := range managedBlocks {
			if strings.HasPrefix(comment, prefix) {
				want, found = w, true
			}
		}
		if !found {
			t.Errorf("the test does not know the README's block %q", comment)
			continue
		}
		block = strings.ReplaceAll(block, "/etc/caddy/memorystore-server-ca.pem", ca)
		h := new(Handler)
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("sse {\nzone z\nlimit 1\n" + block + "\n}")); err != nil {
			t.Errorf("%s: %v", comment, err)
			continue
		}
		if err := h.Redis.check(); err != nil {
			t.Errorf("%s: %v", comment, err)
			continue
		}
		opt, err := h.Redis.clientOption()
		if err != nil {
			t.Errorf("%s: %v", comment, err)
			continue
		}
		checkManaged(t, comment, h.Redis, opt, want)
	}
}

func checkManaged(t *testing.T, name string, r *RedisStore, opt rueidis.ClientOption, want managedWant) {
	t.Helper()
	if r.clientType() != want.shape || !reflect.DeepEqual(opt.InitAddress, want.addrs) {
		t.Errorf("%s: %s %v, want %s %v", name, r.clientType(), opt.InitAddress, want.shape, want.addrs)
	}
	if (opt.TLSConfig != nil) != want.tls {
		t.Errorf("%s: TLS %v, want %v", name, opt.TLSConfig != nil, want.tls)
	} else if want.tls {
		if opt.TLSConfig.ServerName != want.serverName || opt.TLSConfig.InsecureSkipVerify {
			t.Errorf("%s: TLS server name %q (insecure %v), want %q verified", name, opt.TLSConfig.ServerName, opt.TLSConfig.InsecureSkipVerify, want.serverName)
		}
		if (opt.TLSConfig.RootCAs != nil) != want.ca {
			t.Errorf("%s: own CA %v, want %v", name, opt.TLSConfig.RootCAs != nil, want.ca)
		}
	}
	if opt.Username != want.user || opt.Password != want.pass {
		t.Errorf("%s: user %q, password %q; want %q, %q", name, opt.Username, opt.Password, want.user, want.pass)
	}
	if opt.Sentinel.MasterSet != want.master {
		t.Errorf("%s: master set %q, want %q", name, opt.Sentinel.MasterSet, want.master)
	}
	if !opt.DisableCache {
		t.Errorf("%s: client-side caching on: the client would send CLIENT TRACKING", name)
	}
}

// readmeManagedBlocks returns the redis blocks of the README's "Managed
// Redis" list, by their comment.
func readmeManagedBlocks(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "#### Managed Redis\n")
	if !ok {
		t.Fatal("README.md has no Managed Redis section")
	}
	_, code, _ := strings.Cut(section, "```caddyfile\n")
	code, _, _ = strings.Cut(code, "```")
	out := make(map[string]string)
	var comment string
	for _, line := range strings.Split(code, "\n") {
		if c, ok := strings.CutPrefix(line, "# "); ok {
			comment = c
			continue
		}
		if comment != "" && line != "" {
			out[comment] += line + "\n"
		}
	}
	return out
}

// writeTestCA writes a CA certificate to a file, and returns its path.
func writeTestCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A managed service's ACL may allow few commands, and no CLIENT
// subcommand: a zone on a user allowed only what the README lists counts
// exactly. The control: the same user is refused a client that turns
// client-side caching on (CLIENT TRACKING), which is why the module keeps
// it off.
func TestRedisWithoutClientCommand(t *testing.T) {
	rs := testredis.Start(t)
	// the commands the README lists, and HELLO to connect: nothing else
	rs.Do(t, "ACL", "SETUSER", "managed", "on", ">managed-pw", "~*", "-@all", "+hello",
		"+evalsha", "+eval", "+zadd", "+zrem", "+zcard", "+zscore", "+zremrangebyscore",
		"+set", "+exists", "+pttl", "+pexpire", "+time")
	h := &Handler{
		Zone:   t.Name(),
		Limits: []Limit{{Max: 2, Per: "{http.request.header.X-Key}"}},
		Redis: &RedisStore{
			Address: rs.Addr, Username: "managed", Password: "managed-pw",
			Lease: caddy.Duration(2 * time.Second), Timeout: caddy.Duration(500 * time.Millisecond),
		},
	}
	h, _ = limHandler(t, h)
	if m := h.lim.redis.Mode(); m != "redis" {
		t.Fatalf("mode %q with a user denied CLIENT, want redis", m)
	}
	for i := range 2 {
		if s := openRedisStream(t, h, "k"); !s.admitted {
			t.Fatalf("stream %d refused within the limit", i+1)
		}
	}
	if s := openRedisStream(t, h, "k"); s.admitted {
		t.Fatal("a third stream was admitted with limit 2")
	}
	if n := rs.ZCard(t, redisSetKey(h, "k")); n != 2 {
		t.Fatalf("ZCARD = %d, want 2", n)
	}

	// the handshake of a client with tracking on sends CLIENT TRACKING
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{rs.Addr}, Username: "managed", Password: "managed-pw"})
	if err == nil {
		c.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "NOPERM") || !strings.Contains(strings.ToLower(err.Error()), "client|tracking") {
		t.Fatalf("a client with CLIENT TRACKING on, as this user: %v; want a NOPERM refusal of client|tracking", err)
	}
}
