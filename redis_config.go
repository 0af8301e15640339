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

// The redis block of the config: its fields and their checks, the Caddyfile
// syntax, and the options it gives the zone's Redis store.

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/rueidis"
)

// RedisStore counts a zone's streams in Redis, so every Caddy instance
// that uses the same Redis and zone name shares the zone's limits: across
// the fleet, a key never has more open streams than its limit's max.
//
// Each stream holds a lease in Redis, renewed by its instance while the
// stream is open and released when it ends; a crashed instance's streams
// are free again within one lease. When Redis cannot be reached (or
// answers slower than Timeout), open streams go on untouched and new
// streams are handled as OnError says.
//
// A zone name (zone) is required, and every sse handler that uses the
// zone must have the same redis settings.
//
// EXPERIMENTAL: subject to change.
type RedisStore struct {
	// How the Redis is run: "simple", one server (or a managed service's
	// primary endpoint); "cluster", a Redis Cluster, Addresses being seed
	// nodes (the client discovers the others); "failover", a primary
	// managed by Redis Sentinel, Addresses being the sentinels and
	// MasterName the primary's name there. Default: "simple".
	ClientType string `json:"client_type,omitempty"`

	// The Redis server, for simple: host:port, or a URL
	// redis://[user:password@]host:port[/db] (rediss:// for TLS). The
	// fields below override the URL's parts. Placeholders such as
	// {env.REDIS_URL} are expanded. Either Address or Addresses is
	// required.
	Address string `json:"address,omitempty"`

	// The servers, as host:port: one for simple (the same as Address),
	// seed nodes for cluster, sentinels for failover. Placeholders are
	// expanded.
	Addresses []string `json:"addresses,omitempty"`

	// The name Sentinel knows the primary by (its "sentinel monitor"
	// name). Required with failover, and only there.
	MasterName string `json:"master_name,omitempty"`

	// The ACL user and password of the sentinels, when they ask for one
	// (failover only). Placeholders are expanded; the password is never
	// logged.
	SentinelUsername string `json:"sentinel_username,omitempty"`
	SentinelPassword string `json:"sentinel_password,omitempty"`

	// The ACL user name. Placeholders are expanded. Default: none (the
	// default user).
	Username string `json:"username,omitempty"`

	// The password. Use a placeholder such as {env.REDIS_PASSWORD} to keep
	// it out of the config. It is never logged.
	Password string `json:"password,omitempty"`

	// The database number. Default: 0.
	DB int `json:"db,omitempty"`

	// Connect with TLS. Default: plain TCP, unless the address is a
	// rediss:// URL.
	TLS *RedisTLS `json:"tls,omitempty"`

	// The prefix of every key sse writes. Default: "caddy-sse".
	KeyPrefix string `json:"key_prefix,omitempty"`

	// How long a stream's slot outlives its instance: the instance renews
	// its streams' leases every third of this, so after a crash the slots
	// are free again within one lease. At least 1s. Default: 30s.
	Lease caddy.Duration `json:"lease,omitempty"`

	// How long one Redis call may take before Redis counts as unreachable.
	// Admission waits at most this long. At most a third of Lease.
	// Default: 100ms.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// What to do with new streams while Redis is unreachable: "local"
	// admits them against this instance's own counters (each instance
	// enforces the limits alone), "refuse" refuses them the way a full
	// limit does. Default: "local".
	OnError string `json:"on_error,omitempty"`
}

// RedisTLS configures TLS to Redis.
type RedisTLS struct {
	// Do not verify the server's certificate.
	InsecureSkipVerify bool `json:"insecure_skip_verify,omitempty"`

	// A PEM file of CA certificates to verify the server's certificate
	// with, instead of the system's.
	CA string `json:"ca,omitempty"`
}

