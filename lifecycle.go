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
	"encoding/json"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// finish ends the request's part in sse, however it ended: it closes the
// stream, so nothing is written after ServeHTTP returns, releases the limit
// slots, and records the ending. It runs once, for every request, stream or
// not.
func (sw *streamWriter) finish(why endReason) {
	sw.finishOnce.Do(func() {
		st := &sw.st
		why = st.close(why)
		sw.h.release(sw)
		if sw.mode != modeStream {
			return
		}
		sw.h.streams.remove(st)
		sw.unregister()
		sw.logEnd(why)
		d := time.Since(st.start)
		m := sw.h.m
		m.open.Dec()
		if c := m.ended[why]; c != nil {
			c.Inc()
		}
		m.duration.Observe(d.Seconds())
		if c := sw.h.logger.Check(zapcore.DebugLevel, "stream ended"); c != nil {
			fields := []zap.Field{
				zap.String("reason", string(why)),
				zap.Duration("duration", d),
				zap.Int64("bytes", st.live.bytes.Load()),
				zap.Int64("heartbeats", st.live.heartbeats.Load()),
				zap.String("proto", sw.req.Proto),
			}
			if s := st.scanner; s != nil {
				fields = append(fields, zap.Int64("events", s.events))
				if s.hasID {
					fields = append(fields, zap.ByteString("last_event_id", s.lastID[:s.lastIDLen]))
				}
			}
			c.Write(fields...)
		}
	})
}

// streamSet holds a handler's open streams, so a shutdown or a reload can
// end them.
type streamSet struct {
	mu sync.Mutex
	m  map[*stream]struct{}
	// ending, once set, is applied to streams that open afterwards too:
	// a request in flight when the server began to shut down may still
	// turn into a stream.
	ending endReason
	window time.Duration
}

func (s *streamSet) add(st *stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[*stream]struct{})
	}
	s.m[st] = struct{}{}
	if s.ending != "" {
		st.scheduleEnd(s.ending, monotime()+randomIn(s.window))
	}
}

func (s *streamSet) remove(st *stream) {
	s.mu.Lock()
	delete(s.m, st)
	s.mu.Unlock()
}

// endAll schedules every stream, and every stream opened from now on, to end
// for why, each at a random moment within window.
func (s *streamSet) endAll(why endReason, window time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ending, s.window = why, window
	now := monotime()
	for st := range s.m {
		st.scheduleEnd(why, now+randomIn(window))
	}
	return len(s.m)
}

// len returns the number of open streams.
func (s *streamSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

func randomIn(window time.Duration) int64 {
	if window <= 0 {
		return 0
	}
	return rand.Int64N(int64(window))
}

// provisionLifecycle hooks h to its server's shutdown, which happens both
// when Caddy exits and when a reload replaces the config, and warns about
// server settings that cut quiet streams.
//
// A module cannot rely on the context's OnCancel for this: Caddy cancels
// the config's context only after the servers have shut down, and with
// the default eternal grace_period they never finish while streams are
// open.
func (h *Handler) provisionLifecycle(ctx caddy.Context) {
	srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if !ok || srv == nil {
		return
	}
	srv.RegisterOnShutdown(h.onServerShutdown)
	if srv.WriteTimeout > 0 {
		h.logger.Warn("server write_timeout ends every stream that lasts longer; streams behind sse are long-lived",
			zap.Duration("write_timeout", time.Duration(srv.WriteTimeout)))
	}
	if srv.WriteMinRate > 0 {
		h.logger.Warn("server write_min_rate aborts quiet streams, whose rate is a few bytes a second",
			zap.Int64("write_min_rate", srv.WriteMinRate))
	}
	if n := responseBuffers(srv.Routes); n != 0 {
		h.logger.Warn("a reverse_proxy in this server has response_buffers set; a stream it proxies is buffered before it reaches sse",
			zap.Int64("response_buffers", n))
	}
}

// onServerShutdown runs when the server h belongs to starts shutting down.
// On exit, every stream ends at once (at its next event boundary); on a
// reload, streams end only if drain_on_reload is set.
func (h *Handler) onServerShutdown() {
	switch {
	case caddy.Exiting():
		n := h.streams.endAll(endShutdown, 0)
		h.logger.Info("ending streams for shutdown", zap.Int("streams", n))
	case h.DrainOnReload > 0:
		n := h.streams.endAll(endDrain, time.Duration(h.DrainOnReload))
		h.logger.Info("draining streams of the old config",
			zap.Int("streams", n), zap.Duration("window", time.Duration(h.DrainOnReload)))
	}
}

// responseBuffers finds a reverse_proxy with response_buffers set among
// routes, looking into subroutes. Routes provisioned before this handler
// are walked as modules, the rest as the JSON they are loaded from.
func responseBuffers(routes caddyhttp.RouteList) int64 {
	for _, r := range routes {
		for _, mh := range r.Handlers {
			switch hd := mh.(type) {
			case *reverseproxy.Handler:
				if hd.ResponseBuffers != 0 {
					return hd.ResponseBuffers
				}
			case *caddyhttp.Subroute:
				if n := responseBuffers(hd.Routes); n != 0 {
					return n
				}
			}
		}
		for _, raw := range r.HandlersRaw {
			var v any
			if json.Unmarshal(raw, &v) == nil {
				if n := rawResponseBuffers(v); n != 0 {
					return n
				}
			}
		}
	}
	return 0
}

func rawResponseBuffers(v any) int64 {
	switch v := v.(type) {
	case map[string]any:
		if v["handler"] == "reverse_proxy" {
			if n, ok := v["response_buffers"].(float64); ok && n != 0 {
				return int64(n)
			}
		}
		for _, e := range v {
			if n := rawResponseBuffers(e); n != 0 {
				return n
			}
		}
	case []any:
		for _, e := range v {
			if n := rawResponseBuffers(e); n != 0 {
				return n
			}
		}
	}
	return 0
}
