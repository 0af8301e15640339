package caddysse

// The scheduler (issue 13): one client whose socket does not take bytes
// any more does not hold up the other streams' heartbeats.

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// 1,000 idle streams with heartbeat 1s; the connection of one of them
// stops taking bytes, as a client that never reads does once its socket
// buffers are full, so the heartbeat written to it blocks. Every other
// stream still gets its next beat within the interval plus one granule
// (plus slack for a loaded machine) of that write blocking.
func TestSlowClientDoesNotDelayOtherBeats(t *testing.T) {
	const streams = 1000
	interval := time.Second
	d := caddy.Duration(interval)
	h := provisionHandler(t, &Handler{Heartbeat: &d})
	granule := h.streams.set.Sched.Granule()

	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock()
	blocked := make(chan struct{}, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/idle/0" {
			r.Context().Value(gateConnKey{}).(*gateConn).target.Store(true)
		}
		_ = h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return nil
		}))
	}))
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, gateConnKey{}, c)
	}
	srv.Listener = &gateListener{Listener: srv.Listener, release: release, blocked: blocked}
	srv.Start()
	defer srv.Close()
	defer unblock()

	port := srv.Listener.Addr().(*net.TCPAddr).Port
	conns := openRawStreams(t, port, streams)
	defer func() {
		for _, rc := range conns {
			rc.conn.Close()
		}
	}()
	// from now on, the first write to stream 0's connection (its next
	// heartbeat) blocks until the test ends
	gateArmed.Store(true)
	defer gateArmed.Store(false)
	select {
	case <-blocked:
	case <-time.After(10 * interval):
		t.Fatal("no write to the stalled stream within 10 intervals")
	}
	stalledAt := time.Now()
	bound := interval + granule + 750*time.Millisecond

	var late, missing atomic.Int64
	var worst atomic.Int64
	var wg sync.WaitGroup
	for _, rc := range conns[1:] {
		wg.Go(func() {
			got := rc.readUntil(beatFrame, 2*bound)
			if !strings.Contains(got, beatFrame) {
				missing.Add(1)
				return
			}
			d := time.Since(stalledAt)
			for {
				w := worst.Load()
				if int64(d) <= w || worst.CompareAndSwap(w, int64(d)) {
					break
				}
			}
			if d > bound {
				late.Add(1)
			}
		})
	}
	wg.Wait()
	t.Logf("granule %v; the last of %d streams had its beat %v after the stalled write began", granule, streams-1, time.Duration(worst.Load()))
	if n := missing.Load(); n > 0 {
		t.Errorf("%d of %d streams got no beat within %v of a stalled write to another stream", n, streams-1, 2*bound)
	}
	if n := late.Load(); n > 0 {
		t.Errorf("%d of %d streams got their beat later than %v (interval + granule + slack) after a stalled write to another stream", n, streams-1, bound)
	}
}

// gateArmed lets the target connection's writes block.
var gateArmed atomic.Bool

type gateConnKey struct{}

// gateListener hands out connections whose writes block, once the test
// arms them, when they are the target: a client that never reads, whose
// socket buffers are full.
type gateListener struct {
	net.Listener
	release <-chan struct{}
	blocked chan<- struct{}
}

func (l *gateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &gateConn{Conn: c, l: l}, nil
}

type gateConn struct {
	net.Conn
	l      *gateListener
	target atomic.Bool
}

func (c *gateConn) Write(p []byte) (int, error) {
	if c.target.Load() && gateArmed.Load() {
		select {
		case c.l.blocked <- struct{}{}:
		default:
		}
		<-c.l.release
	}
	return c.Conn.Write(p)
}