// check reports the first invalid field, named by its JSON path under
// "redis". It never quotes the address or the password: either may hold a
// secret.
func (r *RedisStore) check() error {
	return firstFailure([]fieldCheck{
		{"redis.client_type", ifSet(r.ClientType, checkClientType)},
		{r.addressField(), r.checkAddresses()},
		{"redis.master_name", r.checkMasterName()},
		{"redis.sentinel_username", r.onlyWithFailover(r.SentinelUsername)},
		{"redis.sentinel_password", r.onlyWithFailover(r.SentinelPassword)},
		{"redis.db", checkRedisDB(r.DB)},
		{"redis.db", r.checkClusterDB()},
		{"redis.key_prefix", checkRedisName(r.KeyPrefix)},
		{"redis.lease", ifSet(time.Duration(r.Lease), inJSON(checkRedisLease))},
		{"redis.lease", checkDuration(r.Lease)},
		{"redis.timeout", ifSet(time.Duration(r.Timeout), inJSON(checkRedisTimeout))},
		{"redis.timeout", checkTimeoutOfLease(r.timeout(), r.lease())},
		{"redis.on_error", ifSet(r.OnError, checkOnError)},
	})
}

// checkRedisAddress accepts a Redis address: required, and a URL must be
// a redis, rediss or unix one. An address with placeholders is checked
// once they are expanded (clientOption). It never quotes the address.
func checkRedisAddress(addr string) error {
	if addr == "" {
		return errors.New("required")
	}
	if strings.Contains(addr, "://") && !strings.Contains(addr, "{") {
		u, err := url.Parse(addr)
		if err != nil {
			return errors.New("not a valid URL")
		}
		if u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix" {
			return fmt.Errorf("the URL scheme must be redis, rediss or unix, got %q", u.Scheme)
		}
	}
	return nil
}

// checkClientType accepts how Redis is run: simple, cluster or failover.
func checkClientType(s string) error {
	switch s {
	case clientSimple, clientCluster, clientFailover:
		return nil
	}
	return fmt.Errorf("must be %q, %q or %q, got %q", clientSimple, clientCluster, clientFailover, s)
}

// clientType is how Redis is run, ClientType or its default.
func (r *RedisStore) clientType() string {
	if r.ClientType == "" {
		return clientSimple
	}
	return r.ClientType
}

// addresses are Address and Addresses, in that order.
func (r *RedisStore) addresses() []string {
	if r.Address == "" {
		return r.Addresses
	}
	return append([]string{r.Address}, r.Addresses...)
}

// addressField names the field an address error is about.
func (r *RedisStore) addressField() string {
	if r.Address == "" && len(r.Addresses) > 0 {
		return "redis.addresses"
	}
	return "redis.address"
}

