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

import (
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// A key holds at most Max streams; a refusal names the limit and the key
// and takes nothing; a hold released twice gives back once; and counters
// at zero are gone.
func TestLocalHoldsAndRefuses(t *testing.T) {
	c := NewCounters()
	l := Local{Counters: c, Limits: []Limit{{Max: 1, ID: "per-host"}}}
	keys := []string{Key("per-host", "example.com")}
	a, ref := l.Acquire(keys)
	if a == nil || ref != nil {
		t.Fatalf("first stream: hold %v, refusal %+v", a, ref)
	}
	b, ref := l.Acquire(keys)
	if b != nil || ref == nil || ref.Limit != 0 || ref.Key != "example.com" || ref.Unavailable {
		t.Fatalf("second stream: hold %v, refusal %+v; want a refusal by limit 0 for example.com", b, ref)
	}
	a.Release()
	a.Release()
	if n := len(c.Snapshot()); n != 0 {
		t.Fatalf("%d counters after the only stream ended, want none", n)
	}
	if h, ref := l.Acquire(keys); h == nil || ref != nil {
		t.Fatalf("after the release: hold %v, refusal %+v", h, ref)
	} else {
		h.Release()
	}
}

// Limits of one key template share a counter: a stream takes one place in
// it, and the smaller max decides. A request none of whose keys is set is
// counted by no limit.
func TestLocalSharedTemplate(t *testing.T) {
	c := NewCounters()
	l := Local{Counters: c, Limits: []Limit{{Max: 2, ID: "k"}, {Max: 1, ID: "k"}}}
	key := Key("k", "v")
	a, _ := l.Acquire([]string{key, key})
	if got := c.Snapshot()[key]; got != 1 {
		t.Fatalf("count %d after one stream under two limits of one template, want 1", got)
	}
	if _, ref := l.Acquire([]string{key, key}); ref == nil || ref.Limit != 1 {
		t.Fatalf("refusal %+v, want limit 1 (max 1) to refuse the second stream", ref)
	}
	a.Release()
	if h, ref := l.Acquire([]string{"", ""}); h != nil || ref != nil {
		t.Fatalf("every key empty: hold %v, refusal %+v; want neither", h, ref)
	}
}

// While Redis cannot be reached, a fall-back store admits against the
// local counters (on_error local) or refuses as unavailable (on_error
// refuse), and the local counters still cap each key.
func TestFallbackWhileRedisIsDown(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		r := NewRedis(RedisConfig{
			Zone: "down", Prefix: "test", Lease: 3 * time.Second, Timeout: 100 * time.Millisecond, Refuse: refuse,
			Client: rueidis.ClientOption{InitAddress: []string{"127.0.0.1:1"}, DisableCache: true, DisableRetry: true},
			Logger: zap.NewNop(),
		})
		f := Fallback{Redis: r, Local: Local{Counters: NewCounters(), Limits: []Limit{{Max: 1, ID: "k"}}}, Refuse: refuse}
		keys := []string{Key("k", "v")}
		h, ref := f.Acquire(keys)
		switch {
		case refuse && (h != nil || ref == nil || !ref.Unavailable):
			t.Errorf("on_error refuse: hold %v, refusal %+v; want a refusal as unavailable", h, ref)
		case !refuse && (h == nil || ref != nil):
			t.Errorf("on_error local: hold %v, refusal %+v; want a local hold", h, ref)
		case !refuse:
			if _, ref := f.Acquire(keys); ref == nil || ref.Unavailable {
				t.Errorf("on_error local, second stream: refusal %+v, want the local limit's", ref)
			}
			if m := r.Mode(); m != "local" {
				t.Errorf("Mode = %q, want local", m)
			}
			h.Release()
		}
		if err := r.Destruct(); err != nil {
			t.Fatal(err)
		}
	}
}
