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

// Package check opens a Server-Sent Events stream as a client would, holds
// it for a while, and tells what the path to it did to the stream: whether
// a hop buffered it, compressed it, broke it for HTTP/2 and HTTP/3 clients
// with hop-by-hop fields, cut it when it was quiet, or let it go quiet with
// no heartbeat; and, for each problem, what to change where.
//
// The probe (probe.go) records every read of the body with its time; the
// analysis (parse.go, analyze.go, verdict.go) is pure over that recording,
// so it can be tested with made-up timelines. The package knows nothing of
// Caddy: the `caddy sse check` command is its adapter.
package check

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Options say what to check and how.
type Options struct {
	// URL is the stream's address, http or https.
	URL string

	// Method is the request method. Default: GET.
	Method string

	// Header holds request header fields; each replaces the default of
	// the same name (see DefaultHeader).
	Header http.Header

	// Body is the request body, for POST routes; with a body and no
	// Content-Type in Header, Content-Type is application/json.
	Body []byte

	// HTTP is the protocol: "1.1", "2" or "3". Default: what a browser
	// gets, HTTP/2 when the server offers it over TLS, HTTP/1.1 otherwise.
	HTTP string

	// For is how long to hold the stream, counted from the request; the
	// check ends earlier when the stream does. Default: DefaultFor.
	For time.Duration

	// Idle is the longest silence that is not a problem: a stream quiet
	// for longer without a heartbeat is reported as no_heartbeat.
	// Default: DefaultIdle.
	Idle time.Duration

	// Insecure skips the verification of the server's certificate.
	Insecure bool
}

// DefaultHeader returns the request header fields a browser's EventSource
// sends (Chromium's Accept-Encoding), which Options.Header may replace one
// by one. With Accept-Encoding set, the client does not decompress on its
// own, so the check sees what the path sends.
func DefaultHeader() http.Header {
	return http.Header{
		"Accept":          {"text/event-stream"},
		"Cache-Control":   {"no-cache"},
		"Accept-Encoding": {"gzip, deflate, br, zstd"},
		"User-Agent":      {"caddy-sse-check"},
	}
}

// Run checks the stream at o.URL and returns its report. It returns an
// error only when the URL could not be checked at all: a bad URL, a name
// that does not resolve, a connection or TLS failure, no response header
// within o.For. A response that a client rejects for its header fields
// is a report with a hop_by_hop problem, not an error.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	rec, err := probe(ctx, o)
	if err != nil {
		return nil, err
	}
	return Analyze(rec, o), nil
}

// fill checks o and sets its defaults.
func (o *Options) fill() error {
	u, err := url.Parse(o.URL)
	if err != nil {
		return fmt.Errorf("invalid URL %q: %v", o.URL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("invalid URL %q: want http://host/… or https://host/…", o.URL)
	}
	switch o.HTTP {
	case "", "1.1", "2":
	case "3":
		if u.Scheme != "https" {
			return fmt.Errorf("HTTP/3 needs an https URL, got %q", o.URL)
		}
	default:
		return fmt.Errorf("unknown HTTP version %q: want 1.1, 2 or 3", o.HTTP)
	}
	if o.Method == "" {
		o.Method = http.MethodGet
	}
	if o.For <= 0 {
		o.For = DefaultFor
	}
	if o.Idle <= 0 {
		o.Idle = DefaultIdle
	}
	return nil
}

const (
	// DefaultFor is how long a check holds a stream by default: past the
	// 60 s idle timeouts of nginx (proxy_read_timeout) and AWS ALB, so
	// their cuts show.
	DefaultFor = 90 * time.Second

	// DefaultIdle is the longest silence a healthy stream has by default:
	// sse heartbeats every 15 s (12-15 s with jitter), with room for a
	// slow network.
	DefaultIdle = 20 * time.Second
)
