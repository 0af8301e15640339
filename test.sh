#!/usr/bin/env bash
# Runs every check of the project: the one command to run the tests on a
# fresh machine (CI runs it too, from .ci/run). It installs what the tests
# need first: Debian's chromium, nginx and curl (as root, or through sudo)
# and staticcheck.
#
#   ./test.sh                 # everything
#   FUZZTIME=2m ./test.sh     # longer fuzzing
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:$(go env GOPATH)/bin"

step() { printf '\n== %s\n' "$*"; }

step "installing test dependencies"
e2e/install-deps.sh
if ! command -v staticcheck >/dev/null; then
	go install honnef.co/go/tools/cmd/staticcheck@2026.2.2
fi

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "not gofmt-ed:" $unformatted >&2
	exit 1
fi

step "go vet"
go vet ./...

step "staticcheck"
staticcheck ./...

step "go test -race"
go test -race -count=1 -timeout 30m ./...

step "fuzzing, ${FUZZTIME:-20s} per target"
for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' *_test.go | sed 's/^func //'); do
	go test -run='^$' -fuzz="^${target}\$" -fuzztime="${FUZZTIME:-20s}" .
done

step "xcaddy-style build"
scripts/xcaddy-check.sh

echo
echo "all checks passed"
