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
//	    heartbeat_frame auto|blank|block|line
//	    limit           <max> [per <key>]
//	    zone            <name>
//	    redis           [cluster|failover] <address>... { ... }   (see RedisStore.unmarshalCaddyfile)
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
		parse, known := sseSubdirectives[sub]
		switch {
		case !known:
			return d.Errf("unrecognized sse subdirective %q", sub)
		case seen[sub] && sub != "limit":
			return d.Errf("%s already specified", sub)
		}
		seen[sub] = true
		if err := parse(h, d, sub); err != nil {
			return err
		}
		if sub != "redis" && d.NextBlock(1) { // redis's block is its own
			return d.Errf("%s does not take a block", sub)
		}
	}
	return nil
}

// A subdirectiveParser parses the subdirective name into t, the dispenser
// on its name. name is also how its messages name it.
type subdirectiveParser[T any] func(t *T, d *caddyfile.Dispenser, name string) error

// sseSubdirectives are the parsers of the sse block's subdirectives, by
// name. Each checks the syntax and hands the value to the checker that
// Validate uses too (validate.go).
var sseSubdirectives = map[string]subdirectiveParser[Handler]{
	"types":           (*Handler).parseTypes,
	"heartbeat":       durationOrOffArg(func(h *Handler) **caddy.Duration { return &h.Heartbeat }),
	"heartbeat_text":  stringArg(func(h *Handler, v string) { h.HeartbeatText = v }, checkHeartbeatText),
	"heartbeat_frame": stringArg(func(h *Handler, v string) { h.HeartbeatFrame = v }, checkHeartbeatFrame),
	"limit":           (*Handler).parseLimit,
	"zone":            stringArg(func(h *Handler, v string) { h.Zone = v }, nil),
	"redis":           (*Handler).parseRedis,
	"retry":           durationArg(func(h *Handler, d caddy.Duration) { h.Retry = &d }, checkRetry),
	"refuse_status":   (*Handler).parseRefuseStatus,
	"upstream_errors": (*Handler).parseUpstreamErrors,
	"log_key":         (*Handler).parseLogKey,
	"max_duration":    durationArg(func(h *Handler, d caddy.Duration) { h.MaxDuration = d }, nil),
	"idle_timeout":    durationArg(func(h *Handler, d caddy.Duration) { h.IdleTimeout = d }, nil),
	"drain_on_reload": durationArg(func(h *Handler, d caddy.Duration) { h.DrainOnReload = d }, nil),
	"open_after":      durationOrOffArg(func(h *Handler) **caddy.Duration { return &h.OpenAfter }),
}

// parseTypes parses types <media-type>...
func (h *Handler) parseTypes(d *caddyfile.Dispenser, name string) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.Errf("%s: at least one media type is required", name)
	}
	for _, t := range args {
		if err := checkMediaType(t); err != nil {
			return d.Errf("%s: %v", name, err)
		}
	}
	h.Types = append(h.Types, args...)
	return nil
}

// durationOrOffArg parses <name> <duration>|off into the field that field
// returns; off is 0.
func durationOrOffArg(field func(*Handler) **caddy.Duration) subdirectiveParser[Handler] {
	return func(h *Handler, d *caddyfile.Dispenser, name string) error {
		v, err := oneArg(d, name)
		if err != nil {
			return err
		}
		var dur time.Duration
		if v != "off" {
			if dur, err = parseDuration(d, name, v); err != nil {
				return err
			}
		}
		cd := caddy.Duration(dur)
		*field(h) = &cd
		return nil
	}
}

// parseLimit parses limit <max> [per <key>].
func (h *Handler) parseLimit(d *caddyfile.Dispenser, name string) error {
	args := d.RemainingArgs()
	if len(args) != 1 && len(args) != 3 {
		return d.Errf("%s: want <max> [per <key>], got %d arguments", name, len(args))
	}
	max, err := strconv.Atoi(args[0])
	if err != nil {
		return d.Errf("%s: max %q is not a whole number", name, args[0])
	}
	if err := checkLimitMax(max); err != nil {
		return d.Errf("%s: max %v", name, err)
	}
	l := Limit{Max: max}
	if len(args) == 3 {
		if args[1] != "per" {
			return d.Errf("%s: want \"per\" after the max, got %q", name, args[1])
		}
		if err := checkLimitKey(args[2]); err != nil {
			return d.Errf("%s: per: %v", name, err)
		}
		l.Per = args[2]
	}
	h.Limits = append(h.Limits, l)
	return nil
}

// parseRedis parses redis <address> { ... }, block included.
func (h *Handler) parseRedis(d *caddyfile.Dispenser, _ string) error {
	h.Redis = new(RedisStore)
	return h.Redis.unmarshalCaddyfile(d)
}

// parseRefuseStatus parses refuse_status <code>.
func (h *Handler) parseRefuseStatus(d *caddyfile.Dispenser, name string) error {
	v, err := oneArg(d, name)
	if err != nil {
		return err
	}
	code, err := strconv.Atoi(v)
	if err != nil {
		code = 0 // not a number: refused as a code out of range is
	}
	if err := checkRefuseStatus(code, strconv.Quote(v)); err != nil {
		return d.Errf("%s: %v", name, err)
	}
	h.RefuseStatus = code
	return nil
}

// parseUpstreamErrors parses upstream_errors retry|pass.
func (h *Handler) parseUpstreamErrors(d *caddyfile.Dispenser, name string) error {
	v, err := oneArg(d, name)
	if err != nil {
		return err
	}
	switch v {
	case "retry":
		h.PassUpstreamErrors = false
	case "pass":
		h.PassUpstreamErrors = true
	default:
		return d.Errf("%s: must be \"retry\" or \"pass\", got %q", name, v)
	}
	return nil
}

