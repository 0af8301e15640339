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

// Warnings at Provision about the settings of the server around sse that
// cut or buffer streams, and the walk through its routes that finds them.

import (
	"encoding/json"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
)

// warnAboutServer warns about srv's settings that cut quiet streams, and
// about a reverse_proxy in it that buffers responses.
func warnAboutServer(srv *caddyhttp.Server, logger *zap.Logger) {
	if srv == nil {
		return
	}
	if srv.WriteTimeout > 0 {
		logger.Warn("server write_timeout ends every stream that lasts longer; streams behind sse are long-lived",
			zap.Duration("write_timeout", time.Duration(srv.WriteTimeout)))
	}
	if srv.WriteMinRate > 0 {
		logger.Warn("server write_min_rate aborts quiet streams, whose rate is a few bytes a second",
			zap.Int64("write_min_rate", srv.WriteMinRate))
	}
	if n := responseBuffers(srv.Routes); n != 0 {
		logger.Warn("a reverse_proxy in this server has response_buffers set; a stream it proxies is buffered before it reaches sse",
			zap.Int64("response_buffers", n))
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
