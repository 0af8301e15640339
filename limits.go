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
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// zones holds the stream counters. It lives at package level so a config
// reload does not reset them: Caddy provisions the new config before it
// cleans up the old one, so a zone in use by both survives the reload, and
// streams still running on the old config release into the same counters.
var zones = caddy.NewUsagePool()

// zone counts open streams per counter id and key. Entries that drop to 0
// are deleted, so its size is bounded by the open streams, whatever keys
// clients send.
type zone struct {
	mu     sync.Mutex
	counts map[string]int
}

// Destruct implements caddy.Destructor.
func (*zone) Destruct() error { return nil }

// compiledLimit is a Limit with the id of its counter in the zone: limits
// with the same key template share a counter.
type compiledLimit struct {
	Limit
	id string
}

// slot is one counted stream: the counter key it was counted under.
type slot struct{ key string }

// refusal says which limit refused a stream, for the log.
type refusal struct {
	limit       Limit
	key         string
	unavailable bool // the zone's Redis is unreachable and on_error is refuse
}

// occurrences numbers the sse handlers of each server within a config
// load, to tell their default zones apart.
var occurrences sync.Map // *caddyhttp.Server → *int

// provisionZone attaches h to its counter zone. The default zone name is
// made of the server's name and h's position among the server's sse
// handlers, so it is the same across reloads of the same config.
func (h *Handler) provisionZone(ctx caddy.Context) error {
	if len(h.Limits) == 0 {
		return nil
	}
	name := h.Zone
	if name == "" {
		srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
		v, _ := occurrences.LoadOrStore(srv, new(int))
		n := v.(*int)
		*n++ // provisioning of one config is sequential
		name = fmt.Sprintf("%s#%d", serverName(srv), *n)
		h.server = srv
	}
	h.zoneName = name
	h.zoneKey = zonePoolPrefix + name
	z, _, err := zones.LoadOrNew(h.zoneKey, func() (caddy.Destructor, error) {
		return &zone{counts: make(map[string]int)}, nil
	})
	if err != nil {
		return fmt.Errorf("loading stream counters: %w", err)
	}
	h.zone = z.(*zone)
	h.limits = make([]compiledLimit, len(h.Limits))
	for i, l := range h.Limits {
		h.limits[i] = compiledLimit{Limit: l, id: l.Per}
	}
	return nil
}

// serverName returns the name the server has in the http app's config.
func serverName(srv *caddyhttp.Server) string {
	if srv == nil {
		return ""
	}
	return srv.Name()
}

// admit counts sw's request against every limit, or counts it against none
// and returns the refusal. Either way it is done once per request.
func (h *Handler) admit(sw *streamWriter) *refusal {
	sw.admitted = true
	if h.zone == nil {
		return nil
	}
	repl, _ := sw.req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	keys := make([]string, len(h.limits))
	for i, l := range h.limits {
		key := l.Per
		if repl != nil {
			key = repl.ReplaceAll(l.Per, "")
		}
		if key == "" {
			// the key's value is missing (no such header, say): this
			// limit does not count the request, as nginx's limit_conn
			// does not; a key that must cap anonymous clients names
			// something never empty too, such as {client_ip}
			continue
		}
		keys[i] = l.id + "\x00" + boundKey(key)
	}
	if allEmpty(keys) {
		return nil // no limit counts the request
	}
	if h.store != nil {
		return h.store.admit(h, sw, keys) // redis.go
	}
	return h.zone.take(sw, h.limits, keys, false)
}

// take counts sw against every limit under keys (one per limit), or
// against none and returns the refusal. With force, it counts without
// checking: the stream was admitted elsewhere (in Redis).
func (z *zone) take(sw *streamWriter, limits []compiledLimit, keys []string, force bool) *refusal {
	z.mu.Lock()
	defer z.mu.Unlock()
	for i, l := range limits {
		// limits with the same template count the same key: the stream
		// needs room in each of them
		if !force && keys[i] != "" && z.counts[keys[i]] >= l.Max {
			_, key, _ := strings.Cut(keys[i], "\x00")
			return &refusal{limit: l.Limit, key: key}
		}
	}
	sw.st.slots = make([]slot, 0, len(keys))
	for _, k := range keys {
		if k != "" && !containsSlot(sw.st.slots, k) {
			z.counts[k]++
			sw.st.slots = append(sw.st.slots, slot{key: k})
		}
	}
	return nil
}

