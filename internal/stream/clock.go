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

// The clock of the engine, the reasons a stream ends, and jitter.

import (
	"math/rand/v2"
	"time"
)

// Now is a monotonic clock reading in nanoseconds, cheap to store in an
// atomic. Every time the engine keeps is on this clock.
func Now() int64 { return int64(time.Since(epoch)) }

var epoch = time.Now()

// EndReason says why a stream ended; the values are metric labels and
// access log values.
type EndReason string

// The reasons a stream ends.
const (
	EndClient      EndReason = "client"       // the client went away
	EndUpstream    EndReason = "upstream"     // the upstream ended the response
	EndMaxDuration EndReason = "max_duration" // the stream reached its maximum duration
	EndIdleTimeout EndReason = "idle_timeout" // the upstream sent nothing for too long
	EndShutdown    EndReason = "shutdown"     // the server shut down
	EndDrain       EndReason = "drain"        // a reload drained the old config's streams
	EndError       EndReason = "error"        // the handler failed
	EndRecount     EndReason = "recount"      // the fleet's count, rebuilt in Redis, had no room for it
)

// EndReasons are every EndReason, in a stable order.
var EndReasons = []EndReason{EndClient, EndUpstream, EndMaxDuration, EndIdleTimeout, EndShutdown, EndDrain, EndError, EndRecount}

// JitterDown returns d scaled by a random factor in [1-spread, 1].
func JitterDown(d time.Duration, spread float64) time.Duration {
	return time.Duration(float64(d) * (1 - spread*rand.Float64()))
}

// JitterUp returns d scaled by a random factor in [1, 1+spread].
func JitterUp(d time.Duration, spread float64) time.Duration {
	return time.Duration(float64(d) * (1 + spread*rand.Float64()))
}

// randomIn returns a random offset in [0, window), 0 for an empty window.
func randomIn(window time.Duration) int64 {
	if window <= 0 {
		return 0
	}
	return rand.Int64N(int64(window))
}
