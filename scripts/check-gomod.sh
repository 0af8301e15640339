#!/usr/bin/env bash
# Checks that the plugin's go.mod is lean, because every `xcaddy build --with`
# puts its requirements into the user's Caddy:
#   1. every direct requirement is a module the plugin's own (non-test) code
#      builds with: test tools belong in e2e/ or bench/, modules of their own;
#   2. no module in the plugin's build list is at a higher version than a
#      build of Caddy alone selects: adding the plugin never upgrades a
#      dependency Caddy shares (quic-go, x/net, …).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

fail=0
used=$(go list -deps -f '{{with .Module}}{{.Path}}{{end}}' . | sort -u)
direct=$(go list -m -f '{{if not .Indirect}}{{if not .Main}}{{.Path}}{{end}}{{end}}' all | sort -u)
for m in $direct; do
	if ! grep -qx "$m" <<<"$used"; then
		echo "go.mod requires $m, which the plugin's code does not use: move the test that needs it to e2e/ or bench/" >&2
		fail=1
	fi
done

caddy_version=$(go list -m -f '{{.Version}}' github.com/caddyserver/caddy/v2)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(
	cd "$work"
	go mod init caddyalone >/dev/null 2>&1
	go mod edit -require "github.com/caddyserver/caddy/v2@$caddy_version"
	# the build list of a module that requires Caddy alone
	go list -m all >list 2>/dev/null || { go mod download >/dev/null 2>&1; go list -m all >list; }
)
ours=$(go list -m all | awk 'NR > 1 {print $1, $2}')
while read -r path version; do
	theirs=$(awk -v p="$path" '$1 == p {print $2}' "$work/list")
	if [ -n "$theirs" ] && [ "$theirs" != "$version" ]; then
		echo "$path is $version in the plugin's build list, $theirs in Caddy $caddy_version's: the plugin would change the user's Caddy" >&2
		fail=1
	fi
done <<<"$ours"
[ "$fail" = 0 ] || exit 1
echo "go.mod lean: $(wc -w <<<"$direct") direct requirements, all used by the plugin; no version above Caddy $caddy_version's"
