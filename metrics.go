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
	"sync"
	"time"

	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// metrics are created once, at package level, and registered on every
// config load's registry (each load has a new one), so they keep counting
// across reloads. Every series carries the Caddy server's name (server);
// refusals and ends carry the limit zone's name (zone, empty for a handler
// without limits). No label carries a client-controlled value: servers and
// zones are named by the config.
var metrics = struct {
	open       *prometheus.GaugeVec
	total      *prometheus.CounterVec
	refused    *prometheus.CounterVec
	ended      *prometheus.CounterVec
	heartbeats *prometheus.CounterVec
	firstByte  *prometheus.HistogramVec
	duration   *prometheus.HistogramVec
	zones      *zoneCollector
}{
	open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "streams_open",
		Help: "Event streams open now.",
	}, []string{"server"}),
	total: newCounterVec("streams_total",
		"Event streams opened.",
		"server"),
	refused: newCounterVec("streams_refused_total",
		"Streams refused, by reason: limit (a limit of the zone was full), upstream (the upstream failed before the stream began, and the EventSource client was told to come back with a retry field) or redis (the zone's Redis was unreachable, with on_error refuse).",
		"server", "zone", "reason"),
	ended: newCounterVec("streams_ended_total",
		"Streams ended, by reason: client, upstream, max_duration, idle_timeout, shutdown, drain, error.",
		"server", "zone", "reason"),
	heartbeats: newCounterVec("heartbeats_total",
		"Heartbeat comments written.",
		"server"),
	firstByte: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "first_byte_seconds",
		Help:    "Time from the request to the first byte of the upstream's stream body: time to first event or token.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"server"}),
	duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "sse", Name: "stream_duration_seconds",
		Help:    "How long streams stayed open.",
		Buckets: []float64{1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600},
	}, []string{"server"}),
	zones: newZoneCollector(),
}

// newCounterVec returns the counter family caddy_sse_<name>, with these
// help text and labels.
func newCounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse", Name: name,
		Help: help,
	}, labels)
}

// registerMetrics registers the collectors on reg, once per registry.
func registerMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{
		metrics.open, metrics.total, metrics.refused, metrics.ended,
		metrics.heartbeats, metrics.firstByte, metrics.duration, metrics.zones,
	} {
		if err := reg.Register(c); err != nil {
			if are := (prometheus.AlreadyRegisteredError{}); !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

// observability is what a handler reports with: its metric series, the
// names they carry, and notices logged once.
type observability struct {
	m           *handlerMetrics
	server      string     // name of h's server in the http app, "" outside one
	seq         uint64     // provisioning order, newest highest (zonestats.go)
	loggedCoded *sync.Once // the upstream-compressed stream notice is logged once
}

// provisionObservability looks up h's series and has the zone collector
// report h's limits.
func (h *Handler) provisionObservability(srv *caddyhttp.Server) {
	h.obs.server = serverName(srv)
	h.obs.loggedCoded = new(sync.Once)
	h.obs.m = newHandlerMetrics(h.obs.server, h.lim.zoneName)
	metrics.zones.add(h)
}

// streamEnded records how sw's stream ended: the metrics, the access log
// fields and, at debug level, a log line.
func (o *observability) streamEnded(sw *streamWriter, why stream.EndReason) {
	sw.logEnd(why) // logfields.go
	d := time.Since(sw.start)
	m := o.m
	m.open.Dec()
	if c := m.ended[why]; c != nil {
		c.Inc()
	}
	m.duration.Observe(d.Seconds())
	if c := sw.h.logger.Check(zapcore.DebugLevel, "stream ended"); c != nil {
		st := &sw.st
		fields := []zap.Field{
			zap.String("reason", string(why)),
			zap.Duration("duration", d),
			zap.Int64("bytes", st.Bytes()),
			zap.Int64("heartbeats", st.Heartbeats()),
			zap.String("proto", sw.req.Proto),
		}
		if s := st.Scanner(); s != nil {
			fields = append(fields, zap.Int64("events", s.Events()))
			if id, ok := s.LastID(); ok {
				fields = append(fields, zap.ByteString("last_event_id", id))
			}
		}
		c.Write(fields...)
	}
}

// handlerMetrics are the series of one handler's server and zone, looked
// up once at Provision, so a request never hashes label values. They are
// the Observer of the handler's streams.
type handlerMetrics struct {
	open            prometheus.Gauge
	total           prometheus.Counter
	heartbeats      prometheus.Counter
	firstByte       prometheus.Observer
	duration        prometheus.Observer
	refusedLimit    prometheus.Counter
	refusedUpstream prometheus.Counter
	refusedRedis    prometheus.Counter
	ended           map[stream.EndReason]prometheus.Counter // read-only after newHandlerMetrics
}

// newHandlerMetrics returns the series of a handler on server with this
// zone. It creates every label value at once, so dashboards and alerts see
// zeros instead of missing series.
func newHandlerMetrics(server, zone string) *handlerMetrics {
	m := &handlerMetrics{
		open:            metrics.open.WithLabelValues(server),
		total:           metrics.total.WithLabelValues(server),
		heartbeats:      metrics.heartbeats.WithLabelValues(server),
		firstByte:       metrics.firstByte.WithLabelValues(server),
		duration:        metrics.duration.WithLabelValues(server),
		refusedLimit:    metrics.refused.WithLabelValues(server, zone, "limit"),
		refusedUpstream: metrics.refused.WithLabelValues(server, zone, "upstream"),
		refusedRedis:    metrics.refused.WithLabelValues(server, zone, "redis"),
		ended:           make(map[stream.EndReason]prometheus.Counter, len(stream.EndReasons)),
	}
	for _, r := range stream.EndReasons {
		m.ended[r] = metrics.ended.WithLabelValues(server, zone, string(r))
	}
	return m
}

// Opened implements stream.Observer.
func (m *handlerMetrics) Opened() {
	m.open.Inc()
	m.total.Inc()
}

// FirstByte implements stream.Observer.
func (m *handlerMetrics) FirstByte(since time.Duration) { m.firstByte.Observe(since.Seconds()) }

// Heartbeat implements stream.Observer.
func (m *handlerMetrics) Heartbeat() { m.heartbeats.Inc() }

// Interface guards
var _ stream.Observer = (*handlerMetrics)(nil)
