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

// The distributed side of a zone: stream limits counted in Redis, so a
// fleet of Caddy instances shares one count per key.
//
// Key layout, one sorted set per limit key and a marker per instance, all
// with the zone as a hash tag so a Redis Cluster keeps them in one slot
// (one script can check all limits of a block):
//
//	<prefix>:{<zone>}:k:<sha256(per, key), 32 hex>  members <incarnation>.<n>, score = lease expiry (ms, Redis TIME)
//	<prefix>:{<zone>}:i:<incarnation>.<store>       set while Redis holds this instance's leases
//
// A stream holds one member in each set of its limits. The acquire script
// drops expired members, checks every limit and adds the member to all
// sets or none. The instance renews its members in batches (ZADD GT, which
// also re-adds members a restarted Redis lost) every lease/3, and removes
// them when the stream ends. The marker tells an instance that Redis lost
// its leases (a restart or a failover): it then admits against its own
// counters until it has registered every open stream again.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// redisStore is the Redis side of one zone: the client, the leases of this
// instance's open streams, the breaker, and the goroutine that renews the
// leases and probes a Redis that failed.
//
// mu guards leases and pending; state and client are atomics, read on
// every admission.
type redisStore struct {
	zone    string
	prefix  string // "<key_prefix>:{<zone>}:"
	marker  string // this store's instance marker key
	lease   time.Duration
	timeout time.Duration
	refuse  bool // on_error refuse
	opt     rueidis.ClientOption
	logger  *zap.Logger

	client atomic.Pointer[rueidis.Client]
	state  atomic.Int32 // storeUp, storeDown or storeSync
	seq    atomic.Uint64
	wake   chan struct{} // asks the loop for a round now
	stop   context.CancelFunc
	done   chan struct{} // closed when the loop has returned

	mu     sync.Mutex
	leases map[*streamWriter]*redisLease
	// dirty: a lease was added while Redis did not hold this instance's
	// leases (admitted locally). The loop counts in Redis again only after
	// a renewal round that began after the last such lease was added.
	dirty   bool
	pending []*redisLease // released while Redis was unreachable

	// transitions counts the changes of state, by the state entered; the
	// zone collector exports them (zonestats.go)
	transitions [len(storeStateNames)]atomic.Uint64
}

// redisLease is one stream's member in the sets of its limits.
type redisLease struct {
	member   string
	keys     []string
	released atomic.Bool
}

// Store states.
const (
	storeUp   int32 = iota // Redis answers and holds this instance's leases
	storeDown              // Redis failed: no call until the loop's probe succeeds
	storeSync              // Redis answers but lost leases: registering them again
)

var storeStateNames = [...]string{storeUp: "redis", storeDown: "local", storeSync: "resync"}

// incarnation tells this process's members apart from other processes'
// and from its own earlier runs.
var incarnation = func() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

var storeSeq atomic.Uint64

