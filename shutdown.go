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

// Exit and reload: the hook that ends a handler's streams when its server
// shuts down, at once on exit, over drain_on_reload on a reload.

import (
	"time"

	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// lifecycle ends a handler's streams (group) when its server shuts down.
type lifecycle struct {
	group  *stream.Group
	drain  time.Duration // drain_on_reload; 0 keeps the old config's streams open on a reload
	logger *zap.Logger
}

// hookShutdown hooks l to srv's shutdown, which happens both when Caddy
// exits and when a reload replaces the config.
//
// A module cannot rely on the context's OnCancel for this: Caddy cancels
// the config's context only after the servers have shut down, and with
// the default eternal grace_period they never finish while streams are
// open.
func (l *lifecycle) hookShutdown(srv *caddyhttp.Server) {
	if srv != nil {
		srv.RegisterOnShutdown(l.onServerShutdown)
	}
}

// onServerShutdown runs when the server starts shutting down. On exit,
// every stream ends at once (at its next event boundary); on a reload,
// streams end only if drain_on_reload is set.
func (l *lifecycle) onServerShutdown() {
	switch {
	case caddy.Exiting():
		n := liveStreams.EndGroup(l.group, stream.EndShutdown, 0)
		l.logger.Info("ending streams for shutdown", zap.Int("streams", n))
	case l.drain > 0:
		n := liveStreams.EndGroup(l.group, stream.EndDrain, l.drain)
		l.logger.Info("draining streams of the old config",
			zap.Int("streams", n), zap.Duration("window", l.drain))
	}
}

// liveStreams is the one registry of open streams of the process, whatever
// handler, server or config they belong to: writers add their streams to
// it, /sse/streams lists it, shutdown and drain end a handler's group of
// it.
var liveStreams = new(stream.Registry)
