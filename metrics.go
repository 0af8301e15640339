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
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are created once, at package level, and registered on every
// config load's registry (each load has a new one), so they keep counting
// across reloads. No label carries a client-controlled value.
var metrics = struct {
	open       prometheus.Gauge
	total      prometheus.Counter
	refused    *prometheus.CounterVec
	ended      *prometheus.CounterVec
	heartbeats prometheus.Counter
	firstByte  prometheus.Histogram
	duration   prometheus.Histogram
}{
	open: prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "streams_open",
		Help: "Event streams open now.",
	}),
	total: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "streams_total",
		Help: "Event streams opened.",
	}),
	refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "streams_refused_total",
		Help: "Streams refused, by reason: limit (a limit was full), upstream (the upstream failed before the stream began) or redis (a zone's Redis was unreachable, with on_error refuse).",
	}, []string{"reason"}),
	ended: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "streams_ended_total",
		Help: "Streams ended, by reason: client, upstream, max_duration, idle_timeout, shutdown, drain, error.",
	}, []string{"reason"}),
	heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "heartbeats_total",
		Help: "Heartbeat comments written.",
	}),
	firstByte: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "first_byte_seconds",
		Help:    "Time from the request to the first byte of the upstream's stream body: time to first event or token.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}),
	duration: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "stream_duration_seconds",
		Help:    "How long streams stayed open.",
		Buckets: []float64{1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600},
	}),
}

// registerMetrics registers the collectors on reg, once per registry.
func registerMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{
		metrics.open, metrics.total, metrics.refused, metrics.ended,
		metrics.heartbeats, metrics.firstByte, metrics.duration,
	} {
		if err := reg.Register(c); err != nil {
			if are := (prometheus.AlreadyRegisteredError{}); !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

func init() {
	// make every label value exist from the start, so dashboards and
	// alerts see zeros instead of missing series
	for _, r := range []string{"limit", "upstream", "redis"} {
		metrics.refused.WithLabelValues(r)
	}
	for _, r := range []endReason{endClient, endUpstream, endMaxDuration, endIdleTimeout, endShutdown, endDrain, endError} {
		metrics.ended.WithLabelValues(string(r))
	}
}
