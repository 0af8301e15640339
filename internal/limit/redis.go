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
	_ "embed"
	"encoding/hex"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"
)

// Redis is the Redis side of one zone: the client, the leases of this
// instance's open streams, the breaker, and the goroutine that renews the
// leases and probes a Redis that failed. Fallback puts it in front of the
// zone's local counters; it is shared by every handler of the zone with the
// same settings.
//
// Lock story: mu guards leases, dirty and pending; state and client are
// atomics, read on every admission; the loop goroutine is the only one that
// renews.
type Redis struct {
	zone    string
	prefix  string // "<key_prefix>:{<zone>}:"
	marker  string // this store's instance marker key
	lease   time.Duration
	timeout time.Duration
	refuse  bool // on_error refuse: for the log and Mode
	opt     rueidis.ClientOption
	logger  *zap.Logger

	client atomic.Pointer[rueidis.Client]
	state  atomic.Int32  // storeUp, storeDown or storeSync
	wake   chan struct{} // asks the loop for a round now
	stop   context.CancelFunc
	done   chan struct{} // closed when the loop has returned

	mu     sync.Mutex
	leases map[*lease]struct{}
	// dirty: a lease was added while Redis did not hold this instance's
	// leases (admitted locally). The loop counts in Redis again only after
	// a renewal round that began after the last such lease was added.
	dirty   bool
	pending []*lease // released while Redis was unreachable

	// transitions counts the changes of state, by the state entered
	transitions [len(storeStateNames)]atomic.Uint64
	revoked     atomic.Uint64 // slots revoked by rebuilds
	rounds      atomic.Uint64 // renewal rounds done
}

// RedisConfig is how a Redis store connects and counts.
type RedisConfig struct {
	Zone    string               // the zone's name, the hash tag of its keys
	Prefix  string               // the prefix of every key
	Lease   time.Duration        // how long a stream's slot outlives its instance
	Timeout time.Duration        // how long one call may take
	Refuse  bool                 // on_error refuse (else local)
	Client  rueidis.ClientOption // how to reach Redis
	Logger  *zap.Logger
}

// lease is one stream's member in the sets of its limits.
type lease struct {
	member   string
	keys     []string // the sets
	maxes    []int    // the max of each set
	released atomic.Bool
	// adopted: admitted by the local counters while Redis did not count;
	// guarded by the store's mu. A rebuild registers such leases after
	// the ones Redis counted.
	adopted bool

	mu       sync.Mutex
	revoked  bool   // the fleet's count had no room for it when rebuilt
	onRevoke func() // what ends the stream, once it is open
}

// revoke tells the stream its slot is gone: the count was rebuilt in Redis
// and had no room for it. The stream's callback runs now, or when it is
// set.
func (l *lease) revoke() {
	l.mu.Lock()
	l.revoked = true
	f := l.onRevoke
	l.onRevoke = nil
	l.mu.Unlock()
	if f != nil {
		f()
	}
}

