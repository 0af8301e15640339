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
	"sync"
	"sync/atomic"

	"github.com/caddy-sse/caddy-sse/internal/limit"
	"github.com/prometheus/client_golang/prometheus"
)

// How full the limit zones are, for the metrics (zoneCollector) and the
// admin API (/sse/zones). A zone's counters are keyed by "<key template>
// \x00<key>" (limits.go); per-key counts are never labels, since keys come
// from requests: the metrics give, per zone and key template, the streams
// counted, the keys in use, the fullest key's streams and the limit's max.

// zoneCollector exports the fill of every limit of the handlers that are
// provisioned now, and the state of their zones' Redis connections. A zone
// shared by handlers of several servers is reported under each of those
// servers, with the same values.
type zoneCollector struct {
	mu       sync.Mutex
	handlers map[*limitState]struct{} // the limits of provisioned handlers

	streams, keys, fullest, max *prometheus.Desc
	redisUp, redisTransitions   *prometheus.Desc
}

// provisions numbers the handlers' provisioning, so the newest config's
// limits win when an old and a new config are both provisioned.
var provisions atomic.Uint64

func newZoneCollector() *zoneCollector {
	labels := []string{"server", "zone", "per"}
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("caddy", "sse", name), help, labels, nil)
	}
	return &zoneCollector{
		handlers: make(map[*limitState]struct{}),
		streams:  desc("zone_streams", "Streams counted by the limits of a zone with this key template (per), over every key."),
		keys:     desc("zone_keys", "Keys with at least one stream counted, in a zone, by key template."),
		fullest:  desc("zone_fullest_key_streams", "Streams of the key with the most, in a zone, by key template: divide by caddy_sse_zone_max for how full the fullest key is."),
		max:      desc("zone_max", "The limit: the most streams one key may have open, in a zone, by key template."),
		redisUp: prometheus.NewDesc(prometheus.BuildFQName("caddy", "sse", "zone_redis_up"),
			"1 when a zone with redis counts its streams in Redis, 0 when it falls back (Redis unreachable, or registering this instance's streams again).",
			[]string{"server", "zone"}, nil),
		redisTransitions: prometheus.NewDesc(prometheus.BuildFQName("caddy", "sse", "zone_redis_transitions_total"),
			"Changes of how a zone with redis counts, by the mode entered: redis, local (Redis unreachable) or resync (Redis lost this instance's leases).",
			[]string{"server", "zone", "to"}, nil),
	}
}

// add makes the collector report lim, if it has limits.
func (c *zoneCollector) add(lim *limitState) {
	if lim.store == nil {
		return
	}
	lim.seq = provisions.Add(1)
	c.mu.Lock()
	c.handlers[lim] = struct{}{}
	c.mu.Unlock()
}

// remove stops reporting lim.
func (c *zoneCollector) remove(lim *limitState) {
	c.mu.Lock()
	delete(c.handlers, lim)
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *zoneCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.streams
	ch <- c.keys
	ch <- c.fullest
	ch <- c.max
	ch <- c.redisUp
	ch <- c.redisTransitions
}

// Collect implements prometheus.Collector. It reads each zone once, under
// that zone's lock alone.
func (c *zoneCollector) Collect(ch chan<- prometheus.Metric) {
	type series struct{ server, zone, per string }
	type limitOf struct {
		max, seq uint64
		c        *limit.Counters
		id       string
	}
	limits := make(map[series]limitOf)
	type store struct {
		s   *limit.Redis
		seq uint64
	}
	stores := make(map[series]store) // per is empty
	c.mu.Lock()
	for lim := range c.handlers {
		seq := lim.seq
		if lim.redis != nil {
			s := series{server: lim.srvName, zone: lim.zoneName}
			if cur, ok := stores[s]; !ok || seq > cur.seq {
				stores[s] = store{lim.redis, seq}
			}
		}
		for _, l := range lim.limits {
			s := series{lim.srvName, lim.zoneName, l.ID}
			if cur, ok := limits[s]; !ok || seq > cur.seq {
				limits[s] = limitOf{max: uint64(l.Max), seq: seq, c: lim.counters, id: l.ID}
			}
		}
	}
	c.mu.Unlock()

	usage := make(map[*limit.Counters]map[string]limit.Usage)
	for s, l := range limits {
		u, ok := usage[l.c]
		if !ok {
			u = l.c.Usage()
			usage[l.c] = u
		}
		lu := u[l.id]
		for _, m := range []struct {
			d *prometheus.Desc
			v float64
		}{
			{c.streams, float64(lu.Streams)},
			{c.keys, float64(lu.Keys)},
			{c.fullest, float64(lu.Fullest)},
			{c.max, float64(l.max)},
		} {
			ch <- prometheus.MustNewConstMetric(m.d, prometheus.GaugeValue, m.v, s.server, s.zone, s.per)
		}
	}
	for s, st := range stores {
		up := 0.0
		if st.s.Counting() {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.redisUp, prometheus.GaugeValue, up, s.server, s.zone)
		transitions := st.s.Transitions()
		for to, name := range limit.Modes {
			ch <- prometheus.MustNewConstMetric(c.redisTransitions, prometheus.CounterValue,
				float64(transitions[to]), s.server, s.zone, name)
		}
	}
}

// Interface guards
var _ prometheus.Collector = (*zoneCollector)(nil)
