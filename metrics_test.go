package caddysse

// Tests of the caddy_sse_* Prometheus metrics, as scraped from Caddy's admin
// endpoint. The metrics are package globals shared by every test in the
// binary, so each check is on the change a step makes. Issue 5.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// sseMetrics is one scrape of the caddy_sse_ families.
type sseMetrics map[string]*dto.MetricFamily

// scrapeMetrics reads http://localhost:<admin>/metrics.
func scrapeMetrics(t testing.TB, c *testCaddy) sseMetrics {
	t.Helper()
	res, err := http.Get(fmt.Sprintf("http://localhost:%d/metrics", c.Admin))
	if err != nil {
		t.Fatalf("scraping metrics: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("scraping metrics: status %d: %s", res.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parsing metrics: %v", err)
	}
	m := make(sseMetrics)
	for name, f := range fams {
		if strings.HasPrefix(name, "caddy_sse_") {
			m[name] = f
		}
	}
	return m
}

// value returns the value of a counter or gauge, or the sample count of a
// histogram, summed over the series whose labels include the given (name,
// value) pairs: every series of the family when none is given. A family
// without such a series fails the test.
func (m sseMetrics) value(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	var sum float64
	for _, met := range m.series(t, name, labels...) {
		switch {
		case met.Counter != nil:
			sum += met.Counter.GetValue()
		case met.Gauge != nil:
			sum += met.Gauge.GetValue()
		case met.Histogram != nil:
			sum += float64(met.Histogram.GetSampleCount())
		}
	}
	return sum
}

// sum returns a histogram's sample sum, over all its series.
func (m sseMetrics) sum(t testing.TB, name string) float64 {
	t.Helper()
	var sum float64
	for _, met := range m.series(t, name) {
		sum += met.GetHistogram().GetSampleSum()
	}
	return sum
}

func (m sseMetrics) series(t testing.TB, name string, labels ...string) []*dto.Metric {
	t.Helper()
	f, ok := m[name]
	if !ok {
		t.Fatalf("metric %s not exported", name)
	}
	var out []*dto.Metric
	for _, met := range f.Metric {
		if labelsMatch(met, labels) {
			out = append(out, met)
		}
	}
	if len(out) == 0 {
		t.Fatalf("metric %s has no series %v", name, labels)
	}
	return out
}

