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
	"strings"
	"sync"

	"github.com/caddy-sse/caddy-sse/internal/limit"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// limitState is a handler's limits at run time.
type limitState struct {
	store    limit.Store       // admits h's streams; nil without limits
	counters *limit.Counters   // the zone's counters in this process
	limits   []limit.Limit     // Limits, with their counter ids
	zoneName string            // name of h's zone, "" without limits
	zoneKey  string            // key of counters in the zones pool
	server   *caddyhttp.Server // key of h's entry in occurrences, if any

	redis     *limit.Redis // the zone's Redis side, shared through redisStores (redis_config.go)
	redisKey  string       // key of redis in the redisStores pool
	redisLoad any          // the config load h checked its zone's redis settings in
}

// zones holds the stream counters. It lives at package level so a config
// reload does not reset them: Caddy provisions the new config before it
// cleans up the old one, so a zone in use by both survives the reload, and
// streams still running on the old config release into the same counters.
var zones = caddy.NewUsagePool()

// occurrences numbers the sse handlers of each server within a config
// load, to tell their default zones apart.
var occurrences sync.Map // *caddyhttp.Server → *int

// provisionLimits attaches h to its counter zone and, with redis, to the
// zone's Redis store. The default zone name is made of the server's name
// and h's position among the server's sse handlers, so it is the same
// across reloads of the same config.
func (h *Handler) provisionLimits(ctx caddy.Context, srv *caddyhttp.Server) error {
	if len(h.Limits) == 0 {
		return nil
	}
	lim := &h.lim
	name := h.Zone
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
		return fmt.Errorf("loading stream counters: %w", err)
	}
	lim.counters = z.(*limit.Counters)
	lim.limits = make([]limit.Limit, len(h.Limits))
	for i, l := range h.Limits {
		lim.limits[i] = limit.Limit{Max: l.Max, ID: l.Per}
	}
	local := limit.Local{Counters: lim.counters, Limits: lim.limits}
	lim.store = local
	if err := h.provisionRedis(ctx); err != nil {
		return err
	}
	if lim.redis != nil {
		lim.store = limit.Fallback{Redis: lim.redis, Local: local, Refuse: h.Redis.onError() == onErrorRefuse}
	}
	return nil
}

// cleanupLimits releases h's hold on its zone and its Redis store.
func (h *Handler) cleanupLimits() error {
	if h.lim.server != nil {
		occurrences.Delete(h.lim.server)
	}
	err := h.cleanupRedis()
	if h.lim.zoneKey != "" {
		_, zerr := zones.Delete(h.lim.zoneKey)
		err = errors.Join(err, zerr)
	}
	return err
}

// serverName returns the name the server has in the http app's config.
func serverName(srv *caddyhttp.Server) string {
	if srv == nil {
		return ""
	}
	return srv.Name()
}

// admit counts sw's request against every limit, or counts it against none
// and returns the refusal. Either way it is done once per request.
func (h *Handler) admit(sw *streamWriter) *limit.Refusal {
	sw.admitted = true
	if h.lim.store == nil {
		return nil
	}
	repl, _ := sw.req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	keys := make([]string, len(h.lim.limits))
	for i, l := range h.lim.limits {
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
	hold, ref := h.lim.store.Acquire(keys)
	sw.hold = hold
	return ref
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
