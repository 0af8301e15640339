#!/bin/sh
# Installs the npm client libraries the e2e tests drive (clients_test.go),
# exactly as package-lock.json pins them. Needs Node >= 20.18.1 and npm.
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
