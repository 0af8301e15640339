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

# Go tools, by module version: `go run pkg@version` builds exactly that
# version (cached after the first run) whatever else is installed
STATICCHECK=honnef.co/go/tools/cmd/staticcheck@v0.8.2

# the plugin, then the modules of its tests and benchmarks (each has its own
# go.mod, so their libraries never reach a user's Caddy)
MODULES=". e2e bench"

step() { printf '\n== %s\n' "$*"; }

step "installing test dependencies"
e2e/install-deps.sh
e2e/clients/install.sh # the npm SSE clients, with npm ci from the committed lockfile
go run "$STATICCHECK" -version

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "not gofmt-ed:" $unformatted >&2
	exit 1
fi

step "lean go.mod"
scripts/check-gomod.sh

for m in $MODULES; do
	step "go vet ($m)"
	(cd "$m" && go vet ./...)
	step "staticcheck ($m)"
	(cd "$m" && go run "$STATICCHECK" ./...)
done

for m in $MODULES; do
	step "go test -race ($m)"
	(cd "$m" && go test -race -count=1 -timeout 30m ./...)
done

step "fuzzing, ${FUZZTIME:-20s} per target"
# Go 1.26's fuzz coordinator can report "context deadline exceeded" when
# -fuzztime runs out while a worker is mid-call (go.dev/issue/75804, fixed in
# Go 1.27). That is not a finding: a real one writes a reproducer under
# testdata/fuzz/<target>. So a run fails the check when it wrote one, or when
# it failed for any other reason.
# every fuzz target of the plugin's module: the root package and its engine
# packages (not e2e/ and bench/, modules of their own)
for pkgtarget in $(grep -o '^func Fuzz[A-Za-z0-9_]*' $(git ls-files '*_test.go' 2>/dev/null || find . -name '*_test.go') |
	grep -v '^\(e2e\|bench\)/' | sed 's/^\(.*\)\/[^/]*_test.go:func /\1 /; s/^[^ ]*_test.go:func /. /' | tr ' ' ':'); do
	pkg="${pkgtarget%%:*}" target="${pkgtarget#*:}"
	corpus="$pkg/testdata/fuzz/$target"
	before=$(ls "$corpus" 2>/dev/null | sort || true) # no corpus yet: none
	log=$(mktemp)
	if go test -run='^$' -fuzz="^${target}\$" -fuzztime="${FUZZTIME:-20s}" "./$pkg" 2>&1 | tee "$log"; then
		rm -f "$log"
		continue
	fi
	after=$(ls "$corpus" 2>/dev/null | sort || true)
	if [ "$before" = "$after" ] && grep -q '^    context deadline exceeded$' "$log" &&
		[ "$(grep -c '^--- FAIL' "$log")" = 1 ]; then
		echo "note: $target hit Go's fuzztime deadline race (go.dev/issue/75804); no reproducer was written"
		rm -f "$log"
		continue
	fi
	rm -f "$log"
	echo "fuzzing $target found a failure; see $corpus" >&2
	exit 1
done

step "xcaddy-style build"
scripts/xcaddy-check.sh

echo
echo "all checks passed"
