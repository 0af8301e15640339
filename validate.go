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

// The rules for the values of the handler's fields, one checker a rule
// (the redis block's are in redis_config.go, the limit key's in
// limits.go). The Caddyfile parser (caddyfile.go) checks the syntax and
// hands each value to its checker, naming the subdirective and its line;
// Validate (module.go) calls the same checkers with the field's JSON path.
// So a value means the same, and a mistake reads the same, whichever way
// the config is written.
//
// A checker that quotes the value takes its spelling, as: the token as
// the Caddyfile has it ("400d"), or for JSON the value as Go prints it
// (inJSON), since a JSON duration may be a number of nanoseconds.

import (
	"errors"
	"fmt"
	"mime"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Wordings shared by the Caddyfile and JSON paths, so a mistake reads the
// same whichever way the config was written.
const (
	errRefuseStatus = "must be a 4xx or 5xx status code, such as 503 or 429"
	errRetryZero    = "must be more than 0 (a client told \"retry: 0\" reconnects at once)"
)

// maxConfigDuration caps every configured duration; larger values are
// mistakes (and would overflow the stream timers' arithmetic).
const maxConfigDuration = 365 * 24 * time.Hour

// A durationCheck is a rule for a duration field's value d, spelt as.
type durationCheck func(d time.Duration, as string) error

// checkDurationAs is the rule for every configured duration, spelt as:
// not negative, and at most maxConfigDuration, so a JSON config means what
// the same Caddyfile would: larger values are mistakes, and near the
// maximum a stream's deadline (now + duration) overflows and comes out in
// the past.
func checkDurationAs(d time.Duration, as string) error {
	if err := checkNotNegative(d, as); err != nil {
		return err
	}
	if d > maxConfigDuration {
		return fmt.Errorf("%s is longer than the %s allowed", as, maxConfigDuration)
	}
	return nil
}

// checkNotNegative rejects a negative duration, spelt as.
func checkNotNegative(d time.Duration, as string) error {
	if d < 0 {
		return fmt.Errorf("must not be negative, got %s", as)
	}
	return nil
}

// checkDuration is checkDurationAs for a JSON field's duration.
func checkDuration(d caddy.Duration) error {
	return inJSON(checkDurationAs)(time.Duration(d))
}

// checkRetry accepts a retry hint's duration (besides checkDurationAs):
// more than 0. Its message does not quote the value.
func checkRetry(d time.Duration, _ string) error {
	if d == 0 {
		return errors.New(errRetryZero)
	}
	return nil
}

// checkHeartbeatText accepts the text of the heartbeat comment: not empty,
// and nothing that would end the comment line early.
func checkHeartbeatText(s string) error {
	if i := strings.IndexAny(s, "\r\n\x00"); i >= 0 {
		return fmt.Errorf("must not contain CR, LF or NUL (found %q at byte %d)", s[i], i)
	}
	if s == "" {
		return errors.New("must not be empty")
	}
	return nil
}

// checkHeartbeatFrame accepts a framing of heartbeats: auto, blank, block
// or line.
func checkHeartbeatFrame(s string) error {
	switch s {
	case frameAuto, frameBlank, frameBlock, frameLine:
		return nil
	}
	return fmt.Errorf("must be %q, %q, %q or %q, got %q", frameAuto, frameBlank, frameBlock, frameLine, s)
}

// checkMediaType accepts a bare media type such as application/x-ndjson.
func checkMediaType(s string) error {
	mt, params, err := mime.ParseMediaType(s)
	if err != nil {
		return fmt.Errorf("invalid media type %q: %v", s, err)
	}
	if len(params) > 0 || !strings.Contains(mt, "/") || strings.Contains(mt, "*") {
		return fmt.Errorf("invalid media type %q: want type/subtype without parameters or wildcards", s)
	}
	return nil
}

// checkLimitMax accepts a limit's max: at least 1.
func checkLimitMax(n int) error {
	if n < 1 {
		return fmt.Errorf("must be at least 1, got %d", n)
	}
	return nil
}

// checkRefuseStatus accepts the status of a refused stream, spelt as: 4xx
// or 5xx.
func checkRefuseStatus(code int, as string) error {
	if code < 400 || code > 599 {
		return fmt.Errorf("%s, got %s", errRefuseStatus, as)
	}
	return nil
}

// A fieldCheck is what a checker made of one field's value, for
// firstFailure.
type fieldCheck struct {
	field string // the field, as the message names it
	err   error  // what is wrong with the value, nil if nothing
}

// firstFailure returns the error of the first check that failed, after
// the field it names.
func firstFailure(checks []fieldCheck) error {
	for _, c := range checks {
		if c.err != nil {
			return fmt.Errorf("%s: %w", c.field, c.err)
		}
	}
	return nil
}

// ifSet returns checker(v), or nil when v is the zero value: in JSON, a
// field left out, which takes its default. (A Caddyfile has no such
// value, so its parser checks every argument.)
func ifSet[T comparable](v T, checker func(T) error) error {
	var zero T
	if v == zero {
		return nil
	}
	return checker(v)
}

// optional returns checker(*d) for a duration field that is set, and nil for
// one left out.
func optional(d *caddy.Duration, checker func(time.Duration) error) error {
	if d == nil {
		return nil
	}
	return checker(time.Duration(*d))
}

// inJSON adapts a checker of a value and its spelling to a JSON field's
// value, spelt as Go prints it.
func inJSON[T any](checker func(v T, as string) error) func(T) error {
	return func(v T) error { return checker(v, fmt.Sprint(v)) }
}
