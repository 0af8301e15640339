package caddysse

// Caddyfile tests: the sse directive's syntax, good and bad, with errors
// that name the file and line, and golden adapt tests (Caddyfile to JSON)
// that also prove sse is ordered after encode (issue 2).

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/*.json from testdata/*.caddyfile")

// Every subdirective of the documented syntax (UnmarshalCaddyfile's doc
// comment) sets its JSON field, and what parses also validates.
func TestUnmarshalCaddyfile(t *testing.T) {
	dur := func(d time.Duration) *caddy.Duration { cd := caddy.Duration(d); return &cd }
	for _, tc := range []struct {
		name, input string
		want        Handler
	}{
		{"alone", `sse`, Handler{}},
		{"empty block", "sse {\n}", Handler{}},
		{"types", "sse {\n\ttypes application/x-ndjson Application/JSONL\n}",
			Handler{Types: []string{"application/x-ndjson", "Application/JSONL"}}},
		{"heartbeat", "sse {\n\theartbeat 30s\n}", Handler{Heartbeat: dur(30 * time.Second)}},
		{"heartbeat in days", "sse {\n\theartbeat 1d\n}", Handler{Heartbeat: dur(24 * time.Hour)}},
		{"heartbeat off", "sse {\n\theartbeat off\n}", Handler{Heartbeat: dur(0)}},
		{"heartbeat 0", "sse {\n\theartbeat 0\n}", Handler{Heartbeat: dur(0)}},
		{"heartbeat_text", "sse {\n\theartbeat_text \"keep alive\"\n}", Handler{HeartbeatText: "keep alive"}},
		{"heartbeat_frame line", "sse {\n\theartbeat_frame line\n}", Handler{HeartbeatFrame: "line"}},
		{"heartbeat_frame block", "sse {\n\theartbeat_frame block\n}", Handler{HeartbeatFrame: "block"}},
		{"heartbeat_frame blank", "sse {\n\theartbeat_frame blank\n}", Handler{HeartbeatFrame: "blank"}},
		{"limit", "sse {\n\tlimit 10\n}", Handler{Limits: []Limit{{Max: 10}}}},
		{"limit per", "sse {\n\tlimit 2 per {http.request.remote.host}\n}",
			Handler{Limits: []Limit{{Max: 2, Per: "{http.request.remote.host}"}}}},
		{"limits repeat", "sse {\n\tlimit 100\n\tlimit 3 per {http.request.header.Authorization}\n}",
			Handler{Limits: []Limit{{Max: 100}, {Max: 3, Per: "{http.request.header.Authorization}"}}}},
		{"zone", "sse {\n\tzone shared\n}", Handler{Zone: "shared"}},
		{"retry", "sse {\n\tretry 500ms\n}", Handler{Retry: ptr(caddy.Duration(500 * time.Millisecond))}},
		{"refuse_status", "sse {\n\trefuse_status 429\n}", Handler{RefuseStatus: 429}},
		{"upstream_errors pass", "sse {\n\tupstream_errors pass\n}", Handler{PassUpstreamErrors: true}},
		{"upstream_errors retry", "sse {\n\tupstream_errors retry\n}", Handler{}},
		{"log_key", "sse {\n\tlog_key\n}", Handler{LogKey: true}},
		{"max_duration", "sse {\n\tmax_duration 1h\n}", Handler{MaxDuration: caddy.Duration(time.Hour)}},
		{"idle_timeout", "sse {\n\tidle_timeout 5m\n}", Handler{IdleTimeout: caddy.Duration(5 * time.Minute)}},
		{"drain_on_reload", "sse {\n\tdrain_on_reload 30s\n}", Handler{DrainOnReload: caddy.Duration(30 * time.Second)}},
		{"open_after", "sse {\n\topen_after 5s\n}", Handler{OpenAfter: dur(5 * time.Second)}},
		{"open_after off", "sse {\n\topen_after off\n}", Handler{OpenAfter: dur(0)}},
		{"everything", `sse {
	types application/x-ndjson
	heartbeat 20s
	heartbeat_text ping
	heartbeat_frame line
	limit 1000
	limit 5 per {http.request.remote.host}
	zone api
	retry 2s
	refuse_status 503
	upstream_errors pass
	log_key
	max_duration 30m
	idle_timeout 2m
	drain_on_reload 1m
	open_after 10s
}`, Handler{
			Types:              []string{"application/x-ndjson"},
			Heartbeat:          dur(20 * time.Second),
			HeartbeatText:      "ping",
			HeartbeatFrame:     "line",
			Limits:             []Limit{{Max: 1000}, {Max: 5, Per: "{http.request.remote.host}"}},
			Zone:               "api",
			Retry:              ptr(caddy.Duration(2 * time.Second)),
			RefuseStatus:       503,
			PassUpstreamErrors: true,
			LogKey:             true,
			MaxDuration:        caddy.Duration(30 * time.Minute),
			IdleTimeout:        caddy.Duration(2 * time.Minute),
			DrainOnReload:      caddy.Duration(time.Minute),
			OpenAfter:          dur(10 * time.Second),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input)); err != nil {
				t.Fatalf("UnmarshalCaddyfile(%q): %v", tc.input, err)
			}
			if !reflect.DeepEqual(h, tc.want) {
				t.Errorf("UnmarshalCaddyfile(%q) = %+v, want %+v", tc.input, h, tc.want)
			}
			if err := h.Validate(); err != nil {
				t.Errorf("Validate after parsing %q: %v", tc.input, err)
			}
		})
	}
}

// Bad input is refused with a message that says what is wrong and where:
// the file and line of the offending token.
func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, input string
		line        int
		want        string
	}{
		{"argument without block", `sse foo`, 1, `sse takes no arguments besides a matcher, got "foo"`},
		{"unknown subdirective", "sse {\n\tbogus 1\n}", 2, `unrecognized sse subdirective "bogus"`},
		{"misspelt subdirective", "sse {\n\theartbeat 1s\n\theartbeats 2s\n}", 3, `unrecognized sse subdirective "heartbeats"`},
		{"repeated subdirective", "sse {\n\theartbeat 1s\n\theartbeat 2s\n}", 3, "heartbeat already specified"},
		{"repeated types", "sse {\n\ttypes a/b\n\ttypes c/d\n}", 3, "types already specified"},
		{"subdirective with a block", "sse {\n\tzone z {\n\t\tfoo\n\t}\n}", 3, "zone does not take a block"},

		{"types without value", "sse {\n\ttypes\n}", 2, "types: at least one media type is required"},
		{"types without subtype", "sse {\n\ttypes text/\n}", 2, `types: invalid media type "text/"`},
		{"types without slash", "sse {\n\ttypes ndjson\n}", 2, `types: invalid media type "ndjson"`},
		{"types with parameter", "sse {\n\ttypes a/b;charset=utf-8\n}", 2, `invalid media type "a/b;charset=utf-8": want type/subtype without parameters or wildcards`},
		{"types with wildcard", "sse {\n\ttypes application/*\n}", 2, `invalid media type "application/*"`},
		{"types second value bad", "sse {\n\ttypes a/b c\n}", 2, `types: invalid media type "c"`},

		{"heartbeat missing", "sse {\n\theartbeat\n}", 2, "heartbeat: missing value"},
		{"heartbeat extra", "sse {\n\theartbeat 1s 2s\n}", 2, `heartbeat: one value expected, got extra "2s"`},
		{"heartbeat bad", "sse {\n\theartbeat soon\n}", 2, `heartbeat: invalid duration "soon"`},
		{"heartbeat negative", "sse {\n\theartbeat -1s\n}", 2, "heartbeat: must not be negative, got -1s"},
		{"heartbeat too long", "sse {\n\theartbeat 400d\n}", 2, "heartbeat: 400d is longer than"},

		{"heartbeat_text missing", "sse {\n\theartbeat_text\n}", 2, "heartbeat_text: missing value"},
		{"heartbeat_text empty", "sse {\n\theartbeat_text \"\"\n}", 2, "heartbeat_text: must not be empty"},
		{"heartbeat_text NUL", "sse {\n\theartbeat_text \"a\x00b\"\n}", 2, "heartbeat_text: must not contain CR, LF or NUL"},
		{"heartbeat_text LF", "sse {\n\theartbeat_text \"a\nb\"\n}", 2, "heartbeat_text: must not contain CR, LF or NUL"},
		{"heartbeat_text CR", "sse {\n\theartbeat_text \"a\rb\"\n}", 2, "heartbeat_text: must not contain CR, LF or NUL"},
		{"heartbeat_text extra", "sse {\n\theartbeat_text a b\n}", 2, `heartbeat_text: one value expected, got extra "b"`},

		{"heartbeat_frame bad", "sse {\n\theartbeat_frame both\n}", 2, `heartbeat_frame: must be "auto", "blank", "block" or "line", got "both"`},
		{"heartbeat_frame missing", "sse {\n\theartbeat_frame\n}", 2, "heartbeat_frame: missing value"},

		{"limit missing", "sse {\n\tlimit\n}", 2, "limit: want <max> [per <key>], got 0 arguments"},
		{"limit 0", "sse {\n\tlimit 0\n}", 2, "limit: max must be at least 1, got 0"},
		{"limit -1", "sse {\n\tlimit -1\n}", 2, "limit: max must be at least 1, got -1"},
		{"limit x", "sse {\n\tlimit x\n}", 2, `limit: max "x" is not a whole number`},
		{"limit fraction", "sse {\n\tlimit 1.5\n}", 2, `limit: max "1.5" is not a whole number`},
		{"limit per without key", "sse {\n\tlimit 5 per\n}", 2, "limit: want <max> [per <key>], got 2 arguments"},
		{"limit extra", "sse {\n\tlimit 5 per {http.request.host} x\n}", 2, "limit: want <max> [per <key>], got 4 arguments"},
		{"limit by", "sse {\n\tlimit 5 by {http.request.host}\n}", 2, `limit: want "per" after the max, got "by"`},
		{"limit per without placeholder", "sse {\n\tlimit 5 per host\n}", 2, `limit: per: "host" has no placeholder`},
		{"limit per unknown placeholder", "sse {\n\tlimit 5 per {upstream_latency}\n}", 2, "limit: per: unknown placeholder {upstream_latency}"},
		{"limit per unclosed placeholder", "sse {\n\tlimit 5 per x{http.request.host\n}", 2, "has an unclosed placeholder"},

		{"zone missing", "sse {\n\tzone\n}", 2, "zone: missing value"},
		{"zone extra", "sse {\n\tzone a b\n}", 2, `zone: one value expected, got extra "b"`},

		{"retry missing", "sse {\n\tretry\n}", 2, "retry: missing value"},
		{"retry bad", "sse {\n\tretry later\n}", 2, `retry: invalid duration "later"`},
		{"retry zero", "sse {\n\tretry 0s\n}", 2, "retry: must be more than 0"},
		{"retry negative", "sse {\n\tretry -3s\n}", 2, "retry: must not be negative"},
		{"retry extra", "sse {\n\tretry 1s 2s\n}", 2, `retry: one value expected, got extra "2s"`},

		{"refuse_status 200", "sse {\n\trefuse_status 200\n}", 2, `refuse_status: must be a 4xx or 5xx status code, such as 503 or 429, got "200"`},
		{"refuse_status 600", "sse {\n\trefuse_status 600\n}", 2, `refuse_status: must be a 4xx or 5xx status code, such as 503 or 429, got "600"`},
		{"refuse_status word", "sse {\n\trefuse_status busy\n}", 2, `refuse_status: must be a 4xx or 5xx status code, such as 503 or 429, got "busy"`},

		{"upstream_errors bad", "sse {\n\tupstream_errors ignore\n}", 2, `upstream_errors: must be "retry" or "pass", got "ignore"`},
		{"upstream_errors missing", "sse {\n\tupstream_errors\n}", 2, "upstream_errors: missing value"},

		{"log_key with argument", "sse {\n\tlog_key yes\n}", 2, `log_key takes no arguments, got "yes"`},

		{"max_duration bad", "sse {\n\tmax_duration forever\n}", 2, `max_duration: invalid duration "forever"`},
		{"max_duration negative", "sse {\n\tmax_duration -1m\n}", 2, "max_duration: must not be negative"},
		{"idle_timeout missing", "sse {\n\tidle_timeout\n}", 2, "idle_timeout: missing value"},
		{"idle_timeout bad", "sse {\n\tidle_timeout 5x\n}", 2, `idle_timeout: invalid duration "5x"`},
		{"drain_on_reload extra", "sse {\n\tdrain_on_reload 1m 2m\n}", 2, `drain_on_reload: one value expected, got extra "2m"`},
		{"drain_on_reload too long", "sse {\n\tdrain_on_reload 9000h\n}", 2, "drain_on_reload: 9000h is longer than"},
		{"open_after bad", "sse {\n\topen_after soon\n}", 2, `open_after: invalid duration "soon"`},
		{"open_after bare number", "sse {\n\topen_after 10\n}", 2, `open_after: invalid duration "10": a duration needs a unit, such as 10s, or "off"`},
		{"open_after negative", "sse {\n\topen_after -1s\n}", 2, "open_after: must not be negative"},
		{"open_after missing", "sse {\n\topen_after\n}", 2, "open_after: missing value"},
		{"open_after twice", "sse {\n\topen_after 1s\n\topen_after 2s\n}", 3, "open_after already specified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil {
				t.Fatalf("UnmarshalCaddyfile(%q) = nil error, want %q", tc.input, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("UnmarshalCaddyfile(%q) error = %q, want it to contain %q", tc.input, err, tc.want)
			}
			if where := fmt.Sprintf("Testfile:%d", tc.line); !strings.HasSuffix(err.Error(), where) {
				t.Errorf("UnmarshalCaddyfile(%q) error = %q, want it to end with %q", tc.input, err, where)
			}
		})
	}
}

// Adapting a whole Caddyfile with a bad sse block fails with an error that
// names the user's file and the line of the offending token.
func TestAdaptCaddyfileErrorNamesFileAndLine(t *testing.T) {
	const file = "sites/example.caddyfile"
	for _, tc := range []struct {
		name, block string
		line        int
		want        string
	}{
		{"unknown subdirective", "sse {\n\t\tretries 3\n\t}", 5, `unrecognized sse subdirective "retries"`},
		{"bad media type", "sse {\n\t\theartbeat 10s\n\t\ttypes json\n\t}", 6, `invalid media type "json"`},
		{"limit 0", "sse {\n\t\tlimit 0\n\t}", 5, "limit: max must be at least 1, got 0"},
		{"argument", "sse stream", 4, `sse takes no arguments besides a matcher, got "stream"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			input := "example.com {\n" + // line 1
				"\tencode gzip zstd\n" + // line 2
				"\n" + // line 3
				"\t" + tc.block + "\n" + // line 4
				"\treverse_proxy localhost:8080\n}\n"
			_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), map[string]any{"filename": file})
			if err == nil {
				t.Fatalf("adapting:\n%s\ngot no error, want %q", input, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %q, want it to contain %q", err, tc.want)
			}
			if where := fmt.Sprintf("%s:%d", file, tc.line); !strings.Contains(err.Error(), where) {
				t.Errorf("error = %q, want it to name %s", err, where)
			}
		})
	}
}

// Golden adapt tests: every testdata/*.caddyfile adapts to the JSON in the
// matching testdata/*.json (run with -update to rewrite them), and in each
// the sse handler comes after encode and before the response producers,
// without any order option: the directive's registered order.
func TestAdaptGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) < 3 {
		t.Fatalf("found %d golden Caddyfiles in testdata, want at least 3", len(inputs))
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".caddyfile")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			if orderOption.Match(src) {
				t.Fatalf("%s sets an order option; the golden files must prove the default order", in)
			}
			out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": in})
			if err != nil {
				t.Fatalf("adapting %s: %v", in, err)
			}
			for _, w := range warnings {
				t.Errorf("adapting %s: warning: %s", in, w.String())
			}
			got := normaliseJSON(t, out)

			golden := strings.TrimSuffix(in, ".caddyfile") + ".json"
			if *updateGolden {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			raw, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestAdaptGolden -update to create it)", err)
			}
			if want := normaliseJSON(t, raw); !bytes.Equal(got, want) {
				t.Errorf("%s adapts to\n%s\nwant (%s)\n%s", in, got, golden, want)
			}

			// each sse handler as adapted is a valid config
			for i, raw := range sseHandlers(t, out) {
				// as Caddy loads it: the module name key is taken out
				// (getModuleNameInline), the rest decoded strictly
				var fields map[string]json.RawMessage
				if err := json.Unmarshal(raw, &fields); err != nil {
					t.Fatal(err)
				}
				delete(fields, "handler")
				rest, _ := json.Marshal(fields)
				var h Handler
				if err := json.Unmarshal(rest, &h); err != nil {
					t.Fatalf("sse handler %d: %v", i, err)
				}
				if err := h.Validate(); err != nil {
					t.Errorf("sse handler %d %s: Validate: %v", i, raw, err)
				}
			}

			// the order, checked on its own so that -update cannot hide it
			handlers := handlerNames(t, out)
			enc, sse, last := slices.Index(handlers, "encode"), slices.Index(handlers, "sse"), len(handlers)-1
			if enc < 0 || sse < 0 {
				t.Fatalf("handlers %v: want encode and sse", handlers)
			}
			if !(enc < sse && sse < last) {
				t.Errorf("handlers in order %v: want encode, then sse, then the response producers", handlers)
			}
		})
	}
}

// orderOption finds an order global option (or a directive named order).
var orderOption = regexp.MustCompile(`(?m)^\s*order\s`)

// normaliseJSON re-encodes a JSON document with sorted keys and tabs.
func normaliseJSON(t *testing.T, b []byte) []byte {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("invalid JSON: %v\n%s", err, b)
	}
	out, err := json.MarshalIndent(v, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

// handlerNames lists the "handler" values of a config in document order,
// depth first, as Caddy runs them.
func handlerNames(t *testing.T, cfg []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(cfg))
	var names []string
	prevKey := false
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		s, isString := tok.(string)
		if prevKey && isString {
			names = append(names, s)
		}
		prevKey = isString && s == "handler"
	}
	return names
}

// sseHandlers returns the JSON of every sse handler in a config.
func sseHandlers(t *testing.T, cfg []byte) []json.RawMessage {
	t.Helper()
	var v any
	if err := json.Unmarshal(cfg, &v); err != nil {
		t.Fatal(err)
	}
	var found []json.RawMessage
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "sse" {
				b, err := json.Marshal(v)
				if err != nil {
					t.Fatal(err)
				}
				found = append(found, b)
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(v)
	return found
}
