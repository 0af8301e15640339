package caddysse

import (
	"testing"

	"github.com/caddy-sse/caddy-sse/internal/testredis"

	"github.com/prometheus/client_golang/prometheus"
)

// The Redis side of a zone is exported with the server and zone of the
// handlers that use it, like every caddy_sse_ series: zone_redis_up is 1
// while the zone counts in Redis and 0 once it falls back, and
// zone_redis_transitions_total counts the change, by the mode entered.
// Issue 14, item 2.
func TestZoneRedisMetrics(t *testing.T) {
	rs := testredis.Start(t)
	h := redisHandler(t, rs, "metrics", onErrorLocal)
	h.lim.srvName = "srvR" // as Provision sets it inside a server
	labels := []string{"server", "srvR", "zone", h.lim.zoneName}
	if v := collectedValue(t, metrics.zones, "caddy_sse_zone_redis_up", labels...); v != 1 {
		t.Fatalf("zone_redis_up = %v with Redis up, want 1", v)
	}
	rs.Stop(t)
	openRedisStream(t, h, "k") // trips the breaker
	limWaitFor(t, "the zone to fall back", func() bool { return h.lim.redis.Mode() == "local" })
	if v := collectedValue(t, metrics.zones, "caddy_sse_zone_redis_up", labels...); v != 0 {
		t.Errorf("zone_redis_up = %v with Redis down, want 0", v)
	}
	if v := collectedValue(t, metrics.zones, "caddy_sse_zone_redis_transitions_total", append(labels, "to", "local")...); v != 1 {
		t.Errorf("zone_redis_transitions_total{to=local} = %v, want 1", v)
	}
}

// collectedValue returns the value of the one series named name, with the
// given labels among its own, that c collects; it fails the test if there
// is not exactly one.
func collectedValue(t testing.TB, c prometheus.Collector, name string, labels ...string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var found []float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.Metric {
			if labelsMatch(m, labels) {
				found = append(found, m.GetGauge().GetValue()+m.GetCounter().GetValue())
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d series, want 1", name, labels, len(found))
	}
	return found[0]
}
