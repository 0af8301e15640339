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

// The limits as the adapter sees them: each handler's zone of counters,
// kept across reloads, the keys of a request from its placeholders, and
// the store that admits against them (internal/limit).

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/caddy-sse/caddy-sse/internal/limit"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Limit caps the number of concurrent streams that share a key.
type Limit struct {
	// The most streams open at once for one key. Required, at least 1.
	Max int `json:"max"`

	// The key streams are counted by: a placeholder such as {client_ip}
	// or {http.request.header.Authorization}, expanded per request.
	// Keys longer than 128 bytes are hashed. A request whose key expands
	// to the empty string (the header is missing, say) is not counted
	// against this limit, as nginx's limit_conn does; to cap such
	// requests too, use a key that is never empty, such as
	// "{http.request.header.Authorization}{client_ip}". Default:
	// "{http.request.host}".
	Per string `json:"per,omitempty"`
}

// limitState is a handler's limits at run time: the store that admits its
// streams and what the metrics and the admin API read of it.
type limitState struct {
	store    limit.Store       // admits the streams; nil without limits
	counters *limit.Counters   // the zone's counters in this process
	limits   []limit.Limit     // Limits, with their counter ids
	config   []Limit           // Limits as configured, for the log
	zoneName string            // the zone's name, "" without limits
	zoneKey  string            // key of counters in the zones pool
	server   *caddyhttp.Server // key of the handler's entry in occurrences, if any
	srvName  string            // the server's name, for the metrics
	seq      uint64            // provisioning order, newest highest (zonestats.go)

	redis     *limit.Redis // the zone's Redis side, shared through redisStores (redis_config.go)
	redisKey  string       // key of redis in the redisStores pool
	redisLoad any          // the config load the zone's redis settings were checked in
}

// zones holds the stream counters. It lives at package level so a config
// reload does not reset them: Caddy provisions the new config before it
// cleans up the old one, so a zone in use by both survives the reload, and
// streams still running on the old config release into the same counters.
var zones = caddy.NewUsagePool()

// occurrences numbers the sse handlers of each server within a config
// load, to tell their default zones apart.
var occurrences sync.Map // *caddyhttp.Server → *int

// newLimitState attaches a handler with limits (whose zone setting is
// zone, "" for the default) to its counter zone and, with redis, to the
// zone's Redis store. The default zone name is made of the server's name
// and the handler's position among the server's sse handlers, so it is the
// same across reloads of the same config. Without limits it returns an
// empty state.
func newLimitState(ctx caddy.Context, srv *caddyhttp.Server, zone string, limits []Limit, redis *RedisStore, logger *zap.Logger) (limitState, error) {
	lim := limitState{srvName: serverName(srv)}
	if len(limits) == 0 {
		return lim, nil
	}
	name := zone
	if name == "" {
		v, _ := occurrences.LoadOrStore(srv, new(int))
		n := v.(*int)
		*n++ // provisioning of one config is sequential
		name = fmt.Sprintf("%s#%d", serverName(srv), *n)
		lim.server = srv
	}
	lim.zoneName = name
	lim.zoneKey = zonePoolPrefix + name
	z, _, err := zones.LoadOrNew(lim.zoneKey, func() (caddy.Destructor, error) {
		return limit.NewCounters(), nil
	})
	if err != nil {
		return lim, fmt.Errorf("loading stream counters: %w", err)
	}
	lim.counters = z.(*limit.Counters)
	lim.config = limits
	lim.limits = make([]limit.Limit, len(limits))
	for i, l := range limits {
		lim.limits[i] = limit.Limit{Max: l.Max, ID: l.Per}
	}
	local := limit.Local{Counters: lim.counters, Limits: lim.limits}
	lim.store = local
	if zone == "" {
		return lim, nil
	}
	if err := lim.provisionRedis(ctx, zone, redis, logger); err != nil { // redis_config.go
		return lim, err
	}
	if lim.redis != nil {
		lim.store = limit.Fallback{Redis: lim.redis, Local: local, Refuse: redis.onError() == onErrorRefuse}
	}
	return lim, nil
}

// cleanup releases the hold on the zone and its Redis store.
func (lim *limitState) cleanup() error {
	if lim.server != nil {
		occurrences.Delete(lim.server)
	}
	err := lim.cleanupRedis()
	if lim.zoneKey != "" {
		_, zerr := zones.Delete(lim.zoneKey)
		err = errors.Join(err, zerr)
	}
	return err
}

// redisStores holds the Redis side of zones, by zone name and settings,
// so a reload with the same settings keeps the leases and the connection.
var redisStores = caddy.NewUsagePool()

