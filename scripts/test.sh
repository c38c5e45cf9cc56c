#!/usr/bin/env bash
# The one test command (README, `make test`, .ci/run): formatting, vet, every
# test, and a cross-build for another OS.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

for tool in go gcc; do
	command -v "$tool" >/dev/null || { echo "test.sh: $tool is required but not installed" >&2; exit 1; }
done

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
echo "test.sh: all checks passed"