// allEmpty reports whether every key is empty: no limit counts the request.
func allEmpty(keys []string) bool {
	for _, k := range keys {
		if k != "" {
			return false
		}
	}
	return true
}

func containsSlot(slots []slot, k string) bool {
	for _, s := range slots {
		if s.key == k {
			return true
		}
	}
	return false
}

// release gives back sw's slots, once.
func (h *Handler) release(sw *streamWriter) {
	if len(sw.st.slots) == 0 {
		return
	}
	z := h.zone
	z.mu.Lock()
	for _, s := range sw.st.slots {
		if n := z.counts[s.key] - 1; n > 0 {
			z.counts[s.key] = n
		} else {
			delete(z.counts, s.key)
		}
	}
	z.mu.Unlock()
	sw.st.slots = nil
	if h.store != nil {
		h.store.release(sw)
	}
}

// boundKey hashes keys longer than maxKeyLen, so a client cannot make the
// counters hold large strings.
func boundKey(k string) string {
	if len(k) <= maxKeyLen {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// refuse answers a stream a limit refused. An EventSource-style client gets
// a 200 event stream that carries only a retry field and ends, so the
// browser reconnects later: any other status would make it give up for good
// (WHATWG HTML, 9.2.3, "fail the connection"). Other clients get
// RefuseStatus with Retry-After, as an error handle_errors can shape.
func (h *Handler) refuse(w http.ResponseWriter, sw *streamWriter, r *refusal) error {
	if r.unavailable {
		h.m.refusedRedis.Inc()
		h.logger.Debug("stream refused: the zone's redis is unreachable and on_error is refuse", zap.String("zone", h.Zone))
	} else {
		h.m.refusedLimit.Inc()
		fields := []zap.Field{zap.Int("limit", r.limit.Max), zap.String("per", r.limit.Per)}
		if h.LogKey {
			fields = append(fields, zap.String("key", r.key))
		}
		h.logger.Info("stream limit reached", fields...)
	}
	sw.logRefusedByLimit(r)
	sw.resetHeader()
	if sw.eventSrc {
		h.writeRetryAnswer(w, sw.st.frame)
		return nil
	}
	secs := int(math.Ceil(h.retryHint().Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return caddyhttp.Error(h.RefuseStatus, errStreamLimit)
}

// writeRetryAnswer writes the response that tells an EventSource to come
// back later: 200, text/event-stream, a retry field, end.
func (h *Handler) writeRetryAnswer(w http.ResponseWriter, k frameKind) {
	hdr := w.Header()
	clearRepresentation(hdr)
	hdr.Set("Content-Type", "text/event-stream")
	repairHeader(hdr)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(h.retryField(k))
}

// checkLimitKey rejects keys that would count every request the same,
// or name placeholders that are never set at admission time.
func checkLimitKey(per string) error {
	if per == "" {
		return nil
	}
	if !strings.Contains(per, "{") {
		return fmt.Errorf("%q has no placeholder, so every stream would share one counter; use a placeholder such as {http.request.host} or {client_ip}", per)
	}
	rest := per
	for {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			return nil
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return fmt.Errorf("%q has an unclosed placeholder", per)
		}
		name := rest[open+1 : open+end]
		if !knownPlaceholder(name) {
			return fmt.Errorf("unknown placeholder {%s} in %q: use one known when the request arrives, such as {http.request.host}, {http.request.header.*}, {http.vars.client_ip} ({client_ip} in a Caddyfile) or {http.request.remote.host}", name, per)
		}
		rest = rest[open+end+1:]
	}
}

// knownPlaceholder reports whether a placeholder is set before the handlers
// inside sse run.
func knownPlaceholder(name string) bool {
	for _, prefix := range [...]string{
		"http.request.", "http.vars.", "http.regexp.", "http.auth.user.",
		"http.matchers.", "tls.client.", "env.", "system.",
	} {
		if strings.HasPrefix(name, prefix) && len(name) > len(prefix) {
			return true
		}
	}
	return false
}

// maxKeyLen is the longest key kept as it is.
const maxKeyLen = 128

// zonePoolPrefix starts the keys of zones in the zones pool.
const zonePoolPrefix = "sse.zone."
