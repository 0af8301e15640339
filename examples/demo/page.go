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

package main

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"time"
)

//go:embed index.html
var page []byte

// pageConfig is what the page needs to know to draw itself and connect.
type pageConfig struct {
	Global    string  `json:"global"`
	Sides     []*side `json:"sides"`
	IdleMS    int64   `json:"idle_ms"`
	Buffer    int     `json:"buffer"`
	Heartbeat int64   `json:"heartbeat_ms"`
	QuietMS   int64   `json:"quiet_ms"`
	GapMS     int64   `json:"gap_ms"`
	Tokens    int     `json:"tokens"`
}

// pageStatus is what the page polls: the backend's progress, and per hop
// what it holds, how often it cut, and the header Caddy sent it.
type pageStatus struct {
	Now     int64               `json:"now"`
	Phase   string              `json:"phase"`
	PhaseMS int64               `json:"phase_ms"` // how long it has been in it
	LastSeq int64               `json:"last_seq"`
	Hops    map[string]hopStats `json:"hops"`
}

func (d *demo) pageHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(page)
	})
	mux.HandleFunc("GET /config.json", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, pageConfig{
			Global:    d.global,
			Sides:     []*side{d.stock, d.sse},
			IdleMS:    d.set.idle.Milliseconds(),
			Buffer:    d.set.bufSize,
			Heartbeat: d.set.heartbeat.Milliseconds(),
			QuietMS:   d.set.quiet.Milliseconds(),
			GapMS:     d.set.gap.Milliseconds(),
			Tokens:    len(tokens()),
		})
	})
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		phase, since, last := d.feed.status()
		writeJSON(w, pageStatus{
			Now:     time.Now().UnixMilli(),
			Phase:   phase,
			PhaseMS: time.Since(since).Milliseconds(),
			LastSeq: last,
			Hops:    map[string]hopStats{d.stock.Name: d.stock.hop.stats(), d.sse.Name: d.sse.hop.stats()},
		})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}
