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

// The `caddy sse` command and its `check` subcommand, the adapter of
// internal/check: flags in, the report out in plain words or JSON, and the
// exit status.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-sse/caddy-sse/internal/check"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "sse",
		Usage: "check <url> [--for <duration>] [--method <method>] [--header 'K: V'] [--data <body>] [--http 1.1|2|3] [--json]",
		Short: "Checks what the path to a Server-Sent Events stream does to it",
		Long: `
Commands for Server-Sent Events streams served with the sse module.

'caddy sse check <url>' opens the stream at <url> as a client would, holds
it, and tells what the path (Caddy, load balancers, CDNs, proxies) does to
it, and what to change where.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(newCheckCommand())
		},
	})
}

// newCheckCommand returns the `caddy sse check` command.
func newCheckCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check <url> [--for <duration>] [--idle <duration>] [--method <method>] [--header 'K: V']... [--data <body>] [--http 1.1|2|3] [--insecure] [--json]",
		Short: "Opens an event stream as a client would and reports what the path does to it",
		Long: `
Opens the event stream at <url> as a browser's EventSource does (a GET with
Accept: text/event-stream), or as an SDK does with --method, --header and
--data, holds it for --for (90s by default; less if the stream ends), and
reports: the status and Content-Type; the time to the response header, to
the first byte and to the first event; whether the bytes arrived event by
event or were held and let go in lumps; Content-Encoding, hop-by-hop fields,
Cache-Control, X-Accel-Buffering, Incremental, Server and Via; the
heartbeats; and how the stream ended. Then one line per problem, with what
to change and where.

A problem is one of: status, not_event_stream, buffered, compressed,
hop_by_hop, cut, no_heartbeat. --json prints the report as one JSON object.