// labelsMatch reports whether met has every (name, value) pair of labels.
func labelsMatch(met *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, l := range met.Label {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// labelSets returns every series' labels of every family, as sorted
// "name{k=v,...}" strings.
func (m sseMetrics) labelSets() []string {
	var sets []string
	for name, f := range m {
		for _, met := range f.Metric {
			var kv []string
			for _, l := range met.Label {
				kv = append(kv, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(kv)
			sets = append(sets, name+"{"+strings.Join(kv, ",")+"}")
		}
	}
	sort.Strings(sets)
	return sets
}

// delta is a change of one series between two scrapes.
type delta struct {
	name    string
	labels  []string
	want    float64
	atLeast bool // want is a lower bound
}

func d(name string, want float64, labels ...string) delta {
	return delta{name: name, labels: labels, want: want}
}

func dMin(name string, want float64, labels ...string) delta {
	return delta{name: name, labels: labels, want: want, atLeast: true}
}

// checkDeltas compares the changes between before and after with want.
func checkDeltas(t testing.TB, before, after sseMetrics, want ...delta) {
	t.Helper()
	for _, w := range want {
		got := after.value(t, w.name, w.labels...) - before.value(t, w.name, w.labels...)
		if (w.atLeast && got < w.want) || (!w.atLeast && got != w.want) {
			op := "="
			if w.atLeast {
				op = ">="
			}
			t.Errorf("%s%v moved by %v, want %s %v (ended by reason: %v)", w.name, w.labels, got, op, w.want, endedDeltas(t, before, after))
		}
	}
}

// endedDeltas returns how streams_ended_total moved, by reason.
func endedDeltas(t testing.TB, before, after sseMetrics) map[string]float64 {
	t.Helper()
	m := make(map[string]float64)
	for _, r := range []string{"client", "upstream", "max_duration", "idle_timeout", "shutdown", "drain", "error", "recount"} {
		if v := after.value(t, mEnded, "reason", r) - before.value(t, mEnded, "reason", r); v != 0 {
			m[r] = v
		}
	}
	return m
}

// waitStreamsEnded scrapes until n more streams than in before have ended
// and been recorded in full: the open gauge back where it was, n more
// endings (of any reason) and n more durations. A stream's end touches
// several collectors one after the other, and a scrape gathers them in no
// particular order, so all three must show it. At most 10s.
func waitStreamsEnded(t testing.TB, c *testCaddy, before sseMetrics, n float64) sseMetrics {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := scrapeMetrics(t, c)
		if m.value(t, mOpen) == before.value(t, mOpen) &&
			m.endedTotal(t)-before.endedTotal(t) >= n &&
			m.value(t, mDuration)-before.value(t, mDuration) >= n {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed %v more ended streams within 10s", n)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not a guess
	}
}

// endedTotal sums streams_ended_total over every reason.
func (m sseMetrics) endedTotal(t testing.TB) float64 {
	t.Helper()
	var sum float64
	m.series(t, mEnded, "reason", "client") // fails the test if the family is missing
	for _, met := range m[mEnded].GetMetric() {
		sum += met.GetCounter().GetValue()
	}
	return sum
}

const (
	mOpen      = "caddy_sse_streams_open"
	mTotal     = "caddy_sse_streams_total"
	mRefused   = "caddy_sse_streams_refused_total"
	mEnded     = "caddy_sse_streams_ended_total"
	mBeats     = "caddy_sse_heartbeats_total"
	mFirstByte = "caddy_sse_first_byte_seconds"
	mDuration  = "caddy_sse_stream_duration_seconds"

	mZoneStreams = "caddy_sse_zone_streams"
	mZoneKeys    = "caddy_sse_zone_keys"
	mZoneFullest = "caddy_sse_zone_fullest_key_streams"
	mZoneMax     = "caddy_sse_zone_max"
)

// metricsUpstream behaves by path: /hold sends an event and holds the
// stream; /end sends an event and ends it; /abort breaks the connection
// after an event; /silent sends nothing after the header; /slow sends its
// first event after firstByteDelay.
const firstByteDelay = 600 * time.Millisecond

func metricsUpstream(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if i := strings.Index(path[1:], "/"); i >= 0 {
		path = path[i+1:] // /<route>/<behaviour>
	}
	streamHead(w)
	switch path {
	case "/silent":
	case "/slow":
		select {
		case <-time.After(firstByteDelay):
		case <-r.Context().Done():
			return
		}
		send(w, "data: late\n\n")
		return
	default:
		send(w, "id: 1\ndata: hello\n\n")
	}
	switch path {
	case "/end":
		return
	case "/abort":
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close() // no last chunk: the response is cut short
		}
		return
	}
	<-r.Context().Done()
}

// Every caddy_sse_ metric moves as streams open, are refused, end for each
// reason and get heartbeats; first_byte_seconds reflects an upstream that
// is slow to start; the counters keep counting across a reload; and no
// label ever takes a value from the request (the Host header): every series
// names its server (the Caddy server's name), refusals and ends their zone,
// zone fill its key template, and the label sets stay exactly these.
// Issues 5 and 14.
func TestMetrics(t *testing.T) {
	up := startUpstream(t, metricsUpstream)
	dead := freeTCPAddr(t)
	sites := fmt.Sprintf(`
http://:{{.HTTP}} {
	handle /limited/* {
		sse {
			limit 1
		}
		reverse_proxy {{.Upstream}}
	}
	handle /dead/* {
		sse
		reverse_proxy %s
	}
	handle /max/* {
		sse {
			max_duration 1s
			retry 1s
		}
		reverse_proxy {{.Upstream}}
	}
	handle /idle/* {
		sse {
			heartbeat 100ms
			idle_timeout 1s
			retry 1s
		}
		reverse_proxy {{.Upstream}}
	}
	handle /drain/* {
		sse {
			drain_on_reload 500ms
		}
		reverse_proxy {{.Upstream}}
	}
	handle {
		sse
		reverse_proxy {{.Upstream}}
	}
}
`, dead)
	c := startCaddy(t, up, sites)
	base := "http://127.0.0.1:" + fmt.Sprint(c.HTTP)
	client := h1Client()

	// open returns once the stream's first event arrived.
	open := func(t *testing.T, path string, hdr ...string) func() {
		t.Helper()
		res := startStream(t, client, base+path, hdr...)
		var got strings.Builder
		ch := readChunks(res.Body)
		deadline := time.After(10 * time.Second)
		for !strings.Contains(got.String(), "data: hello\n\n") {
			select {
			case ck, ok := <-ch:
				if !ok {
					t.Fatalf("%s ended before its first event: %q", path, got.String())
				}
				got.Write(ck.data)
			case <-deadline:
				t.Fatalf("%s: no first event within 10s", path)
			}
		}
		return func() { res.Body.Close() }
	}
	// readAll reads a whole stream and returns its body.
	readAll := func(t *testing.T, path string, hdr ...string) string {
		t.Helper()
		res := readStream(t, client, base+path, 15*time.Second, hdr...)
		if res.err != nil {
			t.Fatalf("%s: body ended with %v", path, res.err)
		}
		return res.body
	}

	// streams of earlier tests in this binary may still be finishing: start
	// from a quiet state, so that every change below is this test's own
	deadline := time.Now().Add(10 * time.Second)
	for scrapeMetrics(t, c).value(t, mOpen) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("streams of earlier tests still open after 10s")
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not a guess
	}

	t.Run("open streams up and back, ended by client", func(t *testing.T) {
		before := scrapeMetrics(t, c)
		var closers []func()
		for range 3 {
			closers = append(closers, open(t, "/any/hold"))
		}
		during := scrapeMetrics(t, c)
		checkDeltas(t, before, during, d(mOpen, 3), d(mTotal, 3))
		for _, close := range closers {
			close()
		}
		after := waitStreamsEnded(t, c, before, 3)
		checkDeltas(t, before, after, d(mOpen, 0), d(mTotal, 3),
			d(mEnded, 3, "reason", "client"), d(mDuration, 3))
	})

	t.Run("refused by a limit", func(t *testing.T) {
		before := scrapeMetrics(t, c)
		closeFirst := open(t, "/limited/hold")
		body := readAll(t, "/limited/hold")
		if !retryOnly.MatchString(body) {
			t.Errorf("refused stream body = %q, want a retry field alone", body)
		}
		closeFirst()
		after := waitStreamsEnded(t, c, before, 1)
		checkDeltas(t, before, after, d(mRefused, 1, "reason", "limit"), d(mRefused, 0, "reason", "upstream"), d(mTotal, 1),
			d(mRefused, 1, "server", "srv0", "zone", "srv0#1", "reason", "limit"),
			d(mEnded, 1, "server", "srv0", "zone", "srv0#1", "reason", "client"))
	})

	t.Run("refused because the upstream is down", func(t *testing.T) {
		before := scrapeMetrics(t, c)
		body := readAll(t, "/dead/x")
		if !retryOnly.MatchString(body) {
			t.Errorf("body = %q, want a retry field alone", body)
		}
		checkDeltas(t, before, scrapeMetrics(t, c),
			d(mRefused, 1, "reason", "upstream"), d(mRefused, 0, "reason", "limit"), d(mTotal, 0),
			d(mRefused, 1, "server", "srv0", "zone", "", "reason", "upstream"))
	})

	for _, tc := range []struct {
		name   string
		path   string
		reason string
	}{
		{"ended by the upstream", "/any/end", "upstream"},
		{"ended by max_duration", "/max/hold", "max_duration"},
		{"ended by idle_timeout", "/idle/silent", "idle_timeout"},
		{"ended by an error", "/any/abort", "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := scrapeMetrics(t, c)
			res := readStream(t, client, base+tc.path, 15*time.Second)
			after := waitStreamsEnded(t, c, before, 1)
			want := []delta{d(mTotal, 1), d(mDuration, 1), d(mOpen, 0)}
			for _, r := range []string{"client", "upstream", "max_duration", "idle_timeout", "shutdown", "drain", "error", "recount"} {
				n := 0.0
				if r == tc.reason {
					n = 1
				}
				want = append(want, d(mEnded, n, "reason", r))
			}
			if tc.reason == "idle_timeout" {
				beats := float64(strings.Count(res.body, ": heartbeat\n"))
				if beats < 3 {
					t.Errorf("client saw %v heartbeats, want at least 3", beats)
				}
				want = append(want, dMin(mBeats, beats))
			}
			checkDeltas(t, before, after, want...)
		})
	}

	t.Run("first byte time", func(t *testing.T) {
		before := scrapeMetrics(t, c)
		readAll(t, "/any/slow")
		after := waitStreamsEnded(t, c, before, 1)
		checkDeltas(t, before, after, d(mFirstByte, 1))
		if s := after.sum(t, mFirstByte) - before.sum(t, mFirstByte); s < firstByteDelay.Seconds() || s > 10 {
			t.Errorf("first_byte_seconds sum moved by %v, want at least the upstream's delay %v", s, firstByteDelay)
		}
	})

	t.Run("ended by drain, counters kept across reloads", func(t *testing.T) {
		before := scrapeMetrics(t, c)
		res := startStream(t, client, base+"/drain/hold")
		ch := readChunks(res.Body)
		var got bytes.Buffer
		if !readUntil(t, ch, &got, "data: hello\n\n", 10*time.Second) {
			t.Fatalf("no first event: %q", got.String())
		}
		c.load(t, sites+"\n# reloaded\n")
		reloaded := scrapeMetrics(t, c)
		for series, v := range before.counts() {
			if reloaded.counts()[series] < v {
				t.Errorf("%s went from %v to %v across a reload", series, v, reloaded.counts()[series])
			}
		}
		deadline := time.After(10 * time.Second)
	read:
		for {
			select {
			case ck, ok := <-ch:
				if !ok {
					break read
				}
				got.Write(ck.data)
			case <-deadline:
				t.Fatalf("the stream did not end within 10s of the reload: %q", got.String())
			}
		}
		if !regexp.MustCompile(`(^|\n)retry: \d+\n\n?$`).MatchString(got.String()) {
			t.Errorf("drained stream body = %q, want a retry field at the end", got.String())
		}
		after := waitStreamsEnded(t, c, before, 1)
		checkDeltas(t, before, after, d(mTotal, 1), d(mEnded, 1, "reason", "drain"))
	})

	t.Run("labels bounded", func(t *testing.T) {
		before := scrapeMetrics(t, c)
		for i := range 30 {
			host := fmt.Sprintf("tenant-%d.example", i)
			readAll(t, "/any/end", "Host", host)
			closeFirst := open(t, "/limited/hold", "Host", host)
			readAll(t, "/limited/hold", "Host", host)
			closeFirst()
		}
		after := waitStreamsEnded(t, c, before, 60)
		checkDeltas(t, before, after, d(mRefused, 30, "reason", "limit"),
			d(mEnded, 30, "reason", "upstream"), d(mEnded, 30, "reason", "client"))
		if b, a := strings.Join(before.labelSets(), "\n"), strings.Join(after.labelSets(), "\n"); a != b {
			t.Errorf("label sets changed with the requests' Host headers:\nbefore:\n%s\nafter:\n%s", b, a)
		}
		// this config's series: every one names its server, refusals and
		// ends their zone ("" for a handler without limits), zone fill its
		// key template; nothing else
		// (earlier tests in the binary may have left series of other
		// zones of a server named srv0)
		var got []string
		zoneRE := regexp.MustCompile(`zone=([^,}]*)`)
		for _, set := range after.labelSets() {
			zone := zoneRE.FindStringSubmatch(set)
			if strings.Contains(set, "server=srv0") && (zone == nil || zone[1] == "" || zone[1] == "srv0#1") {
				got = append(got, set)
			}
		}
		want := []string{
			mDuration + "{server=srv0}",
			mFirstByte + "{server=srv0}",
			mBeats + "{server=srv0}",
			mOpen + "{server=srv0}",
			mTotal + "{server=srv0}",
			"caddy_sse_streams_opened_early_total{server=srv0}",
		}
		for _, a := range earlyAnswers {
			want = append(want, "caddy_sse_early_answers_total{answer="+a+",server=srv0}")
		}
		for _, zone := range []string{"", "srv0#1"} {
			for _, r := range []string{"limit", "redis", "upstream"} {
				want = append(want, mRefused+"{reason="+r+",server=srv0,zone="+zone+"}")
			}
			for _, r := range []string{"client", "drain", "error", "idle_timeout", "max_duration", "recount", "shutdown", "upstream"} {
				want = append(want, mEnded+"{reason="+r+",server=srv0,zone="+zone+"}")
			}
		}
		for _, name := range []string{mZoneStreams, mZoneKeys, mZoneFullest, mZoneMax} {
			want = append(want, name+"{per={http.request.host},server=srv0,zone=srv0#1}")
		}
		sort.Strings(want)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("label sets of server srv0:\n%s\nwant exactly:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})

	t.Run("zone fill", func(t *testing.T) {
		zoneLabels := []string{"server", "srv0", "zone", "srv0#1"}
		before := scrapeMetrics(t, c)
		closeFirst := open(t, "/limited/hold")
		during := scrapeMetrics(t, c)
		for _, w := range []struct {
			name string
			want float64
		}{{mZoneStreams, 1}, {mZoneKeys, 1}, {mZoneFullest, 1}, {mZoneMax, 1}} {
			if got := during.value(t, w.name, zoneLabels...); got != w.want {
				t.Errorf("%s = %v with one stream open at limit 1, want %v", w.name, got, w.want)
			}
		}
		closeFirst()
		waitStreamsEnded(t, c, before, 1)
		// a scrape gathers the collectors concurrently, so the one that
		// shows the end may be gathered before the zone's: scrape again
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := scrapeMetrics(t, c).value(t, mZoneStreams, zoneLabels...)
			if got == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s = %v 10s after the stream ended, want 0", mZoneStreams, got)
			}
			time.Sleep(20 * time.Millisecond) // polling a condition, not a guess
		}
	})
}

// counts returns the value of every counter series and the sample count of
// every histogram, by "name{labels}": the values that must never go down.
func (m sseMetrics) counts() map[string]float64 {
	counts := make(map[string]float64)
	for name, f := range m {
		for _, met := range f.Metric {
			var kv []string
			for _, l := range met.Label {
				kv = append(kv, l.GetName()+"="+l.GetValue())
			}
			key := name + "{" + strings.Join(kv, ",") + "}"
			switch {
			case met.Counter != nil:
				counts[key] = met.Counter.GetValue()
			case met.Histogram != nil:
				counts[key] = float64(met.Histogram.GetSampleCount())
			}
		}
	}
	return counts
}

// startStream sends an EventSource-style GET; a "Host" pair in hdr sets the
// request's Host. The response is closed when the test ends.
func startStream(t testing.TB, client *http.Client, url string, hdr ...string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req := newEventSourceRequest(t, ctx, url, hdr...)
	res, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(func() {
		cancel()
		res.Body.Close()
	})
	return res
}

// freeTCPAddr returns a loopback address nothing listens on.
func freeTCPAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
