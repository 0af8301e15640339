// Command demo runs Caddy with the sse module in front of an event-stream
// backend that misbehaves the way real ones do, and serves a page that shows
// the events arriving live in a browser EventSource.
//
//	go run ./examples/demo            # then open http://localhost:8080
//
// The backend sends compressible JSON events in bursts, then stays quiet for
// 40 s, the way an LLM "thinks"; its responses get a hop-by-hop Keep-Alive
// field through header_down, which HTTP/2 and HTTP/3 clients reject. Caddy
// runs encode gzip zstd in front of it. With sse, the page shows each event
// as it is sent, heartbeats during the quiet stretch, and uncompressed,
// clean headers; run with -sse=false to see stock Caddy's behaviour.
package main

import (
	_ "embed"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-sse/caddy-sse"
)

//go:embed index.html
var page []byte

func main() {
	addr := flag.String("addr", "localhost:8080", "address Caddy listens on")
	withSSE := flag.Bool("sse", true, "put the sse directive in front of the backend")
	heartbeat := flag.Duration("heartbeat", 5*time.Second, "sse heartbeat interval")
	quiet := flag.Duration("quiet", 40*time.Second, "how long the backend stays quiet between bursts")
	flag.Parse()

	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(backend, backendHandler(*quiet))

	sse := ""
	if *withSSE {
		sse = fmt.Sprintf("sse {\n\t\theartbeat %s\n\t}", *heartbeat)
	}
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
}
http://%s {
	encode gzip zstd
	%s
	reverse_proxy %s {
		header_down Keep-Alive "timeout=5"
	}
}
`, *addr, sse, backend.Addr())
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "demo Caddyfile"})
	if err != nil {
		log.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("Caddy (sse=%v) in front of a misbehaving backend.\nOpen http://%s in a browser, or: curl -N -H 'Accept-Encoding: gzip' http://%s/events\nCaddyfile:\n%s",
		*withSSE, *addr, *addr, caddyfile)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	_ = caddy.Stop()
}

// backendHandler serves the page and the event stream. The stream sends a
// burst of five events a second apart, then stays quiet, forever; it resumes
// after Last-Event-ID when the browser reconnects.
func backendHandler(quiet time.Duration) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		id := 0
		fmt.Sscan(r.Header.Get("Last-Event-ID"), &id)
		w.Header().Set("Content-Type", "text/event-stream")
		// what many frameworks send, and what HTTP/2 clients reject
		w.Header().Set("Connection", "keep-alive")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		filler := strings.Repeat("lorem ipsum dolor sit amet ", 8)
		for {
			for range 5 {
				id++
				fmt.Fprintf(w, "id: %d\nevent: token\ndata: {\"n\":%d,\"sent\":%d,\"text\":%q}\n\n",
					id, id, time.Now().UnixMilli(), filler)
				if rc.Flush() != nil {
					return
				}
				select {
				case <-time.After(time.Second):
				case <-r.Context().Done():
					return
				}
			}
			select {
			case <-time.After(quiet):
			case <-r.Context().Done():
				return
			}
		}
	})
	return mux
}