func newRedisStore(zone string, r *RedisStore, opt rueidis.ClientOption, logger *zap.Logger) *redisStore {
	prefix := r.prefix() + ":{" + zone + "}:"
	s := &redisStore{
		zone:    zone,
		prefix:  prefix,
		marker:  prefix + "i:" + incarnation + "." + strconv.FormatUint(storeSeq.Add(1), 10),
		lease:   r.lease(),
		timeout: r.timeout(),
		refuse:  r.onError() == onErrorRefuse,
		opt:     opt,
		logger:  logger.With(zap.String("zone", zone)),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		leases:  make(map[*streamWriter]*redisLease),
	}
	s.state.Store(storeDown)
	// connect now, so a config load with Redis up admits through it at
	// once; if Redis is down, the loop keeps trying in the background
	if err := s.connect(); err != nil {
		s.logger.Warn("redis unreachable; streams are counted by this instance alone until it answers",
			zap.String("on_error", r.onError()), zap.Error(err))
		s.transitions[storeDown].Add(1)
	} else {
		s.state.Store(storeUp)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.loop(ctx)
	return s
}

// Destruct implements caddy.Destructor: the last config using the store
// is gone, so the loop stops and the connection closes. Streams still
// open on that config keep their local slots; their Redis leases lapse
// within one lease.
func (s *redisStore) Destruct() error {
	s.stop()
	<-s.done
	if c := s.client.Load(); c != nil {
		(*c).Close()
	}
	return nil
}

// connect dials Redis and sets this instance's marker, unless it has open
// leases Redis may have lost: those are registered first (resync).
func (s *redisStore) connect() error {
	if s.client.Load() != nil {
		return nil
	}
	c, err := rueidis.NewClient(s.opt)
	if err != nil {
		return err
	}
	s.client.Store(&c)
	return nil
}

// call runs fn with the client and a per-call deadline.
func (s *redisStore) call(fn func(context.Context, rueidis.Client) error) error {
	c := s.client.Load()
	if c == nil {
		return errors.New("not connected")
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return fn(ctx, *c)
}

// admit counts a stream in Redis against every limit of h: keys are the
// stream's local counter keys, one per limit. While Redis is unreachable
// or registering leases again, it falls back to this instance's counters
// or refuses, as on_error says.
func (s *redisStore) admit(h *Handler, sw *streamWriter, keys []string) *refusal {
	l := &redisLease{member: incarnation + "." + strconv.FormatUint(s.seq.Add(1), 36)}
	lost := false
	if s.state.Load() == storeUp {
		rkeys := make([]string, 1, 1+len(keys))
		rkeys[0] = s.marker
		args := make([]string, 3, 3+len(keys))
		args[0], args[1] = l.member, strconv.FormatInt(s.lease.Milliseconds(), 10)
		args[2] = "0"
		if s.open() > 0 {
			args[2] = "1"
		}
		limitOf := make([]int, 0, len(keys)) // rkeys index - 1 → limit index
		for i, k := range keys {
			if k == "" {
				continue // an empty key is not counted (limits.go, admit)
			}
			rk := s.prefix + "k:" + hashKey(k)
			if j := indexOf(rkeys[1:], rk); j >= 0 {
				// limits with the same key template share a set: the
				// smaller max decides
				if m, _ := strconv.Atoi(args[3+j]); h.limits[i].Max < m {
					args[3+j] = strconv.Itoa(h.limits[i].Max)
					limitOf[j] = i
				}
				continue
			}
			rkeys = append(rkeys, rk)
			args = append(args, strconv.Itoa(h.limits[i].Max))
			limitOf = append(limitOf, i)
		}
		var res int64
		err := s.call(func(ctx context.Context, c rueidis.Client) error {
			var err error
			res, err = acquireScript.Exec(ctx, c, rkeys, args).AsInt64()
			if err != nil && ctx.Err() == nil && !isRedisReply(err) {
				// a connection that broke since its last use (the client
				// replaces it on the next call); the script is safe to
				// run twice with one member
				res, err = acquireScript.Exec(ctx, c, rkeys, args).AsInt64()
			}
			return err
		})
		switch {
		case err != nil:
			// the script may have run: remove the member once Redis answers
			l.keys = rkeys[1:]
			l.released.Store(true)
			s.trip(err, l)
		case res < 0:
			// Redis lost this instance's leases: admit locally, and ask
			// for a resync once this stream's lease is among those to
			// register (below)
			lost = true
		case res > 0:
			i := limitOf[res-1]
			_, key, _ := strings.Cut(keys[i], "\x00")
			return &refusal{limit: h.limits[i].Limit, key: key}
		default:
			l.keys = rkeys[1:]
			h.zone.take(sw, h.limits, keys, true)
			s.mu.Lock()
			s.leases[sw] = l
			s.mu.Unlock()
			return nil
		}
	}
	// Redis is not available: open streams go on; new ones are refused or
	// counted by this instance alone, and get a lease that is registered
	// when Redis is back
	l = &redisLease{member: incarnation + "." + strconv.FormatUint(s.seq.Add(1), 36)}
	if s.refuse {
		return &refusal{limit: h.limits[0].Limit, unavailable: true}
	}
	if ref := h.zone.take(sw, h.limits, keys, false); ref != nil {
		return ref
	}
	for _, k := range keys {
		rk := s.prefix + "k:" + hashKey(k)
		if k != "" && !containsString(l.keys, rk) {
			l.keys = append(l.keys, rk)
		}
	}
	s.mu.Lock()
	s.leases[sw] = l
	s.dirty = true
	up := s.state.Load() == storeUp
	s.mu.Unlock()
	switch {
	case lost:
		s.resync()
	case up:
		// Redis came back while this stream was admitted locally: have
		// the loop register it now, not at the next renewal
		s.poke()
	}
	return nil
}

// open returns the number of this store's open leases.
func (s *redisStore) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.leases)
}

// release removes sw's lease from Redis at once; if Redis is unreachable,
// when it is back.
func (s *redisStore) release(sw *streamWriter) {
	s.mu.Lock()
	l := s.leases[sw]
	delete(s.leases, sw)
	s.mu.Unlock()
	if l == nil {
		return
	}
	l.released.Store(true) // a renewal in flight removes it again
	if s.state.Load() != storeUp {
		s.deferRelease(l)
		return
	}
	if err := s.remove([]*redisLease{l}); err != nil {
		s.trip(err, l)
	}
}

