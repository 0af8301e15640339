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

package limit

// The process's own counters, and the Store that counts in them alone.

import (
	"maps"
	"slices"
	"sync"
)

// Counters count open streams per counter key (Key). Entries that drop to 0
// are deleted, so their size is bounded by the open streams, whatever keys
// clients send. They outlive a config: the adapter shares them across
// reloads, so streams of an old config release into the same counters.
//
// Lock story: mu guards counts.
type Counters struct {
	mu     sync.Mutex
	counts map[string]int
}

// NewCounters returns empty counters.
func NewCounters() *Counters { return &Counters{counts: make(map[string]int)} }

// Destruct lets the counters live in a pool of destructible values; there
// is nothing to undo.
func (*Counters) Destruct() error { return nil }

// take counts a stream under keys, one per limit, or under none and returns
// the refusal. With force, it counts without checking: the stream was
// admitted elsewhere (in Redis).
func (c *Counters) take(limits []Limit, keys []string, force bool) (*Hold, *Refusal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, l := range limits {
		// limits with the same template count the same key: the stream
		// needs room in each of them
		if !force && keys[i] != "" && c.counts[keys[i]] >= l.Max {
			_, key := SplitKey(keys[i])
			return nil, &Refusal{Limit: i, Key: key}
		}
	}
	h := &Hold{local: c, keys: make([]string, 0, len(keys))}
	for _, k := range keys {
		if k != "" && !slices.Contains(h.keys, k) {
			c.counts[k]++
			h.keys = append(h.keys, k)
		}
	}
	return h, nil
}

// give takes one stream off each of keys.
func (c *Counters) give(keys []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		if n := c.counts[k] - 1; n > 0 {
			c.counts[k] = n
		} else {
			delete(c.counts, k)
		}
	}
}

// Snapshot returns a copy of the counters, by counter key, taken under
// their lock.
func (c *Counters) Snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.counts)
}

// Usage is how one key template of the counters is used.
type Usage struct {
	Streams int // streams counted, over every key
	Keys    int // keys with at least one stream
	Fullest int // streams of the key with the most
}

// Usage returns, by limit id, how the counters are used now, in one pass
// under their lock.
func (c *Counters) Usage() map[string]Usage {
	out := make(map[string]Usage, 2)
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, n := range c.counts {
		id, _ := SplitKey(k)
		u := out[id]
		u.Streams += n
		u.Keys++
		u.Fullest = max(u.Fullest, n)
		out[id] = u
	}
	return out
}

// Local is the Store that counts in this process's counters alone.
type Local struct {
	Counters *Counters
	Limits   []Limit
}

// Acquire implements Store.
func (l Local) Acquire(keys []string) (*Hold, *Refusal) {
	if allEmpty(keys) {
		return nil, nil
	}
	return l.Counters.take(l.Limits, keys, false)
}

// allEmpty reports whether every key is empty: no limit counts the request.
func allEmpty(keys []string) bool {
	return !slices.ContainsFunc(keys, func(k string) bool { return k != "" })
}

// Interface guards
var _ Store = Local{}
