#!/usr/bin/env bash
# Builds Caddy the way `xcaddy build --with github.com/caddy-sse/caddy-sse=<checkout>`
# does (xcaddy cannot be installed here): a generated main in a temporary
# module, Caddy pinned, a replace to this checkout. Then checks that the
# binary lists the module.
set -euo pipefail
checkout=$(cd "$(dirname "$0")/.." && pwd)
caddy_version=$(cd "$checkout" && go list -m -f '{{.Version}}' github.com/caddyserver/caddy/v2)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cat > main.go <<'GO'
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// plug in Caddy modules here
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/caddy-sse/caddy-sse"
)

func main() {
	caddycmd.Main()
}
GO
go mod init caddy >/dev/null 2>&1
go mod edit -require "github.com/caddyserver/caddy/v2@$caddy_version"
go mod edit -require "github.com/caddy-sse/caddy-sse@v0.0.0"
go mod edit -replace "github.com/caddy-sse/caddy-sse=$checkout"
go mod tidy >/dev/null 2>&1 || go mod tidy
go build -o caddy .
./caddy list-modules --versions | grep -E '^http\.handlers\.sse ' || {
	echo "http.handlers.sse missing from list-modules" >&2
	exit 1
}
echo "xcaddy-style build OK: Caddy $caddy_version with http.handlers.sse"
