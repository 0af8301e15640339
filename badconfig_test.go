package caddysse

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// badConfigSite is the Caddyfile every bad-config case is put in; the
// subdirective under test starts on line 3.
const badConfigSite = `http://127.0.0.1:1 {
	sse {
		%s
	}
	respond "ok"
}
`

// Every sse subdirective rejects missing, extra, negative, zero,
// non-numeric and absurd values, text that would break the heartbeat line,
// and limit keys that are not known when a stream is admitted. The user
// sees the problem when the Caddyfile is adapted, in an error that names
// the file, the line and the subdirective; a value that adapts also loads
// (so no config that adapts fails later, at provision or at request time).
func TestBadCaddyfileConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string // the lines inside sse { }
		line int    // the line the error must name; 0 when valid
		want string // what the error must say, besides file and line
	}{
		{"unknown subdirective", "heartbeet 1s", 3, `"heartbeet"`},
		{"repeated subdirective", "heartbeat 1s\n\t\theartbeat 2s", 4, "heartbeat already specified"},
		{"block on a subdirective", "heartbeat 1s {\n\t\t\tx\n\t\t}", 4, "heartbeat does not take a block"},

		{"heartbeat missing", "heartbeat", 3, "heartbeat: missing value"},
		{"heartbeat extra", "heartbeat 1s 2s", 3, `heartbeat: one value expected, got extra "2s"`},
		{"heartbeat negative", "heartbeat -1s", 3, "heartbeat: must not be negative"},
		{"heartbeat zero is off", "heartbeat 0", 0, ""},
		{"heartbeat off", "heartbeat off", 0, ""},
		{"heartbeat non-numeric", "heartbeat soon", 3, `heartbeat: invalid duration "soon"`},
		{"heartbeat unitless", "heartbeat 15", 3, `heartbeat: invalid duration "15": a duration needs a unit, such as 15s, or "off"`},
		{"retry unitless", "retry 3", 3, `retry: invalid duration "3": a duration needs a unit, such as 3s`},
		{"heartbeat absurd", "heartbeat 1000000h", 3, "heartbeat: 1000000h is longer than"},
		{"heartbeat overflow", "heartbeat 99999999999999999999h", 3, "heartbeat: invalid duration"},

		{"heartbeat_text missing", "heartbeat_text", 3, "heartbeat_text: missing value"},
		{"heartbeat_text extra", "heartbeat_text a b", 3, `heartbeat_text: one value expected, got extra "b"`},
		{"heartbeat_text empty", `heartbeat_text ""`, 3, "heartbeat_text: must not be empty"},
		{"heartbeat_text newline", "heartbeat_text \"a\nb\"", 3, `heartbeat_text: must not contain CR, LF or NUL (found '\n'`},
		{"heartbeat_text CR", "heartbeat_text \"a\rb\"", 3, `heartbeat_text: must not contain CR, LF or NUL (found '\r'`},
		{"heartbeat_text NUL", "heartbeat_text \"a\x00b\"", 3, `heartbeat_text: must not contain CR, LF or NUL (found '\x00'`},
		{"heartbeat_text spaces", `heartbeat_text "keep alive"`, 0, ""},

		{"heartbeat_frame missing", "heartbeat_frame", 3, "heartbeat_frame: missing value"},
		{"heartbeat_frame extra", "heartbeat_frame block line", 3, "heartbeat_frame: one value expected"},
		{"heartbeat_frame bad", "heartbeat_frame blocks", 3, `heartbeat_frame: must be "auto", "blank", "block" or "line", got "blocks"`},

		{"limit missing", "limit", 3, "limit: want <max> [per <key>], got 0 arguments"},
		{"limit extra", "limit 1 per {http.request.host} more", 3, "limit: want <max> [per <key>], got 4 arguments"},
		{"limit two args", "limit 1 per", 3, "limit: want <max> [per <key>], got 2 arguments"},
		{"limit negative", "limit -1", 3, "limit: max must be at least 1, got -1"},
		{"limit zero", "limit 0", 3, "limit: max must be at least 1, got 0"},
		{"limit non-numeric", "limit many", 3, `limit: max "many" is not a whole number`},
		{"limit fraction", "limit 1.5", 3, `limit: max "1.5" is not a whole number`},
		{"limit absurd", "limit 99999999999999999999", 3, `limit: max "99999999999999999999" is not a whole number`},
		{"limit large but valid", "limit 2147483647", 0, ""},
		{"limit wrong keyword", "limit 1 by {http.request.host}", 3, `limit: want "per" after the max, got "by"`},
		{"limit unknown placeholder", "limit 1 per {foo}", 3, "limit: per: unknown placeholder {foo}"},
		{"limit response placeholder", "limit 1 per {http.response.status}", 3, "limit: per: unknown placeholder {http.response.status}"},
		{"limit no placeholder", "limit 1 per everyone", 3, `limit: per: "everyone" has no placeholder`},
		{"limit unclosed placeholder", `limit 1 per "{http.request.host"`, 3, "limit: per: \"{http.request.host\" has an unclosed placeholder"},
		{"limit client_ip shorthand", "limit 1 per {client_ip}", 0, ""},
		{"limit header key", "limit 1 per {http.request.header.Authorization}", 0, ""},

		{"zone missing", "zone", 3, "zone: missing value"},
		{"zone extra", "zone a b", 3, "zone: one value expected"},

		{"retry missing", "retry", 3, "retry: missing value"},
		{"retry extra", "retry 1s 2s", 3, "retry: one value expected"},
		{"retry negative", "retry -1s", 3, "retry: must not be negative"},
		{"retry zero", "retry 0s", 3, "retry: must be more than 0"},
		{"retry bare zero", "retry 0", 3, "retry: must be more than 0"},
		{"retry non-numeric", "retry later", 3, `retry: invalid duration "later"`},
		{"retry absurd", "retry 1000000h", 3, "retry: 1000000h is longer than"},

		{"refuse_status missing", "refuse_status", 3, "refuse_status: missing value"},
		{"refuse_status extra", "refuse_status 503 429", 3, "refuse_status: one value expected"},
		{"refuse_status negative", "refuse_status -503", 3, `refuse_status: must be a 4xx or 5xx status code, such as 503 or 429, got "-503"`},
		{"refuse_status zero", "refuse_status 0", 3, `refuse_status: must be a 4xx or 5xx status code, such as 503 or 429, got "0"`},
		{"refuse_status non-numeric", "refuse_status busy", 3, `refuse_status: must be a 4xx or 5xx status code, such as 503 or 429, got "busy"`},
		{"refuse_status absurd", "refuse_status 99999999999999999999", 3, "refuse_status: must be a 4xx or 5xx status code, such as 503 or 429"},
		{"refuse_status success", "refuse_status 200", 3, `refuse_status: must be a 4xx or 5xx status code, such as 503 or 429, got "200"`},

		{"upstream_errors missing", "upstream_errors", 3, "upstream_errors: missing value"},
		{"upstream_errors extra", "upstream_errors pass retry", 3, "upstream_errors: one value expected"},
		{"upstream_errors bad", "upstream_errors ignore", 3, `upstream_errors: must be "retry" or "pass", got "ignore"`},

		{"log_key extra", "log_key yes", 3, `log_key takes no arguments, got "yes"`},

		{"types missing", "types", 3, "types: at least one media type is required"},
		{"types no subtype", "types ndjson", 3, `types: invalid media type "ndjson"`},
		{"types parameters", `types "application/x-ndjson; charset=utf-8"`, 3, "types: invalid media type"},
		{"types wildcard", "types application/*", 3, `types: invalid media type "application/*"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkCaddyfile(t, fmt.Sprintf(badConfigSite, tc.body), tc.line, tc.want)
		})
	}
	for _, sub := range []string{"max_duration", "idle_timeout", "drain_on_reload"} {
		for _, tc := range []struct {
			name, value string
			want        string // "" when valid
		}{
			{"missing", "", sub + ": missing value"},
			{"extra", "1m 2m", sub + `: one value expected, got extra "2m"`},
			{"negative", "-1m", sub + ": must not be negative"},
			{"zero is off", "0s", ""},
			{"non-numeric", "forever", sub + `: invalid duration "forever"`},
			{"absurd", "1000000h", sub + ": 1000000h is longer than"},
		} {
			t.Run(sub+" "+tc.name, func(t *testing.T) {
				line := 3
				if tc.want == "" {
					line = 0
				}
				body := strings.TrimSpace(sub + " " + tc.value)
				checkCaddyfile(t, fmt.Sprintf(badConfigSite, body), line, tc.want)
			})
		}
	}
	t.Run("sse argument", func(t *testing.T) {
		checkCaddyfile(t, "http://127.0.0.1:1 {\n\tsse on {\n\t}\n\trespond ok\n}\n", 2, `sse takes no arguments besides a matcher, got "on"`)
	})
}

// checkCaddyfile adapts text as a file named Caddyfile. When line is 0 it
// must adapt and load; otherwise adapting must fail with an error that
// names Caddyfile:line and contains want.
func checkCaddyfile(t *testing.T, text string, line int, want string) {
	t.Helper()
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text), map[string]any{"filename": "Caddyfile"})
	if line == 0 {
		if err != nil {
			t.Fatalf("adapt: %v, want a valid config\n%s", err, text)
		}
		if err := validateJSON(cfg); err != nil {
			t.Fatalf("a config that adapts fails to load: %v\n%s", err, cfg)
		}
		return
	}
	if err == nil {
		t.Fatalf("adapt succeeded, want an error containing %q\n%s\n%s", want, text, cfg)
	}
	msg := err.Error()
	if where := fmt.Sprintf("Caddyfile:%d", line); !strings.Contains(msg, where) {
		t.Errorf("error %q does not name %s", msg, where)
	}
	if !strings.Contains(msg, want) {
		t.Errorf("error %q does not contain %q", msg, want)
	}
}

// validateJSON loads and provisions a JSON config without running it, as
// `caddy validate` and a config load do.
func validateJSON(cfg []byte) error {
	var c caddy.Config
	if err := caddy.StrictUnmarshalJSON(cfg, &c); err != nil {
		return err
	}
	if c.Logging == nil && os.Getenv("SSE_TEST_LOG") == "" {
		c.Logging = &caddy.Logging{Logs: map[string]*caddy.CustomLog{
			"default": {BaseLog: caddy.BaseLog{WriterRaw: json.RawMessage(`{"output": "discard"}`)}},
		}}
	}
	return caddy.Validate(&c)
}

// A JSON config (the admin API, `caddy run --config x.json`) with an
// invalid sse field fails when it is loaded, with an error that names the
// field as it is spelled in JSON; it never loads and then fails, or means
// something else, at request time.
func TestBadJSONConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler string // the fields of the sse handler object
		want    string // the field the error must name
	}{
		{"negative heartbeat", `"heartbeat": "-1s"`, "heartbeat"},
		{"absurd heartbeat", `"heartbeat": "1000000h"`, "heartbeat"},
		{"heartbeat that overflows the clock", `"heartbeat": "2562047h"`, "heartbeat"},
		{"heartbeat too large a number", `"heartbeat": 9223372036854775807`, "heartbeat"},
		// encoding/json alone would not say which field a caddy.Duration
		// came from ("time: invalid duration"); sse names it
		{"non-numeric heartbeat", `"heartbeat": "soon"`, `heartbeat: invalid duration "soon"`},
		{"unitless heartbeat", `"heartbeat": "15"`, `heartbeat: invalid duration "15": a duration needs a unit, such as 15s`},
		{"non-numeric retry", `"retry": "abc"`, `retry: invalid duration "abc"`},
		{"non-numeric max_duration", `"max_duration": "1 hour"`, `max_duration: invalid duration "1 hour"`},
		{"non-numeric idle_timeout", `"idle_timeout": "x"`, `idle_timeout: invalid duration "x"`},
		{"non-numeric drain_on_reload", `"drain_on_reload": "x"`, `drain_on_reload: invalid duration "x"`},
		{"retry of the wrong type", `"retry": [1]`, `retry: want a duration string such as "15s"`},
		{"retry 0", `"retry": 0`, `retry: must be more than 0`},
		{"retry 0s", `"retry": "0s"`, `retry: must be more than 0`},
		{"heartbeat of the wrong type", `"heartbeat": true`, "heartbeat"},
		{"heartbeat_text with a newline", `"heartbeat_text": "a\nb"`, "heartbeat_text"},
		{"heartbeat_text with NUL", `"heartbeat_text": "a\u0000b"`, "heartbeat_text"},
		{"bad heartbeat_frame", `"heartbeat_frame": "blocks"`, "heartbeat_frame"},
		{"heartbeat_frame of the wrong type", `"heartbeat_frame": 1`, "heartbeat_frame"},
		{"limit max 0", `"limits": [{"max": 0}]`, "limits[0].max"},
		{"limit max missing", `"limits": [{"per": "{http.request.host}"}]`, "limits[0].max"},
		{"second limit negative", `"limits": [{"max": 1}, {"max": -1}]`, "limits[1].max"},
		{"limit max a string", `"limits": [{"max": "2"}]`, "max"},
		{"limit max a fraction", `"limits": [{"max": 1.5}]`, "max"},
		{"limits not a list", `"limits": {"max": 1}`, "limits"},
		{"limit key unknown placeholder", `"limits": [{"max": 1, "per": "{foo}"}]`, "limits[0].per"},
		{"limit key without placeholder", `"limits": [{"max": 1, "per": "all"}]`, "limits[0].per"},
		{"types not a list", `"types": "application/x-ndjson"`, "types"},
		{"types entry invalid", `"types": ["ndjson"]`, "types[0]"},
		{"negative retry", `"retry": "-1s"`, "retry"},
		{"absurd retry", `"retry": "1000000h"`, "retry"},
		{"negative max_duration", `"max_duration": "-5m"`, "max_duration"},
		{"max_duration that overflows the clock", `"max_duration": "2562047h"`, "max_duration"},
		{"negative idle_timeout", `"idle_timeout": "-1s"`, "idle_timeout"},
		{"absurd idle_timeout", `"idle_timeout": "1000000h"`, "idle_timeout"},
		{"negative drain_on_reload", `"drain_on_reload": "-1s"`, "drain_on_reload"},
		{"absurd drain_on_reload", `"drain_on_reload": "1000000h"`, "drain_on_reload"},
		{"negative open_after", `"open_after": "-1s"`, "open_after: must not be negative"},
		{"non-numeric open_after", `"open_after": "soon"`, `open_after: invalid duration "soon"`},
		{"refuse_status 200", `"refuse_status": 200`, `refuse_status: must be a 4xx or 5xx status code, such as 503 or 429, got 200`},
		{"refuse_status a string", `"refuse_status": "503"`, "refuse_status"},
		{"unknown field", `"heartbeet": "1s"`, "heartbeet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := jsonConfig(tc.handler)
			err := validateJSON(cfg)
			if err == nil {
				t.Fatalf("config loaded, want an error naming %s\n%s", tc.want, cfg)
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name the field %q", err, tc.want)
			}
		})
	}

	// the same configs with valid values load, so the errors above are
	// about the values
	t.Run("valid", func(t *testing.T) {
		cfg := jsonConfig(`"heartbeat": "365d", "heartbeat_text": "k", "heartbeat_frame": "line",
			"limits": [{"max": 1}, {"max": 2, "per": "{http.request.header.X}"}], "types": ["application/x-ndjson"],
			"retry": "1s", "max_duration": "1h", "idle_timeout": "0s", "drain_on_reload": "1m", "refuse_status": 429, "open_after": "5s"`)
		if err := validateJSON(cfg); err != nil {
			t.Fatalf("valid config: %v\n%s", err, cfg)
		}
	})
}

// jsonConfig is a whole Caddy JSON config with one server whose route runs
// an sse handler with the given fields.
func jsonConfig(fields string) []byte {
	handler := `{"handler": "sse", ` + fields + `}`
	cfg := `{"admin": {"disabled": true}, "apps": {"http": {"servers": {"srv0": {
		"listen": ["127.0.0.1:1"],
		"routes": [{"handle": [` + handler + `, {"handler": "static_response", "body": "ok"}]}]
	}}}}}`
	if !json.Valid([]byte(cfg)) {
		panic("invalid test JSON: " + cfg)
	}
	return []byte(cfg)
}
