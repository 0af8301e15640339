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

// The admin API: /sse/streams and /sse/zones, read from the registry of
// open streams and the limit counters.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/caddy-sse/caddy-sse/internal/limit"
	"github.com/caddy-sse/caddy-sse/internal/stream"
	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(adminSSE{})
}

// adminSSE is the admin API module that shows the live state of sse:
// GET /sse/streams lists the open streams, GET /sse/zones the limit
// counters. Like reverse_proxy's /reverse_proxy/upstreams, it is loaded
// automatically and served on the admin endpoint, with its access controls.
type adminSSE struct{}

// CaddyModule returns the Caddy module information.
func (adminSSE) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.sse",
		New: func() caddy.Module { return new(adminSSE) },
	}
}

// Routes returns the routes of the /sse/ endpoints.
func (a adminSSE) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/sse/streams", Handler: caddy.AdminHandlerFunc(a.handleStreams)},
		{Pattern: "/sse/zones", Handler: caddy.AdminHandlerFunc(a.handleZones)},
	}
}

// streamStatus is one open stream, as /sse/streams shows it.
type streamStatus struct {
	Server     string  `json:"server"`
	Host       string  `json:"host"`
	Method     string  `json:"method"`
	Path       string  `json:"path"`
	ClientIP   string  `json:"client_ip"`
	Proto      string  `json:"proto"`
	Started    string  `json:"started"`
	Bytes      int64   `json:"bytes"`
	Heartbeats int64   `json:"heartbeats"`
	Zone       *string `json:"zone"`
	Frame      string  `json:"frame"`
	// OpenedEarly: sse opened the stream before its upstream answered
	// (open_after); Waiting: and the upstream has not answered yet.
	OpenedEarly bool `json:"opened_early"`
	Waiting     bool `json:"waiting"`
}

// handleStreams answers GET /sse/streams: a JSON array of the open streams,
// oldest first.
func (adminSSE) handleStreams(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed")}
	}
	return writeJSON(w, statuses(liveStreams))
}

// handleZones answers GET /sse/zones: {zone: {key: open streams}} for every
// zone with open streams. With ?mode=1 it answers {zone: {"mode": …,
// "keys": {key: open streams}}} instead, for those zones and every zone
// with a Redis side, so an operator sees how each zone counts now.
func (adminSSE) handleZones(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed")}
	}
	keys := zoneKeys()
	if r.URL.Query().Get("mode") == "" {
		return writeJSON(w, keys)
	}
	type zoneState struct {
		Mode string         `json:"mode"`
		Keys map[string]int `json:"keys"`
	}
	out := make(map[string]zoneState, len(keys))
	for name, k := range keys {
		out[name] = zoneState{Mode: modeProcess, Keys: k}
	}
	redisStores.Range(func(_, v any) bool {
		if s, ok := v.(*limit.Redis); ok {
			k := keys[s.Zone()]
			if k == nil {
				k = map[string]int{}
			}
			out[s.Zone()] = zoneState{Mode: s.Mode(), Keys: k}
		}
		return true
	})
	return writeJSON(w, out)
}

// modeProcess is the mode of a zone without a Redis side: its counts are
// this process's own.
const modeProcess = "process"

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	return nil
}

// zoneKeys returns the open streams of every zone by key, each key as the
// log shows it with log_key. A zone whose streams are counted under several
// key templates (several limits with different "per") has its keys
// prefixed with their template and a space, so equal values of different
// templates stay apart. Each zone's lock is held while its counters are
// copied, not while the answer is built or written.
func zoneKeys() map[string]map[string]int {
	type named struct {
		name string
		z    *limit.Counters
	}
	var all []named
	zones.Range(func(k, v any) bool {
		name, _ := k.(string)
		if z, ok := v.(*limit.Counters); ok && strings.HasPrefix(name, zonePoolPrefix) {
			all = append(all, named{strings.TrimPrefix(name, zonePoolPrefix), z})
		}
		return true
	})
	out := make(map[string]map[string]int)
	for _, n := range all {
		counts := n.z.Snapshot()
		if len(counts) == 0 {
			continue
		}
		templates := make(map[string]struct{}, 2)
		for k := range counts {
			id, _ := limit.SplitKey(k)
			templates[id] = struct{}{}
		}
		keys := make(map[string]int, len(counts))
		for k, c := range counts {
			id, key := limit.SplitKey(k)
			if len(templates) > 1 {
				key = id + " " + key
			}
			keys[key] += c
		}
		out[n.name] = keys
	}
	return out
}

// statuses returns the open streams of reg, oldest first.
func statuses(reg *stream.Registry) []streamStatus {
	sts := reg.Streams()
	slices.SortFunc(sts, func(a, b *stream.Stream) int { return a.Start().Compare(b.Start()) })
	out := make([]streamStatus, len(sts))
	for i, st := range sts {
		out[i] = *st.Label().(*streamStatus)
		out[i].Bytes = st.Bytes()
		out[i].Heartbeats = st.Heartbeats()
		out[i].OpenedEarly = st.Early()
		out[i].Waiting = st.Waiting()
	}
	return out
}

const (
	// startedLayout is RFC 3339 in UTC with milliseconds.
	startedLayout = "2006-01-02T15:04:05.000Z07:00"
)

// Interface guards
var (
	_ caddy.Module      = (*adminSSE)(nil)
	_ caddy.AdminRouter = (*adminSSE)(nil)
)
