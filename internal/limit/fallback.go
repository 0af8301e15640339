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

// Counting in Redis with the local counters as the fall-back: on_error.

// Fallback is the Store of a zone counted in Redis. Every admitted stream
// is counted in the local counters too (a shadow of this instance's share),
// so that while Redis is unreachable, or registering this instance's
// streams again after it lost them, new streams are admitted against the
// local counters (each instance enforcing the limits alone) or, with
// Refuse, refused. Open streams go on untouched either way.
type Fallback struct {
	Redis  *Redis
	Local  Local
	Refuse bool // refuse new streams while Redis does not count
}

// Acquire implements Store.
func (f Fallback) Acquire(keys []string) (*Hold, *Refusal) {
	if allEmpty(keys) {
		return nil, nil
	}
	lost := false
	if f.Redis.up() {
		l, full, err := f.Redis.acquire(f.Local.Limits, keys)
		switch {
		case full >= 0:
			_, key := SplitKey(keys[full])
			return nil, &Refusal{Limit: full, Key: key}
		case err == nil:
			h, _ := f.Local.Counters.take(f.Local.Limits, keys, true)
			h.lease, h.redis = l, f.Redis
			return h, nil
		}
		lost = err == errLost
	}
	if f.Refuse {
		return nil, &Refusal{Limit: 0, Unavailable: true}
	}
	h, ref := f.Local.Counters.take(f.Local.Limits, keys, false)
	if ref != nil {
		return nil, ref
	}
	h.lease, h.redis = f.Redis.adopt(f.Local.Limits, keys, lost), f.Redis
	return h, nil
}

// Interface guards
var _ Store = Fallback{}
