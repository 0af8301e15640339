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
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("sse", parseCaddyfile)
	// After encode, so encode wraps sse: the bytes sse writes itself
	// (heartbeats, retry hints) pass through encode's writer, and the
	// no-transform that sse adds to a stream's header is in place when
	// encode decides whether to compress.
	httpcaddyfile.RegisterDirectiveOrder("sse", httpcaddyfile.After, "encode")
}

// parseCaddyfile sets up the handler from Caddyfile tokens.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	sse [<matcher>] {
//	    types           <media-type>...
//	    heartbeat       <interval>|off
//	    heartbeat_text  <text>
//	    heartbeat_frame auto|block|line
//	    limit           <max> [per <key>]
//	    zone            <name>
//	    redis           <address> { ... }   (see RedisStore.unmarshalCaddyfile)
//	    retry           <duration>
//	    refuse_status   <code>
//	    upstream_errors retry|pass
//	    log_key
//	    max_duration    <duration>
//	    idle_timeout    <duration>
//	    drain_on_reload <window>
//	}
//
// Every subdirective but limit may appear once.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.Errf("sse takes no arguments besides a matcher, got %q; put options in a block", d.Val())
	}
	seen := make(map[string]bool)
	for d.NextBlock(0) {
		sub := d.Val()
		if sub != "limit" && seen[sub] {
			return d.Errf("%s already specified", sub)
		}
		seen[sub] = true
		switch sub {
		case "types":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("types: at least one media type is required")
			}
			for _, t := range args {
				if err := checkMediaType(t); err != nil {
					return d.Errf("types: %v", err)
				}
			}
			h.Types = append(h.Types, args...)

		case "heartbeat":
			v, err := oneArg(d, sub)
			if err != nil {
				return err
			}
			var dur time.Duration
			if v != "off" {
				if dur, err = parseDuration(d, sub, v); err != nil {
					return err
				}
			}
			cd := caddy.Duration(dur)
			h.Heartbeat = &cd

		case "heartbeat_text":
			v, err := oneArg(d, sub)
			if err != nil {
				return err
			}
			if err := checkHeartbeatText(v); err != nil {
				return d.Errf("heartbeat_text: %v", err)
			}
			h.HeartbeatText = v

		case "heartbeat_frame":
			v, err := oneArg(d, sub)
			if err != nil {
				return err
			}
			if err := checkHeartbeatFrame(v); err != nil {
				return d.Errf("heartbeat_frame: %v", err)
			}
			h.HeartbeatFrame = v

		case "limit":
			args := d.RemainingArgs()
			if len(args) != 1 && len(args) != 3 {
				return d.Errf("limit: want <max> [per <key>], got %d arguments", len(args))
			}
			max, err := strconv.Atoi(args[0])
			if err != nil {
				return d.Errf("limit: max %q is not a whole number", args[0])
			}
			if err := checkLimitMax(max); err != nil {
				return d.Errf("limit: max %v", err)
			}
			l := Limit{Max: max}
			if len(args) == 3 {
				if args[1] != "per" {
					return d.Errf("limit: want \"per\" after the max, got %q", args[1])
				}
				if err := checkLimitKey(args[2]); err != nil {
					return d.Errf("limit: per: %v", err)
				}
				l.Per = args[2]
			}
			h.Limits = append(h.Limits, l)

		case "zone":
			v, err := oneArg(d, sub)
			if err != nil {
				return err
			}
			h.Zone = v

		case "redis":
			h.Redis = new(RedisStore)
			if err := h.Redis.unmarshalCaddyfile(d); err != nil {
				return err
			}
			continue // its block is its own

		case "retry":
			v, err := oneArg(d, sub)
			if err != nil {
				return err
			}
			dur, err := parseDuration(d, sub, v)
			if err != nil {
				return err
			}
			if err := checkRetry(dur, v); err != nil {
				return d.Errf("retry: %v", err)
			}
			cd := caddy.Duration(dur)
			h.Retry = &cd

		case "refuse_status":
			v, err := oneArg(d, sub)
			if err != nil {
				return err
			}
			code, err := strconv.Atoi(v)
			if err != nil {
				code = 0 // not a number: refused as a code out of range is
			}
			if err := checkRefuseStatus(code, strconv.Quote(v)); err != nil {
				return d.Errf("refuse_status: %v", err)
			}
			h.RefuseStatus = code

		case "upstream_errors":
			v, err := oneArg(d, sub)
			if err != nil {
				return err
			}
			switch v {
			case "retry":
				h.PassUpstreamErrors = false
			case "pass":
				h.PassUpstreamErrors = true
			default:
				return d.Errf("upstream_errors: must be \"retry\" or \"pass\", got %q", v)
			}

		case "log_key":
			if d.NextArg() {
				return d.Errf("log_key takes no arguments, got %q", d.Val())
			}
			h.LogKey = true

		case "max_duration", "idle_timeout", "drain_on_reload":
			v, err := oneArg(d, sub)
			if err != nil {
				return err
			}
			dur, err := parseDuration(d, sub, v)
			if err != nil {
				return err
			}
			switch sub {
			case "max_duration":
				h.MaxDuration = caddy.Duration(dur)
			case "idle_timeout":
				h.IdleTimeout = caddy.Duration(dur)
			default:
				h.DrainOnReload = caddy.Duration(dur)
			}

		default:
			return d.Errf("unrecognized sse subdirective %q", sub)
		}
		if d.NextBlock(1) {
			return d.Errf("%s does not take a block", sub)
		}
	}
	return nil
}

// oneArg returns the single argument of subdirective sub.
func oneArg(d *caddyfile.Dispenser, sub string) (string, error) {
	if !d.NextArg() {
		return "", d.Errf("%s: missing value", sub)
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.Errf("%s: one value expected, got extra %q", sub, d.Val())
	}
	return v, nil
}

// parseDuration parses a duration such as 15s or 1d, and checks it with
// checkDurationAs.
func parseDuration(d *caddyfile.Dispenser, sub, v string) (time.Duration, error) {
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, d.Errf("%s: %s", sub, durationHint(sub, v))
	}
	if err := checkDurationAs(dur, v); err != nil {
		return 0, d.Errf("%s: %v", sub, err)
	}
	return dur, nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