// whenRevoked sets what ends l's stream when its slot is revoked, and runs
// it now if it was revoked already.
func (l *lease) whenRevoked(f func()) {
	l.mu.Lock()
	if !l.revoked {
		l.onRevoke = f
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	f()
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

// leaseSeq numbers the leases of every store of the process: two stores
// of one zone (a reload that changed its redis settings) share its sets,
// so their members must differ.
var leaseSeq atomic.Uint64

// NewRedis connects to Redis (in the background if it does not answer
// now) and starts the goroutine that renews the leases. Destruct stops it.
func NewRedis(c RedisConfig) *Redis {
	prefix := c.Prefix + ":{" + c.Zone + "}:"
	s := &Redis{
		zone:    c.Zone,
		prefix:  prefix,
		marker:  prefix + "i:" + incarnation + "." + strconv.FormatUint(storeSeq.Add(1), 10),
		lease:   c.Lease,
		timeout: c.Timeout,
		refuse:  c.Refuse,
		opt:     c.Client,
		logger:  c.Logger.With(zap.String("zone", c.Zone)),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		leases:  make(map[*lease]struct{}),
	}
	s.state.Store(storeDown)
	// connect now, so a config load with Redis up admits through it at
	// once; if Redis is down, the loop keeps trying in the background
	if err := s.connect(); err != nil {
		onError := "local"
		if c.Refuse {
			onError = "refuse"
		}
		s.logger.Warn("redis unreachable; streams are counted by this instance alone until it answers",
			zap.String("on_error", onError), zap.Error(err))
		s.transitions[storeDown].Add(1)
	} else {
		s.state.Store(storeUp)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.loop(ctx)
	return s
}

// Destruct stops the loop and closes the connection: the last config
// using the store is gone. Streams still open on that config keep their
// local counts; their Redis leases lapse within one lease.
func (s *Redis) Destruct() error {
	s.stop()
	<-s.done
	if c := s.client.Load(); c != nil {
		(*c).Close()
	}
	return nil
}

// connect dials Redis, unless a client exists already.
func (s *Redis) connect() error {
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
func (s *Redis) call(fn func(context.Context, rueidis.Client) error) error {
	c := s.client.Load()
	if c == nil {
		return errors.New("not connected")
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return fn(ctx, *c)
}

// errLost is acquire's answer when Redis lost this instance's leases (a
// restart or a failover): counting there now would over-admit.
var errLost = errors.New("redis lost this instance's leases")

// up reports whether Redis counts the zone now.
func (s *Redis) up() bool { return s.state.Load() == storeUp }

// acquire runs the acquire script for counter keys (one per limit, "" for a
// limit that does not count the request): a lease in every set, or the
// index of the limit whose set is full. On an error the script may have
// run: the lease is kept to be removed once Redis answers, and the store
// trips. errLost means Redis lost this instance's leases.
func (s *Redis) acquire(limits []Limit, keys []string) (*lease, int, error) {
	l := s.newLease()
	var limitOf []int
	l.keys, l.maxes, limitOf = s.setsOf(limits, keys)
	rkeys, args := s.acquireArgs(l)
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
		l.released.Store(true)
		s.trip(err, l)
		return nil, -1, err
	case res < 0:
		return nil, -1, errLost
	case res > 0:
		return nil, limitOf[res-1], nil
	}
	s.mu.Lock()
	s.leases[l] = struct{}{}
	s.mu.Unlock()
	return l, -1, nil
}

// setsOf returns the sets that count a stream under keys, the max of each,
// and the limit behind each set: limits with the same key template share a
// set, where the smaller max decides. An empty key is not counted.
func (s *Redis) setsOf(limits []Limit, keys []string) (sets []string, maxes, limitOf []int) {
	for i, k := range keys {
		if k == "" {
			continue
		}
		rk := s.prefix + "k:" + hashKey(k)
		if j := slices.Index(sets, rk); j >= 0 {
			if limits[i].Max < maxes[j] {
				maxes[j], limitOf[j] = limits[i].Max, i
			}
			continue
		}
		sets = append(sets, rk)
		maxes = append(maxes, limits[i].Max)
		limitOf = append(limitOf, i)
	}
	return sets, maxes, limitOf
}

// acquireArgs builds the acquire script's keys and arguments for lease l.
func (s *Redis) acquireArgs(l *lease) (rkeys, args []string) {
	rkeys = make([]string, 1, 1+len(l.keys))
	rkeys[0] = s.marker
	rkeys = append(rkeys, l.keys...)
	args = make([]string, 3, 3+len(l.keys))
	args[0], args[1] = l.member, strconv.FormatInt(s.lease.Milliseconds(), 10)
	args[2] = "0"
	if s.open() > 0 {
		args[2] = "1"
	}
	for _, m := range l.maxes {
		args = append(args, strconv.Itoa(m))
	}
	return rkeys, args
}

// adopt gives a stream admitted by the local counters while Redis did not
// count (lost says Redis lost this instance's leases) a lease, registered
// in Redis when it counts again, if the fleet's count has room for it.
func (s *Redis) adopt(limits []Limit, keys []string, lost bool) *lease {
	l := s.newLease()
	l.keys, l.maxes, _ = s.setsOf(limits, keys)
	l.adopted = true
	s.mu.Lock()
	s.leases[l] = struct{}{}
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
	return l
}

func (s *Redis) newLease() *lease {
	return &lease{member: incarnation + "." + strconv.FormatUint(leaseSeq.Add(1), 36)}
}

// open returns the number of this store's open leases.
func (s *Redis) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.leases)
}

// release removes l from Redis at once; if Redis is unreachable, when it
// is back.
func (s *Redis) release(l *lease) {
	s.mu.Lock()
	_, ok := s.leases[l]
	delete(s.leases, l)
	s.mu.Unlock()
	if !ok {
		return
	}
	l.released.Store(true) // a renewal in flight removes it again
	if s.state.Load() != storeUp {
		s.deferRelease(l)
		return
	}
	if err := s.remove([]*lease{l}); err != nil {
		s.trip(err, l)
	}
}

// deferRelease keeps l to be removed when Redis answers again. The list
// is bounded: a member not removed lapses within one lease anyway.
func (s *Redis) deferRelease(l *lease) {
	s.mu.Lock()
	if len(s.pending) < maxPendingReleases {
		s.pending = append(s.pending, l)
	}
	s.mu.Unlock()
}

// remove deletes the members of ls from their sets, in one round trip.
func (s *Redis) remove(ls []*lease) error {
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
func (s *Redis) trip(err error, l *lease) {
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
func (s *Redis) resync() {
	if !s.state.CompareAndSwap(storeUp, storeSync) {
		return
	}
	s.logger.Warn("redis lost this instance's leases (a restart or a failover); registering the open streams again")
	s.transition(storeSync)
	s.poke()
}

func (s *Redis) transition(to int32) {
	s.transitions[to].Add(1)
}

func (s *Redis) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Mode says how the zone counts now: "redis", "local" (Redis unreachable)
// or "resync" (Redis is back, open streams are being registered again).
func (s *Redis) Mode() string {
	st := s.state.Load()
	if st == storeDown && s.refuse {
		return "refuse"
	}
	return storeStateNames[st]
}

// Zone returns the name of the store's zone.
func (s *Redis) Zone() string { return s.zone }

// Counting reports whether the zone counts its streams in Redis now.
func (s *Redis) Counting() bool { return s.up() }

// Revoked returns how many slots of open streams rebuilds of the count
// found no room for.
func (s *Redis) Revoked() uint64 { return s.revoked.Load() }

// Modes are the modes Transitions counts, in its order.
var Modes = storeStateNames

// Transitions returns how many times the store entered each of Modes.
func (s *Redis) Transitions() [len(storeStateNames)]uint64 {
	var out [len(storeStateNames)]uint64
	for i := range s.transitions {
		out[i] = s.transitions[i].Load()
	}
	return out
}

// loop renews leases every lease/3 while Redis is up, and probes it with
// a growing backoff while it is not. It is the store's only goroutine.
func (s *Redis) loop(ctx context.Context) {
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
				backoff = min(2*backoff, every, maxProbeBackoff)
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

// renew extends the lease of every open stream of this store, in batches
// of renewBatch streams, and sets the instance marker in the last batch. A
// member Redis lost (a restart, a failover to a replica that missed it) or
// never had (admitted locally) is added again only where its sets have
// room: that is how the fleet's count is rebuilt without any key going
// over its max. Streams Redis counted come first, then the adopted ones;
// a stream that finds no room has its slot revoked, which ends it.
func (s *Redis) renew() error {
	s.mu.Lock()
	ls := make([]*lease, 0, len(s.leases))
	for l := range s.leases {
		ls = append(ls, l)
	}
	adopted := make(map[*lease]bool)
	for _, l := range ls {
		if l.adopted {
			adopted[l] = true
		}
	}
	s.mu.Unlock()
	slices.SortStableFunc(ls, func(a, b *lease) int {
		switch {
		case adopted[a] == adopted[b]:
			return 0
		case adopted[a]:
			return 1
		}
		return -1
	})
	for start := 0; start == 0 || start < len(ls); start += renewBatch {
		batch := ls[start:min(start+renewBatch, len(ls))]
		refused, err := s.renewBatch(batch, start+renewBatch >= len(ls))
		if err != nil {
			return err
		}
		s.settle(batch, refused)
		// a stream that ended while its batch was in flight may have been
		// re-added: remove it again
		var gone []*lease
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
	s.rounds.Add(1)
	return nil
}

// renewBatch runs the renewal script for one batch of leases (last: set
// the instance marker too), and returns the indexes, in batch, of the
// leases it found no room for.
func (s *Redis) renewBatch(batch []*lease, last bool) ([]int64, error) {
	keys := []string{s.marker}
	index := make(map[string]string)
	args := make([]string, 2, 2+6*len(batch))
	args[0], args[1] = strconv.FormatInt(s.lease.Milliseconds(), 10), "0"
	if last {
		args[1] = "1"
	}
	for _, l := range batch {
		args = append(args, l.member, strconv.Itoa(len(l.keys)))
		for j, k := range l.keys {
			i, ok := index[k]
			if !ok {
				keys = append(keys, k)
				i = strconv.Itoa(len(keys))
				index[k] = i
			}
			args = append(args, i, strconv.Itoa(l.maxes[j]))
		}
	}
	var refused []int64
	err := s.call(func(ctx context.Context, c rueidis.Client) error {
		var err error
		refused, err = renewScript.Exec(ctx, c, keys, args).AsIntSlice()
		return err
	})
	return refused, err
}

// settle records what a renewal did to batch: the adopted leases it
// registered count in Redis now; the refused ones (1-based indexes) lose
// their slot.
func (s *Redis) settle(batch []*lease, refused []int64) {
	var revoked []*lease
	s.mu.Lock()
	for _, i := range refused {
		if i < 1 || int(i) > len(batch) {
			continue
		}
		l := batch[i-1]
		if _, open := s.leases[l]; open && !l.released.Load() {
			delete(s.leases, l) // not renewed again, nothing to remove
			revoked = append(revoked, l)
		}
	}
	for _, l := range batch {
		l.adopted = false
	}
	s.mu.Unlock()
	if len(revoked) == 0 {
		return
	}
	s.revoked.Add(uint64(len(revoked)))
	s.logger.Warn("the zone's count was rebuilt in Redis with no room for some open streams (admitted while Redis did not count, or lost by it); ending them with a retry hint",
		zap.Int("streams", len(revoked)))
	for _, l := range revoked {
		l.revoke()
	}
}

// flushPending removes the members of streams that ended while Redis was
// unreachable.
func (s *Redis) flushPending() {
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

// acquireScript admits a stream: KEYS[1] is the instance marker, KEYS[2..]
// the limits' sets; ARGV: member, lease (ms), whether the instance has
// open leases, then each set's max. It returns 0 when the member was added
// to every set, i (1-based, over the sets) when set i is full, and -1 when
// the marker is gone while the instance has open leases: Redis lost them,
// and counting now would over-admit. Expiries come from Redis TIME.
var acquireScript = rueidis.NewLuaScript(acquireScriptLua)

//go:embed scripts/acquire.lua
var acquireScriptLua string

// renewScript extends leases: KEYS[1] is the instance marker, KEYS[2..]
// the sets; ARGV: lease (ms), whether to set the marker, then per stream
// its member, its number of sets and, per set, its index in KEYS and its
// max. ZADD GT moves an expiry forward only. A member missing from a set
// is added only if every set of its stream has room; otherwise it is
// removed from all of them. It returns the (1-based) streams refused.
var renewScript = rueidis.NewLuaScript(renewScriptLua)

//go:embed scripts/renew.lua
var renewScriptLua string

// Defaults and bounds.
const (
	minProbeBackoff = 250 * time.Millisecond
	// maxProbeBackoff bounds the wait between probes of a Redis that
	// failed: after a failover, the first probe that reaches the new
	// primary (a cluster client learns of it from a failed call) and the
	// rebuild come within about a second of the promotion
	maxProbeBackoff    = time.Second
	renewBatch         = 500 // streams per renewal script
	maxPendingReleases = 100000
)

// Done is closed when the store's loop has returned, after Destruct.
func (s *Redis) Done() <-chan struct{} { return s.done }

// SetKey returns the Redis key of the sorted set that counts counter key k
// (Key): the key holds a hash, so no client address or token reaches Redis.
func (s *Redis) SetKey(k string) string { return s.prefix + "k:" + hashKey(k) }