// deferRelease keeps l to be removed when Redis answers again. The list
// is bounded: a member not removed lapses within one lease anyway.
func (s *redisStore) deferRelease(l *redisLease) {
	s.mu.Lock()
	if len(s.pending) < maxPendingReleases {
		s.pending = append(s.pending, l)
	}
	s.mu.Unlock()
}

// remove deletes the members of ls from their sets, in one round trip.
func (s *redisStore) remove(ls []*redisLease) error {
	return s.call(func(ctx context.Context, c rueidis.Client) error {
		cmds := make(rueidis.Commands, 0, len(ls))
		for _, l := range ls {
			for _, k := range l.keys {
				cmds = append(cmds, c.B().Zrem().Key(k).Member(l.member).Build())
			}
		}
		for _, r := range c.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				return err
			}
		}
		return nil
	})
}

// trip marks Redis unreachable after a failed call, once per outage, and
// keeps l (if any) to be removed when it is back.
func (s *redisStore) trip(err error, l *redisLease) {
	if l != nil {
		s.deferRelease(l)
	}
	if s.state.Swap(storeDown) == storeDown {
		return
	}
	what := "streams are counted by this instance alone"
	if s.refuse {
		what = "new streams are refused"
	}
	s.logger.Warn("redis unreachable; open streams go on, "+what+" until it answers", zap.Error(err))
	s.transition(storeDown)
	s.poke()
}

// resync marks Redis as having lost this instance's leases (restarted
// empty, or failed over), and asks the loop to register them again.
func (s *redisStore) resync() {
	if !s.state.CompareAndSwap(storeUp, storeSync) {
		return
	}
	s.logger.Warn("redis lost this instance's leases (a restart or a failover); registering the open streams again")
	s.transition(storeSync)
	s.poke()
}

func (s *redisStore) transition(to int32) {
	s.transitions[to].Add(1)
}

func (s *redisStore) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Mode says how the zone counts now: "redis", "local" (Redis unreachable)
// or "resync" (Redis is back, open streams are being registered again).
func (s *redisStore) Mode() string {
	st := s.state.Load()
	if st == storeDown && s.refuse {
		return "refuse"
	}
	return storeStateNames[st]
}

// loop renews leases every lease/3 while Redis is up, and probes it with
// a growing backoff while it is not. It is the store's only goroutine.
func (s *redisStore) loop(ctx context.Context) {
	defer close(s.done)
	every := s.lease / 3
	backoff := minProbeBackoff
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		if s.state.Load() != storeUp {
			t.Reset(backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
			if s.state.Load() == storeDown {
				// a fresh outage: wait for the probe
				t.Stop()
				backoff = minProbeBackoff
				continue
			}
		}
		switch s.state.Load() {
		case storeUp:
			if err := s.renew(); err != nil {
				s.trip(err, nil)
				continue
			}
			t.Reset(every)
		default:
			err := s.connect()
			from := int32(-1)
			for err == nil && from < 0 {
				// renew until a round has seen every lease added
				// locally: one admitted while the round ran is not in it
				s.mu.Lock()
				s.dirty = false
				s.mu.Unlock()
				if err = s.renew(); err != nil {
					break
				}
				s.flushPending()
				s.mu.Lock()
				if !s.dirty {
					from = s.state.Swap(storeUp)
				}
				s.mu.Unlock()
			}
			if err != nil {
				backoff = min(2*backoff, every)
				continue
			}
			s.logger.Info("redis answers and holds this instance's open streams; counting there again",
				zap.String("was", storeStateNames[from]), zap.Int("streams", s.open()))
			s.transition(storeUp)
			backoff = minProbeBackoff
			t.Reset(every)
		}
	}
}

