package caddysse

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A request whose limit key expands to the empty string is not counted
// against that limit, as nginx's limit_conn does not count it: with
// "limit 1 per {http.request.header.Authorization}", a second client
// without the header is admitted, while a second stream with the same
// token is refused, and no counter is kept for the empty key. An operator
// who wants anonymous clients capped uses a key that is never empty, such
// as {http.request.header.Authorization}{client_ip}. Issue 14, item 5.
func TestLimitEmptyKeyNotCounted(t *testing.T) {
	for _, tc := range []struct {
		name         string
		per          string
		token        string // the Authorization of both requests, "" for none
		wantAdmitted bool   // whether the second stream is admitted
		wantCounted  string // the key the first stream is counted under, "" for none
	}{
		{name: "anonymous, header key", per: "{http.request.header.Authorization}", wantAdmitted: true},
		{name: "same token, header key", per: "{http.request.header.Authorization}", token: "Bearer t",
			wantCounted: "Bearer t"},
		{name: "anonymous, header and remote host key", per: "{http.request.header.Authorization}{http.request.remote.host}",
			wantCounted: "192.0.2.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := limHandler(t, &Handler{Limits: []Limit{{Max: 1, Per: tc.per}}, Zone: "emptykey " + tc.name})
			newReq := func() *http.Request {
				req := httptest.NewRequest(http.MethodGet, "http://example.test/events", nil)
				req.Header.Set("Accept", "text/event-stream")
				if tc.token != "" {
					req.Header.Set("Authorization", tc.token)
				}
				return req
			}
			var second string
			var held map[string]int
			rec, err := limServe(h, newReq(), func(w http.ResponseWriter, r *http.Request) error {
				held = limCounts(h.lim.counters)
				// the first stream is open: a second one arrives
				rec2, err := limServe(h, newReq(), limStreamNext)
				if err != nil {
					t.Errorf("second request: %v", err)
				}
				second = rec2.Body.String()
				return limStreamNext(w, r)
			})
			if err != nil || rec.Body.String() != "data: x\n\n" {
				t.Fatalf("first stream: err %v, body %q: not admitted", err, rec.Body.String())
			}
			if admitted := second == "data: x\n\n"; admitted != tc.wantAdmitted {
				t.Errorf("second stream admitted = %v (body %q), want %v", admitted, second, tc.wantAdmitted)
			}
			switch {
			case tc.wantCounted == "" && len(held) != 0:
				t.Errorf("counters while the first stream was open = %v, want none (an empty key is not counted)", held)
			case tc.wantCounted != "" && (len(held) != 1 || !strings.HasSuffix(limOnlyKey(held), "\x00"+tc.wantCounted)):
				t.Errorf("counters while the first stream was open = %v, want one for %q", held, tc.wantCounted)
			}
			if n := limTotal(h.lim.counters); n != 0 {
				t.Errorf("%d streams still counted after both ended", n)
			}
		})
	}
}