Exit status: 0 when the stream is healthy, 1 when a problem was found, 2
when the URL could not be checked at all.
`,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			status := runCheck(cmd.Context(), cmd, args)
			cmd.SilenceErrors = true // the report, or the line on stderr, said it
			switch status {
			case 0:
				return nil
			case 1:
				return errProblems
			}
			// Caddy's exit error carries the status to caddycmd.Main
			return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return status, nil })(cmd, args)
		},
	}
	f := cmd.Flags()
	f.String("for", seconds(check.DefaultFor), "How long to hold the stream")
	f.String("idle", seconds(check.DefaultIdle), "The longest silence without a heartbeat that is not a problem")
	f.StringP("method", "X", http.MethodGet, "Request method")
	f.StringArrayP("header", "H", nil, "Request header field 'Name: value' (repeatable); replaces the default of that name")
	f.StringP("data", "d", "", "Request body (Content-Type: application/json unless --header sets it)")
	f.String("http", "", "Protocol: 1.1, 2 or 3 (default: HTTP/2 over TLS when offered, else HTTP/1.1)")
	f.BoolP("insecure", "k", false, "Do not verify the server's certificate")
	f.Bool("json", false, "Print the report as one JSON object")
	return cmd
}

// errProblems ends a check that found problems with exit status 1.
var errProblems = errors.New("problems found")

// runCheck runs a check from the command's flags and arguments, prints the
// report and returns the exit status.
func runCheck(ctx context.Context, cmd *cobra.Command, args []string) int {
	out := cmd.OutOrStdout()
	asJSON, _ := cmd.Flags().GetBool("json")
	o, err := checkOptions(cmd, args)
	if err == nil {
		if ctx == nil {
			ctx = context.Background()
		}
		ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
		defer stop()
		var rep *check.Report
		if rep, err = check.Run(ctx, o); err == nil {
			if asJSON {
				printJSON(out, rep)
			} else {
				printReport(out, rep)
			}
			if len(rep.Problems) > 0 {
				return 1
			}
			return 0
		}
	}
	if asJSON {
		printJSON(out, map[string]string{"url": o.URL, "error": err.Error()})
	} else {
		fmt.Fprintf(cmd.ErrOrStderr(), "could not check %s: %v\n", o.URL, err)
	}
	return 2
}

// checkOptions reads the check's options from the command line.
func checkOptions(cmd *cobra.Command, args []string) (check.Options, error) {
	var o check.Options
	if len(args) != 1 {
		return o, fmt.Errorf("want one URL, got %d arguments", len(args))
	}
	o.URL = args[0]
	f := cmd.Flags()
	var err error
	for _, d := range []struct {
		name string
		to   *time.Duration
	}{{"for", &o.For}, {"idle", &o.Idle}} {
		v, _ := f.GetString(d.name)
		if *d.to, err = caddy.ParseDuration(v); err != nil || *d.to <= 0 {
			return o, fmt.Errorf("--%s %q: want a positive duration such as 90s", d.name, v)
		}
	}
	o.Method, _ = f.GetString("method")
	o.HTTP, _ = f.GetString("http")
	o.Insecure, _ = f.GetBool("insecure")
	if f.Changed("data") {
		data, _ := f.GetString("data")
		o.Body = []byte(data)
	}
	fields, _ := f.GetStringArray("header")
	o.Header = make(http.Header)
	for _, kv := range fields {
		k, v, ok := strings.Cut(kv, ":")
		if k = strings.TrimSpace(k); !ok || k == "" {
			return o, fmt.Errorf("--header %q: want 'Name: value'", kv)
		}
		o.Header.Add(k, strings.TrimSpace(v))
	}
	return o, nil
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// printReport writes the report in plain words: one line per fact, then
// one line per problem, or the healthy verdict.
func printReport(w io.Writer, rep *check.Report) {
	line := func(name, format string, a ...any) {
		fmt.Fprintf(w, "%-16s %s\n", name, fmt.Sprintf(format, a...))
	}
	line("check", "%s %s over %s", rep.Method, rep.URL, orNone(rep.Proto))
	line("status", "%d", rep.Status)
	line("content-type", "%s", orNone(rep.ContentType))
	line("header", "%dms", rep.HeaderMS)
	line("first byte", "%s", msOrNone(rep.FirstByteMS))
	line("first event", "%s", msOrNone(rep.FirstEventMS))
	for _, k := range sortedKeys(rep.Fields) {
		line("field", "%s: %s", k, rep.Fields[k])
	}
	if rep.End != check.EndNone {
		line("received", "events %d, heartbeats %d, bytes %d, reads %d, over %s",
			rep.Events, rep.Heartbeats, rep.Bytes, rep.Reads, msText(rep.DurationMS))
		line("heartbeats", "%s", heartbeatText(rep.Heartbeat))
		line("arrival", "%s", arrivalText(rep))
		line("longest silence", "%s after the header", msText(rep.LongestSilenceMS))
	}
	line("end", "%s", endText(rep))
	for _, n := range rep.Notes {
		line("note", "%s", n)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "problem %s: %s. Fix: %s.\n", p.Kind, p.Detail, p.Fix)
	}
	if len(rep.Problems) == 0 {
		fmt.Fprintf(w, "healthy: %s\n", healthyText(rep))
	}
}

func heartbeatText(hb *check.Heartbeat) string {
	if hb == nil {
		return "none seen"
	}
	s := "blank lines"
	if hb.Frame == "comment" {
		s = fmt.Sprintf("comments (%q)", ": "+hb.Text)
	}
	if hb.IntervalMS != nil {
		s += ", about every " + msText(*hb.IntervalMS)
	}
	return s
}

func arrivalText(rep *check.Report) string {
	if len(rep.Held) == 0 {
		return "event by event, no lumps"
	}
	var parts []string
	for _, l := range rep.Held {
		if l.Events+l.Beats == 0 {
			parts = append(parts, fmt.Sprintf("the header only, with the cut at %s", msText(l.AtMS)))
			continue
		}
		parts = append(parts, fmt.Sprintf("events %d, heartbeats %d at once at %s, after %s of silence",
			l.Events, l.Beats, msText(l.AtMS), msText(l.SilenceMS)))
	}
	return "held and let go in lumps: " + strings.Join(parts, "; ")
}

func endText(rep *check.Report) string {
	switch rep.End {
	case check.EndServer:
		return "server: ended cleanly at an event boundary"
	case check.EndHeld:
		return "held: still open when the check stopped, after " + msText(rep.DurationMS)
	case check.EndCut, check.EndReset:
		return fmt.Sprintf("%s after %s of silence (%s)", rep.End, msText(rep.SilenceBeforeEndMS), rep.EndError)
	}
	if rep.EndError != "" {
		return "none: " + rep.EndError
	}
	return "none: the body was not read"
}

func healthyText(rep *check.Report) string {
	how := "ended by the server"
	if rep.End == check.EndHeld {
		how = "still open after " + msText(rep.DurationMS)
	}
	return fmt.Sprintf("200 text/event-stream over %s, %d events arrived event by event, uncompressed, no hop-by-hop fields, no silence without heartbeat, %s",
		rep.Proto, rep.Events, how)
}

// seconds writes d as Caddy's docs do: "90s".
func seconds(d time.Duration) string { return fmt.Sprintf("%gs", d.Seconds()) }

func msOrNone(v *int64) string {
	if v == nil {
		return "none"
	}
	return fmt.Sprintf("%dms", *v)
}

func msText(v int64) string {
	if v < 1000 {
		return fmt.Sprintf("%dms", v)
	}
	return fmt.Sprintf("%.1fs", float64(v)/1000)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