// parseLogKey parses log_key, which takes no arguments.
func (h *Handler) parseLogKey(d *caddyfile.Dispenser, name string) error {
	if d.NextArg() {
		return d.Errf("%s takes no arguments, got %q", name, d.Val())
	}
	h.LogKey = true
	return nil
}

// stringArg returns the parser of a subdirective of one value, which
// check (unless nil) accepts, and set stores.
func stringArg[T any](set func(*T, string), check func(string) error) subdirectiveParser[T] {
	return func(t *T, d *caddyfile.Dispenser, name string) error {
		v, err := oneArg(d, name)
		if err == nil && check != nil {
			err = argError(d, name, check(v))
		}
		if err == nil {
			set(t, v)
		}
		return err
	}
}

// durationArg returns the parser of a subdirective of one duration, which
// check (unless nil) accepts besides checkDurationAs, and set stores.
func durationArg[T any](set func(*T, caddy.Duration), check durationCheck) subdirectiveParser[T] {
	return func(t *T, d *caddyfile.Dispenser, name string) error {
		v, err := oneArg(d, name)
		if err != nil {
			return err
		}
		dur, err := parseDuration(d, name, v)
		if err == nil && check != nil {
			err = argError(d, name, check(dur, v))
		}
		if err == nil {
			set(t, caddy.Duration(dur))
		}
		return err
	}
}

// argError is a checker's err about the value of subdirective name, at
// the dispenser's line; nil if err is.
func argError(d *caddyfile.Dispenser, name string, err error) error {
	if err == nil {
		return nil
	}
	return d.Errf("%s: %v", name, err)
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
	return dur, argError(d, sub, checkDurationAs(dur, v))
}

// unmarshalCaddyfile parses a redis subdirective:
//
//	redis [simple|cluster|failover] <host:port>|<redis[s]://...>... {
//	    master_name       <name>      (failover)
//	    sentinel_username <name>      (failover)
//	    sentinel_password <secret>    (failover)
//	    username   <name>
//	    password   <secret>
//	    db         <n>
//	    tls        [insecure] [ca <file>]
//	    key_prefix <prefix>
//	    lease      <duration>
//	    timeout    <duration>
//	    on_error   local|refuse
//	}
func (r *RedisStore) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) > 0 {
		switch args[0] {
		case clientSimple, clientCluster, clientFailover:
			r.ClientType, args = args[0], args[1:]
		}
	}
	switch {
	case len(args) == 0:
		return d.Errf("redis: missing address (host:port or redis://…)")
	case len(args) == 1 && r.ClientType == "":
		r.Address = args[0] // today's one server
	default:
		r.Addresses = args
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("redis: %s already specified", opt)
		}
		seen[opt] = true
		parse, known := redisOptions[opt]
		if !known {
			return d.Errf("redis: unrecognized option %q", opt)
		}
		if err := parse(r, d, "redis: "+opt); err != nil {
			return err
		}
	}
	if err := r.check(); err != nil {
		return d.Errf("%v", err)
	}
	return nil
}

// redisOptions are the parsers of the redis block's options, by name.
// Each checks the syntax and hands the value to the checker that check
// uses too.
var redisOptions = map[string]subdirectiveParser[RedisStore]{
	"username":          stringArg(func(r *RedisStore, v string) { r.Username = v }, nil),
	"password":          secretArg(func(r *RedisStore, v string) { r.Password = v }),
	"db":                (*RedisStore).parseDB,
	"tls":               (*RedisStore).parseTLS,
	"key_prefix":        stringArg(func(r *RedisStore, v string) { r.KeyPrefix = v }, checkRedisName),
	"lease":             durationArg(func(r *RedisStore, d caddy.Duration) { r.Lease = d }, checkRedisLease),
	"timeout":           durationArg(func(r *RedisStore, d caddy.Duration) { r.Timeout = d }, checkRedisTimeout),
	"on_error":          stringArg(func(r *RedisStore, v string) { r.OnError = v }, checkOnError),
	"master_name":       stringArg(func(r *RedisStore, v string) { r.MasterName = v }, nil),
	"sentinel_username": stringArg(func(r *RedisStore, v string) { r.SentinelUsername = v }, nil),
	"sentinel_password": secretArg(func(r *RedisStore, v string) { r.SentinelPassword = v }),
}

// secretArg parses <name> <secret> into the field set sets, and never
// quotes the secret.
func secretArg(set func(r *RedisStore, v string)) subdirectiveParser[RedisStore] {
	return func(r *RedisStore, d *caddyfile.Dispenser, name string) error {
		if !d.NextArg() {
			return d.Errf("%s: missing value", name)
		}
		set(r, d.Val())
		if d.NextArg() {
			return d.Errf("%s: one value expected, got an extra argument", name)
		}
		return nil
	}
}

// parseDB parses db <n>.
func (r *RedisStore) parseDB(d *caddyfile.Dispenser, name string) error {
	v, err := oneArg(d, name)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(v); err == nil && checkRedisDB(n) == nil {
		r.DB = n
		return nil
	}
	return d.Errf("%s: want a database number, got %q", name, v)
}

// parseTLS parses tls [insecure] [ca <file>].
func (r *RedisStore) parseTLS(d *caddyfile.Dispenser, name string) error {
	t := new(RedisTLS)
	for d.NextArg() {
		switch d.Val() {
		case "insecure":
			t.InsecureSkipVerify = true
		case "ca":
			if !d.NextArg() {
				return d.Errf("%s: ca: missing file", name)
			}
			t.CA = d.Val()
		default:
			return d.Errf("%s: want [insecure] [ca <file>], got %q", name, d.Val())
		}
	}
	r.TLS = t
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
)
