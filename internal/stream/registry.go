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

package stream

// The one set of open streams of the process: the admin API lists it,
// shutdown and drain end a group of it, tests count it.

import (
	"sync"
	"sync/atomic"
	"time"
)

// Registry is a set of open streams, split into shards so streams opening
// and ending on many cores do not all wait for one lock, and so a reader
// holds each lock only to copy one shard's pointers. Every stream belongs
// to a Group (the streams of one handler), which a shutdown or a drain
// ends as a whole.
//
// Lock story: each shard's mu guards its map; a Group's mu guards its
// ending and window. No lock is held while another is taken, except that
// EndGroup holds a shard's lock while it asks that shard's streams to end,
// which takes their scheduler's lock (never the other way round).
type Registry struct {
	shards [registryShards]registryShard
	next   atomic.Uint64 // numbers the streams, to spread them over shards
}

type registryShard struct {
	mu sync.Mutex
	m  map[*Stream]struct{}
	_  [40]byte // keep shards on separate cache lines
}

// Group is the streams of one handler, for ending them together.
type Group struct {
	open atomic.Int64 // streams of the group in the registry

	mu sync.Mutex
	// ending, once set, is applied to streams that open afterwards too:
	// a request in flight when the server began to shut down may still
	// turn into a stream.
	ending EndReason
	window time.Duration
}

// Open returns the number of the group's streams in the registry.
func (g *Group) Open() int { return int(g.open.Load()) }

// Add puts an open stream st of group g in the registry; if g is ending,
// st is asked to end too.
func (reg *Registry) Add(st *Stream, g *Group) {
	st.group = g
	st.shard = uint32(reg.next.Add(1) % registryShards)
	s := &reg.shards[st.shard]
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[*Stream]struct{})
	}
	s.m[st] = struct{}{}
	s.mu.Unlock()
	g.open.Add(1)
	g.mu.Lock()
	why, window := g.ending, g.window
	g.mu.Unlock()
	if why != "" {
		st.ScheduleEnd(why, Now()+randomIn(window))
	}
}

// Remove takes st out of the registry, if it is there.
func (reg *Registry) Remove(st *Stream) {
	if st.group == nil {
		return
	}
	s := &reg.shards[st.shard]
	s.mu.Lock()
	_, ok := s.m[st]
	delete(s.m, st)
	s.mu.Unlock()
	if ok {
		st.group.open.Add(-1)
	}
}

// EndGroup asks every stream of g, and every stream of g that opens from
// now on, to end for why, each at a random moment within window. It
// returns the number of streams asked.
func (reg *Registry) EndGroup(g *Group, why EndReason, window time.Duration) int {
	g.mu.Lock()
	g.ending, g.window = why, window
	g.mu.Unlock()
	now, n := Now(), 0
	for i := range reg.shards {
		s := &reg.shards[i]
		s.mu.Lock()
		for st := range s.m {
			if st.group == g {
				st.ScheduleEnd(why, now+randomIn(window))
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// Streams returns the open streams, in no order. Each shard's lock is held
// only while its pointers are copied.
func (reg *Registry) Streams() []*Stream {
	var out []*Stream
	for i := range reg.shards {
		s := &reg.shards[i]
		s.mu.Lock()
		for st := range s.m {
			out = append(out, st)
		}
		s.mu.Unlock()
	}
	return out
}

// registryShards is the number of shards of a registry.
const registryShards = 32
