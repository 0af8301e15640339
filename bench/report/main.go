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

// Command report turns the raw results of one bench/run.sh run (a directory
// of load tool JSON files, the go test -bench output and the machine notes)
// into the Markdown tables of BENCHMARKS.md, with the ratios and the targets
// of the benchmarks. Where a figure ran several rounds, it shows the median.
//
// Usage:
//
//	report -dir bench/results/<timestamp>
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

type result struct {
	Streams       int              `json:"streams"`
	Opened        int64            `json:"opened"`
	Errors        map[string]int64 `json:"errors"`
	BaselineRSSKB int64            `json:"baseline_rss_kb"`
	Stages        []struct {
		Streams            int     `json:"streams"`
		RSSKB              int64   `json:"rss_kb"`
		PerStreamKB        float64 `json:"rss_per_stream_kb"`
		FetchedPerStreamKB float64 `json:"rss_per_stream_after_fetch_kb"`
	} `json:"stages"`
	WindowSeconds float64 `json:"window_seconds"`
	Events        int64   `json:"events"`
	EventsPerSec  float64 `json:"events_per_sec"`
	Heartbeats    int64   `json:"heartbeats"`
	Latency       struct {
		N   int64   `json:"n"`
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
	} `json:"latency_us"`
	CPUSeconds     float64          `json:"cpu_seconds"`
	CPUPctCore     float64          `json:"cpu_pct_of_core"`
	CPUPerMillion  float64          `json:"cpu_seconds_per_million_events"`
	ContentCodings map[string]int64 `json:"content_codings"`
}

var names = map[string]string{
	"stock":       "Caddy stock (reverse_proxy)",
	"encode":      "Caddy stock + encode gzip zstd",
	"encode_zstd": "Caddy stock + encode, zstd-only client",
	"sse":         "Caddy + encode gzip zstd + sse",
	"nginx":       "nginx, proxy_buffering off",
	"direct":      "direct to the upstream (no proxy)",
	"sse_hb1":     "sse, heartbeat 1s",
	"sse_hboff":   "sse, heartbeat off",
	"floor":       "the floor (bench/floor)",
}

func main() {
	dir := flag.String("dir", "", "a results directory written by bench/run.sh")
	flag.Parse()
	if *dir == "" {
		log.Fatal("-dir is required")
	}
	r := &report{dir: *dir, runs: map[string][]result{}}
	r.load()
	r.print()
}

type report struct {
	dir     string
	runs    map[string][]result // figure-contender -> rounds
	notes   []string
	targets []string
}

var fileRE = regexp.MustCompile(`^(memory|heartbeat|goroutines|latency|throughput|events)-([a-z0-9_]+?)(?:-r\d+)?\.json$`)

