module github.com/caddy-sse/caddy-sse/bench

go 1.26.0
