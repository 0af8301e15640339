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

// Exit and reload: the hooks that end a handler's streams when its server
// shuts down, at once on exit, over drain_on_reload on a reload.

import (
	"time"

	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// provisionLifecycle hooks h to its server's shutdown, which happens both
// when Caddy exits and when a reload replaces the config, and warns about
// server settings that cut quiet streams (warnings.go).
//
// A module cannot rely on the context's OnCancel for this: Caddy cancels
// the config's context only after the servers have shut down, and with
// the default eternal grace_period they never finish while streams are
// open.
func (h *Handler) provisionLifecycle(srv *caddyhttp.Server) {
	if srv == nil {
		return
	}
	srv.RegisterOnShutdown(h.onServerShutdown)
	h.warnAboutServer(srv)
}

// onServerShutdown runs when the server h belongs to starts shutting down.
// On exit, every stream ends at once (at its next event boundary); on a
// reload, streams end only if drain_on_reload is set.
func (h *Handler) onServerShutdown() {
	switch {
	case caddy.Exiting():
		n := liveStreams.EndGroup(h.group, stream.EndShutdown, 0)
		h.logger.Info("ending streams for shutdown", zap.Int("streams", n))
	case h.DrainOnReload > 0:
		n := liveStreams.EndGroup(h.group, stream.EndDrain, time.Duration(h.DrainOnReload))
		h.logger.Info("draining streams of the old config",
			zap.Int("streams", n), zap.Duration("window", time.Duration(h.DrainOnReload)))
	}
}