// checkAddresses accepts the servers for the client type: one, a host:port
// or a URL, for simple; at least one host:port for cluster (seed nodes)
// and failover (sentinels). It never quotes an address.
func (r *RedisStore) checkAddresses() error {
	addrs := r.addresses()
	switch {
	case len(addrs) == 0:
		return errors.New("required")
	case r.clientType() == clientSimple && len(addrs) > 1:
		return fmt.Errorf("%d addresses for one server: use client_type cluster (seed nodes) or failover (sentinels)", len(addrs))
	}
	for i, a := range addrs {
		err := checkRedisAddress(a)
		if err == nil && r.clientType() != clientSimple && strings.Contains(a, "://") {
			err = fmt.Errorf("want host:port with client_type %s (a URL names one server)", r.clientType())
		}
		if err != nil && len(addrs) > 1 {
			err = fmt.Errorf("address %d: %w", i+1, err)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkMasterName requires the primary's name with failover, and only
// there.
func (r *RedisStore) checkMasterName() error {
	if r.clientType() == clientFailover && r.MasterName == "" {
		return errors.New("required with client_type failover: the name the sentinels monitor the primary by")
	}
	return r.onlyWithFailover(r.MasterName)
}

// onlyWithFailover rejects a sentinel setting v outside failover. It
// never quotes v, which may be a secret.
func (r *RedisStore) onlyWithFailover(v string) error {
	if v != "" && r.clientType() != clientFailover {
		return errors.New("only with client_type failover")
	}
	return nil
}

// checkClusterDB rejects a database number with cluster: a Redis Cluster
// has database 0 only.
func (r *RedisStore) checkClusterDB() error {
	if r.DB != 0 && r.clientType() == clientCluster {
		return errors.New("a Redis Cluster has database 0 only")
	}
	return nil
}

// checkRedisDB accepts a database number: not negative.
func checkRedisDB(n int) error {
	if n < 0 {
		return fmt.Errorf("must not be negative, got %d", n)
	}
	return nil
}

// checkRedisName rejects names that would break the key layout.
func checkRedisName(s string) error {
	if i := strings.IndexAny(s, "{}: \t\r\n"); i >= 0 {
		return fmt.Errorf("must not contain braces, colons or white space, got %q", s)
	}
	return nil
}

// checkRedisLease accepts a lease, spelt as: at least 1s (besides
// checkDurationAs).
func checkRedisLease(d time.Duration, as string) error {
	if d < time.Second {
		return fmt.Errorf("must be at least 1s, got %s", as)
	}
	return nil
}

// checkRedisTimeout accepts the timeout of a Redis call, spelt as: more
// than 0. Its maximum is checkTimeoutOfLease's.
func checkRedisTimeout(d time.Duration, as string) error {
	if err := checkNotNegative(d, as); err != nil {
		return err
	}
	if d == 0 {
		return errors.New("must be more than 0")
	}
	return nil
}

// checkTimeoutOfLease accepts a timeout of at most a third of the lease:
// leases are renewed every third of theirs, and a renewal must end, or
// time out, before the next is due.
func checkTimeoutOfLease(timeout, lease time.Duration) error {
	if timeout > lease/3 {
		return fmt.Errorf("%s is more than a third of the lease (%s)", timeout, lease)
	}
	return nil
}

// checkOnError accepts what to do with new streams while Redis is
// unreachable: local or refuse.
func checkOnError(s string) error {
	if s != onErrorLocal && s != onErrorRefuse {
		return fmt.Errorf("must be %q or %q, got %q", onErrorLocal, onErrorRefuse, s)
	}
	return nil
}

// lease is the lease, Lease or its default.
func (r *RedisStore) lease() time.Duration {
	if r.Lease == 0 {
		return defaultRedisLease
	}
	return time.Duration(r.Lease)
}

// timeout is the timeout of a Redis call, Timeout or its default.
func (r *RedisStore) timeout() time.Duration {
	if r.Timeout == 0 {
		return defaultRedisTimeout
	}
	return time.Duration(r.Timeout)
}

// onError is what to do while Redis is unreachable, OnError or its default.
func (r *RedisStore) onError() string {
	if r.OnError == "" {
		return onErrorLocal
	}
	return r.OnError
}

// prefix is the prefix of the keys, KeyPrefix or its default.
func (r *RedisStore) prefix() string {
	if r.KeyPrefix == "" {
		return defaultRedisPrefix
	}
	return r.KeyPrefix
}

// clientOption resolves placeholders and builds the client's options.
func (r *RedisStore) clientOption() (rueidis.ClientOption, error) {
	repl := caddy.NewReplacer()
	var addrs []string
	for _, a := range r.addresses() {
		addrs = append(addrs, repl.ReplaceAll(a, ""))
	}
	var opt rueidis.ClientOption
	if r.clientType() != clientSimple {
		for i, a := range addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return opt, fmt.Errorf("%s: address %d: want host:port", r.addressField(), i+1)
			}
		}
		opt.InitAddress = addrs
	} else if addr := addrs[0]; strings.Contains(addr, "://") {
		if _, err := url.Parse(addr); err != nil {
			return opt, errors.New("redis.address: not a valid URL")
		}
		o, err := rueidis.ParseURL(addr)
		if err != nil {
			return opt, errors.New("redis.address: not a valid redis URL (scheme, port or database number)")
		}
		opt = o
	} else {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return opt, errors.New("redis.address: want host:port or a redis:// URL")
		}
		opt.InitAddress = []string{addr}
	}
	if r.Username != "" {
		opt.Username = repl.ReplaceAll(r.Username, "")
	}
	if r.Password != "" {
		opt.Password = repl.ReplaceAll(r.Password, "")
	}
	if r.DB != 0 {
		opt.SelectDB = r.DB
	}
	if r.TLS != nil {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: r.TLS.InsecureSkipVerify}
		if opt.TLSConfig != nil {
			cfg.ServerName = opt.TLSConfig.ServerName
		}
		if cfg.ServerName == "" && r.clientType() == clientSimple {
			// a cluster's nodes and the sentinels are each verified by
			// the host they are dialled at (crypto/tls's default)
			if host, _, err := net.SplitHostPort(opt.InitAddress[0]); err == nil {
				cfg.ServerName = host
			}
		}
		if r.TLS.CA != "" {
			pem, err := os.ReadFile(r.TLS.CA)
			if err != nil {
				return opt, fmt.Errorf("redis.tls.ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return opt, fmt.Errorf("redis.tls.ca: no PEM certificate in %s", r.TLS.CA)
			}
			cfg.RootCAs = pool
		}
		opt.TLSConfig = cfg
	}
	timeout := r.timeout()
	opt.Dialer.Timeout = max(timeout, minDialTimeout)
	opt.ConnWriteTimeout = max(timeout, minDialTimeout)
	opt.DisableCache = true // no client-side caching: every count is read in a script
	opt.DisableRetry = true // a timed-out script is not retried: the breaker decides
	opt.ClientName = "caddy-sse"
	if r.clientType() == clientFailover {
		opt.Sentinel = rueidis.SentinelOption{
			MasterSet: repl.ReplaceAll(r.MasterName, ""),
			Username:  repl.ReplaceAll(r.SentinelUsername, ""),
			Password:  repl.ReplaceAll(r.SentinelPassword, ""),
			Dialer:    opt.Dialer,
			TLSConfig: opt.TLSConfig,
			// besides +switch-master events: a missed one would bind
			// the client to the old primary for good (rueidis's docs)
			TopologyRefreshInterval: sentinelRefresh,
			ClientName:              "caddy-sse",
		}
	}
	return opt, nil
}

