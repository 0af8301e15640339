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
	"time"

	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/prometheus/client_golang/prometheus"
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
	early      *prometheus.CounterVec
	earlyEnds  *prometheus.CounterVec
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
	early: newCounterVec("streams_opened_early_total",
		"Streams sse opened itself because the upstream had not answered within open_after.",
		"server"),
	earlyEnds: newCounterVec("early_answers_total",
		"What the upstream answered after sse opened its stream early: stream (a 200 event stream continued it), error (no stream; the client got an error event or a retry field) or none (the stream ended first: the client left, or sse ended it).",
		"server", "answer"),
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
		metrics.heartbeats, metrics.early, metrics.earlyEnds, metrics.firstByte, metrics.duration, metrics.zones,
	} {
		if err := reg.Register(c); err != nil {
			if are := (prometheus.AlreadyRegisteredError{}); !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
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
	openedEarly     prometheus.Counter
	earlyAnswers    map[string]prometheus.Counter           // by answer; read-only after newHandlerMetrics
	endedBy         map[stream.EndReason]prometheus.Counter // read-only after newHandlerMetrics
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
		openedEarly:     metrics.early.WithLabelValues(server),
		earlyAnswers:    make(map[string]prometheus.Counter, len(earlyAnswers)),
		endedBy:         make(map[stream.EndReason]prometheus.Counter, len(stream.EndReasons)),
	}
	for _, a := range earlyAnswers {
		m.earlyAnswers[a] = metrics.earlyEnds.WithLabelValues(server, a)
	}
	for _, r := range stream.EndReasons {
		m.endedBy[r] = metrics.ended.WithLabelValues(server, zone, string(r))
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

// ended records a stream that ended for why after d.
func (m *handlerMetrics) ended(why stream.EndReason, d time.Duration) {
	m.open.Dec()
	if c := m.endedBy[why]; c != nil {
		c.Inc()
	}
	m.duration.Observe(d.Seconds())
}

// HeartbeatWritten implements stream.Observer.
func (m *handlerMetrics) HeartbeatWritten() { m.heartbeats.Inc() }

// The answers of an upstream after sse opened its stream early: values of
// the early_answers metric's answer and of the sse_upstream_answer field.
const (
	answerStream = "stream"
	answerError  = "error"
	answerNone   = "none"
)

var earlyAnswers = [...]string{answerStream, answerError, answerNone}

// The values of the sse_refused field, and of the refused metric's reason.
const (
	refusedLimit    = "limit"
	refusedUpstream = "upstream"
	refusedRedis    = "redis"
)

// Interface guards
var _ stream.Observer = (*handlerMetrics)(nil)
