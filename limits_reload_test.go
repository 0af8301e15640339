package caddysse

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Stream counters survive config reloads: streams opened under the old
// config still count under the new one, also when the new one changes max,
// and they give their slots back when they end, so the counters reach 0.
// The reloads go through the admin API, as `caddy reload` does. Issue 4.
func TestLimitCountersSurviveReload(t *testing.T) {
	u := startLimUpstream(t)
	sites := func(max int) string {
		return fmt.Sprintf(`
http://127.0.0.1:{{.HTTP}} {
	sse {
		limit %d
		retry 1s
	}
	reverse_proxy {{.Upstream}}
}
`, max)
	}
	c := startCaddy(t, u.addr, sites(2))
	client := limClient()
	base := c.BaseURL()
	es := func(id string) limReq { return limReq{path: "/?id=" + id, eventSource: true} }
	refused := func(t *testing.T, why string) {
		t.Helper()
		hits := u.hits.Load()
		res, _ := limOpen(t, client, base, es("refused"))
		limCheckRetryAnswer(t, res, time.Second)
		if u.hits.Load() != hits {
			t.Errorf("%s: the refused stream reached the upstream", why)
		}
	}

	var old []<-chan chunk
	for range 2 {
		res, _ := limOpen(t, client, base, es("old"))
		old = append(old, limCheckStream(t, res))
	}
	refused(t, "before any reload")

	limAdminLoad(t, c, c.adapt(t, sites(2)))
	refused(t, "after a reload with the same max")
	res, _ := limOpen(t, client, base, limReq{path: "/?id=fetch"})
	if body := limReadAll(t, res.Body); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("fetch after a reload: status %d (%q), want 503", res.StatusCode, body)
	}

	limAdminLoad(t, c, c.adapt(t, sites(1)))
	refused(t, "after a reload that lowers max below the open streams")

	limAdminLoad(t, c, c.adapt(t, sites(3)))
	res, _ = limOpen(t, client, base, es("new"))
	old = append(old, limCheckStream(t, res)) // the third of max 3
	refused(t, "after a reload that raises max, with the new max reached")

	// the old streams ran on through the reloads; when they end, every
	// slot comes back, old config or new
	u.end("old")
	u.end("new")
	for _, ch := range old {
		if got := limCheckEOF(t, ch); !strings.Contains(got, "data: bye") {
			t.Errorf("stream ended with %q, want its last event: it did not run on through the reloads", got)
		}
	}
	z := limZone("srv0#1")
	if z == nil {
		t.Fatal("the counters are gone from the pool")
	}
	if counts := limCounts(z); len(counts) != 0 {
		t.Errorf("counters after every stream ended = %v, want none", counts)
	}
	for range 3 {
		res, _ := limOpen(t, client, base, es("after"))
		limCheckStream(t, res)
	}
	refused(t, "with the new max reached after the old streams ended")
}

// Two sse blocks never share counters, even when their keys are equal,
// unless they name the same zone; a named zone keeps its counters across a
// reload too. Issue 4.
func TestLimitZones(t *testing.T) {
	u := startLimUpstream(t)
	sites := `
http://127.0.0.1:{{.HTTP}} {
	handle /a/* {
		sse {
			limit 1 per {client_ip}
		}
		reverse_proxy {{.Upstream}}
	}
	handle /b/* {
		sse {
			limit 1 per {client_ip}
		}
		reverse_proxy {{.Upstream}}
	}
	handle /c/* {
		sse {
			limit 1 per {client_ip}
			zone shared
		}
		reverse_proxy {{.Upstream}}
	}
	handle /d/* {
		sse {
			limit 1 per {client_ip}
			zone shared
		}
		reverse_proxy {{.Upstream}}
	}
}
http://other.test:{{.HTTP}} {
	sse {
		limit 1 per {client_ip}
	}
	reverse_proxy {{.Upstream}}
}
`
	c := startCaddy(t, u.addr, sites)
	client := limClient()
	base := c.BaseURL()
	step := func(t *testing.T, rq limReq, admit bool) {
		t.Helper()
		rq.eventSource = true
		res, _ := limOpen(t, client, base, rq)
		if admit {
			limCheckStream(t, res)
		} else {
			limCheckRetryAnswer(t, res, defaultRetry)
		}
	}
	step(t, limReq{path: "/a/"}, true)
	step(t, limReq{path: "/a/"}, false)
	step(t, limReq{path: "/b/"}, true)                   // another sse block in the same site
	step(t, limReq{path: "/", host: "other.test"}, true) // another site
	step(t, limReq{path: "/c/"}, true)
	step(t, limReq{path: "/d/"}, false) // same zone name: shared
	limAdminLoad(t, c, c.adapt(t, sites))
	step(t, limReq{path: "/d/"}, false)
	step(t, limReq{path: "/c/"}, false)
	step(t, limReq{path: "/b/"}, false)
}

// A named zone keeps its counters across a reload that adds, removes or
// reorders sse blocks, which renumbers the default zones: the way to pin a
// block's counters. Issue 4.
func TestLimitNamedZoneSurvivesNewSites(t *testing.T) {
	u := startLimUpstream(t)
	b := `
http://b.test:{{.HTTP}} {
	sse {
		limit 1
		zone b
	}
	reverse_proxy {{.Upstream}}
}
`
	c := startCaddy(t, u.addr, b)
	client := limClient()
	res, _ := limOpen(t, client, c.BaseURL(), limReq{path: "/?id=held", host: "b.test", eventSource: true})
	limCheckStream(t, res)

	// a new site, in front of b.test in the adapted config
	limAdminLoad(t, c, c.adapt(t, `
http://a.test:{{.HTTP}} {
	sse {
		limit 1
	}
	reverse_proxy {{.Upstream}}
}
`+b))
	res, _ = limOpen(t, client, c.BaseURL(), limReq{path: "/?id=over", host: "b.test", eventSource: true})
	limCheckRetryAnswer(t, res, defaultRetry)
	res, _ = limOpen(t, client, c.BaseURL(), limReq{path: "/?id=a", host: "a.test", eventSource: true})
	limCheckStream(t, res)
}