func (r *report) load() {
	files, _ := filepath.Glob(filepath.Join(r.dir, "json", "*.json"))
	slices.Sort(files)
	for _, f := range files {
		m := fileRE.FindStringSubmatch(filepath.Base(f))
		if m == nil {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil || len(b) == 0 {
			r.notes = append(r.notes, fmt.Sprintf("%s: no result (see %s.err)", filepath.Base(f), filepath.Base(f)))
			continue
		}
		var res result
		if err := json.Unmarshal(b, &res); err != nil {
			r.notes = append(r.notes, fmt.Sprintf("%s: %v", filepath.Base(f), err))
			continue
		}
		for k, v := range res.Errors {
			if v > 0 {
				r.notes = append(r.notes, fmt.Sprintf("%s: %d %s", filepath.Base(f), v, k))
			}
		}
		key := m[1] + "-" + m[2]
		r.runs[key] = append(r.runs[key], res)
	}
}

// med returns the median of f over the rounds of figure-contender key, and
// whether there was any.
func (r *report) med(key string, f func(result) float64) (float64, bool) {
	var vs []float64
	for _, res := range r.runs[key] {
		if v := f(res); !math.IsNaN(v) {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return math.NaN(), false
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2], true
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2, true
}

func (r *report) rounds(key string) int { return len(r.runs[key]) }

// stageKB returns the RSS per stream of the stage with n streams.
func stageKB(n int) func(result) float64 {
	return func(res result) float64 {
		for _, st := range res.Stages {
			if st.Streams == n {
				return st.PerStreamKB
			}
		}
		return math.NaN()
	}
}

// stageRSS returns the RSS of the stage with n streams, in kB.
func stageRSS(n int) func(result) float64 {
	return func(res result) float64 {
		for _, st := range res.Stages {
			if st.Streams == n {
				return float64(st.RSSKB)
			}
		}
		return math.NaN()
	}
}

// afterGCKB returns the RSS per stream of the stage with n streams sampled
// after a forced collection, if there was one.
func afterGCKB(n int) func(result) float64 {
	return func(res result) float64 {
		for _, st := range res.Stages {
			if st.Streams == n && st.FetchedPerStreamKB != 0 {
				return st.FetchedPerStreamKB
			}
		}
		return math.NaN()
	}
}

// stageCounts returns the smallest and largest stage of any result.
func stageCounts(rs []result) (small, large int) {
	for _, x := range rs {
		for _, st := range x.Stages {
			if small == 0 || st.Streams < small {
				small = st.Streams
			}
			large = max(large, st.Streams)
		}
	}
	return small, large
}

func f1(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// mib formats kB as MiB.
func mib(kb float64) string {
	if math.IsNaN(kb) {
		return "n/a"
	}
	return f1(kb/1024) + " MiB"
}

func f2(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func thousands(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func ms(us float64) string {
	if math.IsNaN(us) {
		return "n/a"
	}
	return strconv.FormatFloat(us/1000, 'f', 3, 64)
}

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "n/a"
	}
	return strconv.FormatFloat(a/b, 'f', 3, 64) + "×"
}

func (r *report) target(met bool, known bool, text string) {
	switch {
	case !known:
		r.targets = append(r.targets, "- not measured: "+text)
	case met:
		r.targets = append(r.targets, "- **met**: "+text)
	default:
		r.targets = append(r.targets, "- **missed**: "+text)
	}
}

func (r *report) print() {
	if b, err := os.ReadFile(filepath.Join(r.dir, "machine.txt")); err == nil {
		fmt.Println("```")
		fmt.Print(string(b))
		fmt.Println("```")
		fmt.Println()
	}
	r.memory()
	r.heartbeat()
	r.latency()
	r.throughput()
	r.events()
	r.gobench()
	fmt.Println("### Targets")
	fmt.Println()
	for _, t := range r.targets {
		fmt.Println(t)
	}
	fmt.Println()
	if len(r.notes) > 0 {
		fmt.Println("### Errors and gaps")
		fmt.Println()
		for _, n := range r.notes {
			fmt.Println("- " + n)
		}
		fmt.Println()
	}
}

func (r *report) memory() {
	contenders := []string{"stock", "encode", "encode_zstd", "sse", "nginx"}
	var any []result
	for _, c := range contenders {
		any = append(any, r.runs["memory-"+c]...)
	}
	if len(any) == 0 {
		return
	}
	small, large := stageCounts(any)
	fmt.Printf("### Memory: RSS per open idle stream (KiB)\n\n")
	fmt.Printf("Quiet upstream (one event, then silence); sse heartbeat 15s; client sends `Accept-Encoding: gzip, zstd` unless noted. (RSS with N streams − RSS before) / N.\n\n")
	fmt.Printf("| contender | %s streams | %s streams | %s, after a GC | RSS at %s | RSS before | body coding | rounds |\n", thousands(float64(small)), thousands(float64(large)), thousands(float64(large)), thousands(float64(large)))
	fmt.Println("|---|---:|---:|---:|---:|---:|---|---:|")
	for _, c := range contenders {
		key := "memory-" + c
		if r.rounds(key) == 0 {
			continue
		}
		s, _ := r.med(key, stageKB(small))
		l, _ := r.med(key, stageKB(large))
		rss, _ := r.med(key, stageRSS(large))
		gc, _ := r.med(key, afterGCKB(large))
		base, _ := r.med(key, func(x result) float64 { return float64(x.BaselineRSSKB) })
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %d |\n", names[c], f1(s), f1(l), f1(gc), mib(rss), mib(base),
			codings(r.runs[key]), r.rounds(key))
	}
	fmt.Println()
	diff := func(n int) (d float64, ok bool) {
		sse, ok1 := r.med("memory-sse", stageKB(n))
		stock, ok2 := r.med("memory-stock", stageKB(n))
		return sse - stock, ok1 && ok2
	}
	for _, n := range []int{small, large} {
		sse, _ := r.med("memory-sse", stageKB(n))
		stock, _ := r.med("memory-stock", stageKB(n))
		enc, _ := r.med("memory-encode", stageKB(n))
		fmt.Printf("- at %s streams: sse − stock = %+.1f KiB per stream (%s); sse − stock+encode = %+.1f KiB (%s)",
			thousands(float64(n)), sse-stock, ratio(sse, stock), sse-enc, ratio(sse, enc))
		if zst, ok := r.med("memory-encode_zstd", stageKB(n)); ok {
			fmt.Printf("; sse − stock+encode (zstd client) = %+.1f KiB (%s)", sse-zst, ratio(sse, zst))
		}
		fmt.Println()
	}
	fmt.Println()
	if sse, ok := r.med("memory-sse", afterGCKB(large)); ok {
		stock, _ := r.med("memory-stock", afterGCKB(large))
		enc, _ := r.med("memory-encode", afterGCKB(large))
		fmt.Printf("- at %s streams, sampled 3 s after a forced GC (`/debug/pprof/heap?gc=1`): sse − stock = %+.1f KiB (%s); sse − stock+encode = %+.1f KiB (%s)\n\n",
			thousands(float64(large)), sse-stock, ratio(sse, stock), sse-enc, ratio(sse, enc))
	}
	dl, okl := diff(large)
	ds, _ := diff(small)
	r.target(dl <= 1, okl, fmt.Sprintf(
		"memory per stream with sse and encode on, at most 1 KiB over stock Caddy without encode: %+.1f KiB at %s streams (%+.1f KiB at %s)",
		dl, thousands(float64(large)), ds, thousands(float64(small))))
}

func codings(rs []result) string {
	seen := map[string]bool{}
	var out []string
	for _, x := range rs {
		for k := range x.ContentCodings {
			if k == "" {
				k = "identity"
			}
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// hbKeyRE names a heartbeat result: contender, interval, streams.
var hbKeyRE = regexp.MustCompile(`^heartbeat-(sse_hb|floor)_([0-9a-z.]+)_(\d+)$`)

func (r *report) heartbeat() {
	type rate struct {
		n        int
		interval string
	}
	var rates []rate
	seen := map[rate]bool{}
	keys := make([]string, 0, len(r.runs))
	for k := range r.runs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		m := hbKeyRE.FindStringSubmatch(k)
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[3])
		if rt := (rate{n, m[2]}); !seen[rt] {
			seen[rt] = true
			rates = append(rates, rt)
		}
	}
	slices.SortFunc(rates, func(a, b rate) int { return a.n - b.n })
	if len(rates) > 0 {
		fmt.Println("### Heartbeat cost: sse against the floor, idle streams")
		fmt.Println()
		fmt.Println("sse: Caddy + encode gzip zstd + sse + reverse_proxy, quiet upstream. floor: bench/floor, one ticker writing the same heartbeat chunk to idle connections, no proxy. µs of the server's CPU per heartbeat the clients received.")
		fmt.Println()
		fmt.Println("| streams | interval | sse: heartbeats/s | sse: % of a core | sse: µs per beat | floor: heartbeats/s | floor: % of a core | floor: µs per beat | sse / floor |")
		fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	}
	perBeat := func(x result) float64 {
		if x.Heartbeats == 0 {
			return math.NaN()
		}
		return x.CPUSeconds / float64(x.Heartbeats) * 1e6
	}
	hbps := func(x result) float64 { return float64(x.Heartbeats) / x.WindowSeconds }
	pct := func(x result) float64 { return x.CPUPctCore }
	for _, rt := range rates {
		sk := fmt.Sprintf("heartbeat-sse_hb_%s_%d", rt.interval, rt.n)
		fk := fmt.Sprintf("heartbeat-floor_%s_%d", rt.interval, rt.n)
		sb, okS := r.med(sk, perBeat)
		fb, okF := r.med(fk, perBeat)
		sh, _ := r.med(sk, hbps)
		fh, _ := r.med(fk, hbps)
		sp, _ := r.med(sk, pct)
		fp, _ := r.med(fk, pct)
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", thousands(float64(rt.n)), rt.interval,
			thousands(sh), f2(sp), f1(sb), thousands(fh), f2(fp), f1(fb), ratio(sb, fb))
		r.target(sb <= 1.5*fb, okS && okF, fmt.Sprintf("CPU per heartbeat at %s streams, %s, at most 1.5× the floor's: %s µs against %s µs (%s)",
			thousands(float64(rt.n)), rt.interval, f1(sb), f1(fb), ratio(sb, fb)))
		if rt.n >= 9000 && rt.interval == "15s" {
			r.target(sp < 1, okS, fmt.Sprintf("%s idle streams at the default heartbeat 15s under 1 %% of a core: %s %%", thousands(float64(rt.n)), f2(sp)))
		}
	}
	if len(rates) > 0 {
		fmt.Println()
	}

	on, errOn := goroutines(filepath.Join(r.dir, "goroutines-sse_hb1.txt"))
	off, errOff := goroutines(filepath.Join(r.dir, "goroutines-sse_hboff.txt"))
	if errOn != nil && errOff != nil {
		return
	}
	n := 0
	for _, x := range r.runs["goroutines-sse_hb1"] {
		n = x.Streams
	}
	fmt.Printf("### Goroutines of Caddy holding %s idle streams\n\n", thousands(float64(n)))
	fmt.Println("| sse with | goroutines |")
	fmt.Println("|---|---:|")
	fmt.Printf("| heartbeat 1s | %d |\n| heartbeat off | %d |\n\n", on, off)
	r.target(on-off <= 5 && off-on <= 5, errOn == nil && errOff == nil, fmt.Sprintf(
		"goroutines with heartbeats on and off differ by no more than a handful at %s streams: %d against %d (%+d)", thousands(float64(n)), on, off, on-off))
}

// goroutines reads the total of a goroutine profile written with debug=1.
func goroutines(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var n int
	if _, err := fmt.Sscanf(string(b), "goroutine profile: total %d", &n); err != nil {
		return 0, fmt.Errorf("%s: %v", path, err)
	}
	return n, nil
}

func (r *report) latency() {
	contenders := []string{"stock", "encode", "sse", "nginx"}
	n := 0
	for _, c := range contenders {
		for _, x := range r.runs["latency-"+c] {
			n = x.Streams
		}
	}
	if n == 0 {
		return
	}
	fmt.Printf("### Latency: event delivery, %s streams, one event per second each\n\n", thousands(float64(n)))
	fmt.Println("| contender | p50 (ms) | p99 (ms) | events measured | CPU, % of one core | body coding | rounds |")
	fmt.Println("|---|---:|---:|---:|---:|---|---:|")
	p := func(c string, q func(result) float64) float64 { v, _ := r.med("latency-"+c, q); return v }
	p50 := func(x result) float64 { return x.Latency.P50 }
	p99 := func(x result) float64 { return x.Latency.P99 }
	for _, c := range contenders {
		key := "latency-" + c
		if r.rounds(key) == 0 {
			continue
		}
		nEv, _ := r.med(key, func(x result) float64 { return float64(x.Latency.N) })
		cpu, _ := r.med(key, func(x result) float64 { return x.CPUPctCore })
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %d |\n", names[c], ms(p(c, p50)), ms(p(c, p99)), thousands(nEv), f1(cpu), codings(r.runs[key]), r.rounds(key))
	}
	fmt.Println()
	fmt.Printf("- p99: sse / stock = %s, sse / stock+encode = %s; p50: sse / stock = %s, sse / stock+encode = %s\n\n",
		ratio(p("sse", p99), p("stock", p99)), ratio(p("sse", p99), p("encode", p99)),
		ratio(p("sse", p50), p("stock", p50)), ratio(p("sse", p50), p("encode", p50)))
	s, st := p("sse", p99), p("stock", p99)
	r.target(s <= 1.10*st, !math.IsNaN(s) && !math.IsNaN(st), fmt.Sprintf(
		"p99 latency at %s streams within 10 %% of stock Caddy: %s ms against %s ms (%s)", thousands(float64(n)), ms(s), ms(st), ratio(s, st)))
}

// events is Caddy's CPU per event with many streams at token rates, sse
// (encode + sse + reverse_proxy) against stock (reverse_proxy alone), pair
// by pair: each pair ran back to back, so the ratio of a pair is measured
// under the same machine load.
func (r *report) events() {
	stock, sse := r.runs["events-stock"], r.runs["events-sse"]
	if len(stock) == 0 || len(sse) == 0 {
		return
	}
	perEvent := func(x result) float64 { return x.CPUSeconds / float64(x.Events) * 1e6 }
	fmt.Printf("### CPU per event: %d streams, an event every few ms each\n\n", stock[0].Streams)
	fmt.Println("Caddy's own CPU (utime + stime) per event delivered; stock: reverse_proxy alone; sse: encode gzip zstd + sse + reverse_proxy.")
	fmt.Println()
	fmt.Println("| pair | stock: events/s | stock: µs per event | sse: events/s | sse: µs per event | sse / stock |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|")
	var ratios []float64
	for i := 0; i < len(stock) && i < len(sse); i++ {
		a, b := stock[i], sse[i]
		if a.Events == 0 || b.Events == 0 {
			continue
		}
		q := perEvent(b) / perEvent(a)
		ratios = append(ratios, q)
		fmt.Printf("| %d | %s | %s | %s | %s | %.3f× |\n", i+1, thousands(a.EventsPerSec), f2(perEvent(a)), thousands(b.EventsPerSec), f2(perEvent(b)), q)
	}
	fmt.Println()
	if len(ratios) == 0 {
		return
	}
	sort.Float64s(ratios)
	med := ratios[len(ratios)/2]
	if len(ratios)%2 == 0 {
		med = (ratios[len(ratios)/2-1] + ratios[len(ratios)/2]) / 2
	}
	fmt.Printf("- median of %d pairs: %.3f× (range %.3f× to %.3f×)\n\n", len(ratios), med, ratios[0], ratios[len(ratios)-1])
	r.target(med <= 1.05, len(ratios) >= 5, fmt.Sprintf(
		"CPU per event, encode + sse against stock, median of %d alternating pairs, at most 1.05×: %.3f×", len(ratios), med))
}

func (r *report) throughput() {
	contenders := []string{"stock", "encode", "sse", "nginx", "direct"}
	if r.rounds("throughput-stock")+r.rounds("throughput-sse") == 0 {
		return
	}
	fmt.Println("### Throughput: one flooding stream")
	fmt.Println()
	fmt.Println("| contender | events/s | / stock | CPU s per million events | CPU, % of one core | body coding | rounds |")
	fmt.Println("|---|---:|---:|---:|---:|---|---:|")
	eps := func(x result) float64 { return x.EventsPerSec }
	stock, okStock := r.med("throughput-stock", eps)
	for _, c := range contenders {
		key := "throughput-" + c
		if r.rounds(key) == 0 {
			continue
		}
		v, _ := r.med(key, eps)
		cpm, cpct := "—", "—"
		if c != "direct" {
			a, _ := r.med(key, func(x result) float64 { return x.CPUPerMillion })
			b, _ := r.med(key, func(x result) float64 { return x.CPUPctCore })
			cpm, cpct = f2(a), f1(b)
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %d |\n", names[c], thousands(v), ratio(v, stock), cpm, cpct, codings(r.runs[key]), r.rounds(key))
	}
	fmt.Println()
	sse, okSSE := r.med("throughput-sse", eps)
	enc, _ := r.med("throughput-encode", eps)
	fmt.Printf("- events/s: sse / stock = %s, sse / stock+encode = %s\n\n", ratio(sse, stock), ratio(sse, enc))
	r.target(sse >= 0.97*stock, okSSE && okStock, fmt.Sprintf(
		"throughput on one flooding stream at least 97 %% of stock Caddy: %s events/s against %s (%s)", thousands(sse), thousands(stock), ratio(sse, stock)))
}

var benchRE = regexp.MustCompile(`^(Benchmark(?:Write|Beat)\S*?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(?:\s+[\d.]+ MB/s)?(?:\s+([\d.]+) B/op\s+([\d.]+) allocs/op)?`)

func (r *report) gobench() {
	f, err := os.Open(filepath.Join(r.dir, "gobench.txt"))
	if err != nil {
		r.target(false, false, "hot path: 0 allocations per Write (no BenchmarkWrite run)")
		return
	}
	defer f.Close()
	type acc struct{ ns, b, allocs []float64 }
	var order []string
	m := map[string]*acc{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		g := benchRE.FindStringSubmatch(sc.Text())
		if g == nil {
			continue
		}
		a := m[g[1]]
		if a == nil {
			a = &acc{}
			m[g[1]] = a
			order = append(order, g[1])
		}
		ns, _ := strconv.ParseFloat(g[2], 64)
		a.ns = append(a.ns, ns)
		if g[3] != "" {
			b, _ := strconv.ParseFloat(g[3], 64)
			al, _ := strconv.ParseFloat(g[4], 64)
			a.b, a.allocs = append(a.b, b), append(a.allocs, al)
		}
	}
	if len(order) == 0 {
		r.target(false, false, "hot path: 0 allocations per Write (BenchmarkWrite printed nothing; see gobench.txt)")
		return
	}
	median := func(v []float64) float64 {
		if len(v) == 0 {
			return math.NaN()
		}
		v = slices.Clone(v)
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	fmt.Println("### Hot path: `go test -bench='BenchmarkWrite|BenchmarkBeat' -benchmem` (one Write of an event; one heartbeat)")
	fmt.Println()
	fmt.Println("| benchmark | ns/op | / bare | B/op | allocs/op | runs |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	var bare float64 = math.NaN()
	for _, k := range order {
		if strings.HasSuffix(k, "/bare") {
			bare = median(m[k].ns)
		}
	}
	worst := 0.0
	var sseSeen bool
	for _, k := range order {
		a := m[k]
		ns := median(a.ns)
		al := median(a.allocs)
		fmt.Printf("| %s | %s | %s | %s | %s | %d |\n", k, f1(ns), ratio(ns, bare), f1(median(a.b)), f2(al), len(a.ns))
		if !strings.HasSuffix(k, "/bare") && !math.IsNaN(al) {
			sseSeen = true
			worst = max(worst, slices.Max(a.allocs))
		}
	}
	fmt.Println()
	r.target(worst == 0, sseSeen, fmt.Sprintf("hot path: 0 allocations per Write, with and without heartbeats, and per heartbeat: at most %s allocs/op", f2(worst)))
}
