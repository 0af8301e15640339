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

// Package limit counts concurrent streams per key, against caps, in this
// process (Local) or across a fleet in Redis (Redis, behind Fallback). It
// knows nothing of Caddy: the adapter expands each limit's key for a
// request and hands the keys to a Store, which answers with a Hold or a
// Refusal.
package limit

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Limit is one cap: at most Max streams open at once per key of the
// template ID. Limits with the same ID count into the same counters.
type Limit struct {
	Max int
	ID  string
}

// Store admits a request's streams against a handler's limits.
type Store interface {
	// Acquire counts a stream under keys, one per limit of the store
	// (Key builds them; "" where the limit does not count the request), or
	// counts it under none and says which limit refused it. With every key
	// empty it returns neither: nothing counts the request.
	Acquire(keys []string) (*Hold, *Refusal)
}

// Refusal says why a stream was refused.
type Refusal struct {
	Limit       int    // the index of the limit that refused it
	Key         string // the key, as the request gave it (bounded by Key)
	Unavailable bool   // the store is unreachable and refuses while it is
}

// Hold is one admitted stream's place in the counters. Release gives it
// back; it is safe to call more than once, and on a nil Hold.
type Hold struct {
	local *Counters
	keys  []string // counter keys, each once
	lease *lease   // the stream's lease in Redis, nil without one
	redis *Redis
}

// Release gives the hold's counts back, once.
func (h *Hold) Release() {
	if h == nil || h.local == nil {
		return
	}
	h.local.give(h.keys)
	h.local, h.keys = nil, nil
	if h.redis != nil {
		h.redis.release(h.lease)
	}
}

// WhenRevoked sets what ends the hold's stream if its slot is revoked:
// when the fleet's count is rebuilt in Redis (after a failover or a
// restart) with no room for a stream that was open, admitted while Redis
// did not count or lost by it. f runs at most once, on another goroutine,
// or now if the slot was revoked already. A hold counted only by this
// instance is never revoked.
func (h *Hold) WhenRevoked(f func()) {
	if h != nil && h.lease != nil {
		h.lease.whenRevoked(f)
	}
}

// Key returns the counter key of limit id for the expanded key value,
// which is hashed when longer than MaxKeyLen so a client cannot make the
// counters hold large strings. An empty value is not counted: Key returns
// "".
func Key(id, value string) string {
	if value == "" {
		return ""
	}
	if len(value) > MaxKeyLen {
		sum := sha256.Sum256([]byte(value))
		value = "sha256:" + hex.EncodeToString(sum[:])
	}
	return id + "\x00" + value
}

// SplitKey returns the limit id and the value of a counter key.
func SplitKey(k string) (id, value string) {
	id, value, _ = strings.Cut(k, "\x00")
	return id, value
}

// MaxKeyLen is the longest key value kept as it is.
const MaxKeyLen = 128