// fingerprint identifies r's settings, password included (hashed), so
// handlers share a store only when their settings are the same.
func (r *RedisStore) fingerprint() string {
	tls := ""
	if r.TLS != nil {
		tls = fmt.Sprintf("%t|%s", r.TLS.InsecureSkipVerify, r.TLS.CA)
	}
	sum := sha256.Sum256([]byte(strings.Join([]string{
		r.clientType(), strings.Join(r.addresses(), ","), r.MasterName, r.SentinelUsername, r.SentinelPassword,
		r.Username, r.Password, strconv.Itoa(r.DB), tls,
		r.prefix(), r.lease().String(), r.timeout().String(), r.onError(),
	}, "\x00")))
	return hex.EncodeToString(sum[:8])
}

// checkRedisUse validates redis settings r against the rest of the
// handler: its zone name and its number of limits. Nil settings are valid.
func checkRedisUse(r *RedisStore, zone string, limits int) error {
	if r == nil {
		return nil
	}
	if zone == "" {
		return errors.New("redis: needs a zone name (zone <name>): every instance must count into the same keys, and default zone names can differ between instances")
	}
	if err := checkRedisName(zone); err != nil {
		return fmt.Errorf("zone: with redis, %w", err)
	}
	if limits == 0 {
		return errors.New("redis: has nothing to count without a limit")
	}
	return r.check()
}

// Defaults and bounds of the redis block.
const (
	defaultRedisLease   = 30 * time.Second
	defaultRedisTimeout = 100 * time.Millisecond
	defaultRedisPrefix  = "caddy-sse"
	onErrorLocal        = "local"
	onErrorRefuse       = "refuse"
	minDialTimeout      = time.Second // connecting (TCP, TLS, HELLO) may take longer than one call
	sentinelRefresh     = 5 * time.Second

	clientSimple   = "simple"
	clientCluster  = "cluster"
	clientFailover = "failover"
)