// renew extends the lease of every open stream of this store, re-adding
// members Redis lost, in batches of renewBatch streams, and sets the
// instance marker in the last batch.
func (s *redisStore) renew() error {
	s.mu.Lock()
	ls := make([]*redisLease, 0, len(s.leases))
	for _, l := range s.leases {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	leaseMs := strconv.FormatInt(s.lease.Milliseconds(), 10)
	for start := 0; start == 0 || start < len(ls); start += renewBatch {
		batch := ls[start:min(start+renewBatch, len(ls))]
		last := start+renewBatch >= len(ls)
		keys := []string{s.marker}
		index := make(map[string]string)
		args := make([]string, 2, 2+4*len(batch))
		args[0], args[1] = leaseMs, "0"
		if last {
			args[1] = "1"
		}
		for _, l := range batch {
			args = append(args, l.member, strconv.Itoa(len(l.keys)))
			for _, k := range l.keys {
				i, ok := index[k]
				if !ok {
					keys = append(keys, k)
					i = strconv.Itoa(len(keys))
					index[k] = i
				}
				args = append(args, i)
			}
		}
		err := s.call(func(ctx context.Context, c rueidis.Client) error {
			return renewScript.Exec(ctx, c, keys, args).Error()
		})
		if err != nil {
			return err
		}
		// a stream that ended while its batch was in flight may have been
		// re-added: remove it again
		var gone []*redisLease
		for _, l := range batch {
			if l.released.Load() {
				gone = append(gone, l)
			}
		}
		if len(gone) > 0 {
			if err := s.remove(gone); err != nil {
				return err
			}
		}
	}
	return nil
}

// flushPending removes the members of streams that ended while Redis was
// unreachable.
func (s *redisStore) flushPending() {
	s.mu.Lock()
	ls := s.pending
	s.pending = nil
	s.mu.Unlock()
	for len(ls) > 0 {
		n := min(len(ls), renewBatch)
		if err := s.remove(ls[:n]); err != nil {
			return // they lapse within one lease
		}
		ls = ls[n:]
	}
}

// isRedisReply reports whether err is an error reply from Redis (the
// call reached it), not a failure to reach it.
func isRedisReply(err error) bool {
	_, ok := rueidis.IsRedisErr(err)
	return ok
}

// hashKey hashes a counter key (limit template and value), so no client
// address or token reaches Redis.
func hashKey(k string) string {
	sum := sha256.Sum256([]byte(k))
	return hex.EncodeToString(sum[:16])
}

func indexOf(ss []string, s string) int {
	for i, v := range ss {
		if v == s {
			return i
		}
	}
	return -1
}

func containsString(ss []string, s string) bool { return indexOf(ss, s) >= 0 }

// acquireScript admits a stream: KEYS[1] is the instance marker, KEYS[2..]
// the limits' sets; ARGV: member, lease (ms), whether the instance has
// open leases, then each set's max. It returns 0 when the member was added
// to every set, i (1-based, over the sets) when set i is full, and -1 when
// the marker is gone while the instance has open leases: Redis lost them,
// and counting now would over-admit. Expiries come from Redis TIME.
var acquireScript = rueidis.NewLuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
	if ARGV[3] == '1' then return -1 end
	redis.call('SET', KEYS[1], '1', 'PX', lease)
end
for i = 2, #KEYS do
	local k = KEYS[i]
	redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
	if redis.call('ZSCORE', k, ARGV[1]) == false and redis.call('ZCARD', k) >= tonumber(ARGV[i + 2]) then
		return i - 1
	end
end
for i = 2, #KEYS do
	local k = KEYS[i]
	redis.call('ZADD', k, now + lease, ARGV[1])
	if redis.call('PTTL', k) < lease then redis.call('PEXPIRE', k, lease) end
end
return 0
`)

// renewScript extends leases: KEYS[1] is the instance marker, KEYS[2..]
// the sets; ARGV: lease (ms), whether to set the marker, then per stream
// its member, its number of sets and their indexes in KEYS. ZADD GT moves
// an expiry forward only, and adds a member Redis lost.
var renewScript = rueidis.NewLuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local exp = now + lease
local i = 3
while i <= #ARGV do
	local m = ARGV[i]
	local n = tonumber(ARGV[i + 1])
	for j = 1, n do
		redis.call('ZADD', KEYS[tonumber(ARGV[i + 1 + j])], 'GT', exp, m)
	end
	i = i + 2 + n
end
for j = 2, #KEYS do
	local k = KEYS[j]
	redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
	if redis.call('PTTL', k) < lease then redis.call('PEXPIRE', k, lease) end
end
if ARGV[2] == '1' then redis.call('SET', KEYS[1], '1', 'PX', lease) end
return 0
`)

// Defaults and bounds.
const (
	defaultRedisLease   = 30 * time.Second
	defaultRedisTimeout = 100 * time.Millisecond
	defaultRedisPrefix  = "caddy-sse"
	onErrorLocal        = "local"
	onErrorRefuse       = "refuse"
	minDialTimeout      = time.Second // connecting (TCP, TLS, HELLO) may take longer than one call
	minProbeBackoff     = 250 * time.Millisecond
	renewBatch          = 500 // streams per renewal script
	maxPendingReleases  = 100000
)