// redisLoads records, per config load (each has its own metrics
// registry), the settings each zone uses, so two blocks that share a zone
// with different Redis settings are an error.
var redisLoads sync.Map // *prometheus.Registry → *sync.Map (zone → fingerprint)

// provisionRedis attaches lim, the limits of a handler whose zone is
// named zone, to the zone's Redis store, if r (its redis settings) is set.
// It checks that every block of the config load that shares the zone has
// the same redis settings, or none.
func (lim *limitState) provisionRedis(ctx caddy.Context, zone string, r *RedisStore, logger *zap.Logger) error {
	fp := "" // no redis
	if r != nil {
		if err := checkRedisUse(r, zone, len(lim.limits)); err != nil {
			return err
		}
		fp = r.fingerprint()
	}
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		v, _ := redisLoads.LoadOrStore(reg, new(sync.Map))
		if prev, loaded := v.(*sync.Map).LoadOrStore(zone, fp); loaded && prev != fp {
			return fmt.Errorf("redis: zone %q is used with other redis settings (or none) by another sse block; blocks that share a zone must share its redis settings", zone)
		}
		lim.redisLoad = reg
	}
	if r == nil {
		return nil
	}
	opt, err := r.clientOption()
	if err != nil {
		return err
	}
	lim.redisKey = "sse.redis." + zone + "\x00" + fp
	cfg := limit.RedisConfig{
		Zone:    zone,
		Prefix:  r.prefix(),
		Lease:   r.lease(),
		Timeout: r.timeout(),
		Refuse:  r.onError() == onErrorRefuse,
		Client:  opt,
		Logger:  logger,
	}
	v, _, err := redisStores.LoadOrNew(lim.redisKey, func() (caddy.Destructor, error) {
		return limit.NewRedis(cfg), nil
	})
	if err != nil {
		return err
	}
	lim.redis = v.(*limit.Redis)
	return nil
}

// cleanupRedis releases lim's hold on its store.
func (lim *limitState) cleanupRedis() error {
	if lim.redisLoad != nil {
		redisLoads.Delete(lim.redisLoad)
	}
	if lim.redisKey == "" {
		return nil
	}
	_, err := redisStores.Delete(lim.redisKey)
	return err
}

// serverName returns the name the server has in the http app's config.
func serverName(srv *caddyhttp.Server) string {
	if srv == nil {
		return ""
	}
	return srv.Name()
}

// admit counts r's stream against every limit, or counts it against none
// and returns the refusal; a nil hold and no refusal when nothing counts
// it (no limits, or every key empty).
func (lim *limitState) admit(r *http.Request) (*limit.Hold, *limit.Refusal) {
	if lim.store == nil {
		return nil, nil
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	keys := make([]string, len(lim.limits))
	for i, l := range lim.limits {
		key := l.ID
		if repl != nil {
			key = repl.ReplaceAll(l.ID, "")
		}
		// a key whose value is missing (no such header, say) does not
		// count the request, as nginx's limit_conn does not; a key that
		// must cap anonymous clients names something never empty too,
		// such as {client_ip}
		keys[i] = limit.Key(l.ID, key)
	}
	return lim.store.Acquire(keys)
}

// checkLimitKey rejects keys that would count every request the same,
// or name placeholders that are never set at admission time.
func checkLimitKey(per string) error {
	if per == "" {
		return nil
	}
	if !strings.Contains(per, "{") {
		return fmt.Errorf("%q has no placeholder, so every stream would share one counter; use a placeholder such as {http.request.host} or {client_ip}", per)
	}
	rest := per
	for {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			return nil
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return fmt.Errorf("%q has an unclosed placeholder", per)
		}
		name := rest[open+1 : open+end]
		if !knownPlaceholder(name) {
			return fmt.Errorf("unknown placeholder {%s} in %q: use one known when the request arrives, such as {http.request.host}, {http.request.header.*}, {http.vars.client_ip} ({client_ip} in a Caddyfile) or {http.request.remote.host}", name, per)
		}
		rest = rest[open+end+1:]
	}
}

// knownPlaceholder reports whether a placeholder is set before the handlers
// inside sse run.
func knownPlaceholder(name string) bool {
	for _, prefix := range [...]string{
		"http.request.", "http.vars.", "http.regexp.", "http.auth.user.",
		"http.matchers.", "tls.client.", "env.", "system.",
	} {
		if strings.HasPrefix(name, prefix) && len(name) > len(prefix) {
			return true
		}
	}
	return false
}

// Defaults of the limits.
const (
	defaultLimitKey = "{http.request.host}"
	// zonePoolPrefix starts the keys of zones in the zones pool.
	zonePoolPrefix = "sse.zone."
)
