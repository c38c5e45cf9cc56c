#!/usr/bin/env bash
# The one test command (README, `make test`, .ci/run): formatting, vet, every
# test, and a cross-build for another OS.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

for tool in go gcc; do
	command -v "$tool" >/dev/null || { echo "test.sh: $tool is required but not installed" >&2; exit 1; }
done

# The server's store is tested against a real PostgreSQL: Debian's package,
# installed when missing (the tests start their own throwaway cluster).
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
	echo "test.sh: installing PostgreSQL (Debian's postgresql package) for the store tests"
	if [ "$(id -u)" = 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }
	else
		sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
	fi
fi
export HOTPATCH_REQUIRE_POSTGRES=1

# The dashboard's end-to-end tests drive a real headless Chromium: Debian's
# package, installed when missing. Their screenshots are kept in
# artifacts/browser/ (or $HOTPATCH_ARTIFACTS/browser/).
if [ -z "${HOTPATCH_CHROMIUM:-}" ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
	echo "test.sh: installing Chromium (Debian's chromium package) for the dashboard's browser tests"
	pkgs="chromium fonts-dejavu-core"
	if [ "$(id -u)" = 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs >/dev/null || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs >/dev/null; }
	else
		sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs >/dev/null
	fi
fi
export HOTPATCH_REQUIRE_BROWSER=1

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*'))
if [ -n "$unformatted" ]; then
	echo "test.sh: gofmt would change: $unformatted" >&2
	exit 1
fi
go vet ./...
go test -count=1 ./...
# Platform stubs must keep compiling.
GOOS=freebsd go build ./...
GOOS=darwin GOARCH=arm64 go build ./...
echo "test.sh: all checks passed (browser screenshots in ${HOTPATCH_ARTIFACTS:-artifacts}/browser/)"
