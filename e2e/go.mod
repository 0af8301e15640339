module github.com/caddy-sse/caddy-sse/e2e

go 1.26.0

require (
	github.com/caddy-sse/caddy-sse v0.0.0
	github.com/chromedp/cdproto v0.159.0
	github.com/chromedp/chromedp v0.23.0
	github.com/quic-go/quic-go v0.63.0
	github.com/tmaxmax/go-sse v0.12.0
)

require (
	github.com/go-json-experiment/json v0.0.0-20260213210345-44df1a37e875 // indirect
	github.com/quic-go/qpack v0.6.0 // indirect
	golang.org/x/crypto v0.57.0 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
)

replace github.com/caddy-sse/caddy-sse => ../
