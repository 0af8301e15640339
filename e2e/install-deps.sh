#!/bin/sh
# Installs the third-party programs the end-to-end tests drive: Debian's
# Chromium (headless EventSource client), nginx (proxy in front of Caddy) and
# curl. Idempotent: does nothing when all three are already present. Runs as
# root (CI) or through sudo when available.
set -eu

missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
command -v curl >/dev/null 2>&1 || missing="$missing curl"

if [ -z "$missing" ]; then
	echo "e2e deps present: chromium nginx curl"
	exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
	SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y --no-install-recommends $missing ca-certificates fonts-liberation
echo "e2e deps installed:$missing"
