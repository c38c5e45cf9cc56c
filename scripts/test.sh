#!/usr/bin/env bash
# The one test command (README, `make test`, .ci/run): formatting, vet, every
# test, and a cross-build for another OS. It needs Go, gcc and root on a
# Debian-like machine; what else the tests need (PostgreSQL, Chromium) it
# installs with apt. One line per step; the last line is a go-test-style
# summary (ok or FAIL) for CI. See docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
start=$SECONDS

say() { echo "test.sh: $*"; }
elapsed() { local s=$((SECONDS - start)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# The last line CI reads: a go-test-style summary, also on failure.
status=FAIL
finish() {
	if [ "$status" = ok ]; then
		printf 'ok  \tgithub.com/hotpatch/hotpatch/...\t%ds\n' $((SECONDS - start))
	else
		printf 'FAIL\tgithub.com/hotpatch/hotpatch/...\t%ds (test.sh stopped at: %s)\n' $((SECONDS - start)) "${step:-start}"
	fi
}
trap finish EXIT
step=start

for tool in go gcc; do
	command -v "$tool" >/dev/null || { say "$tool is required but not installed" >&2; exit 1; }
done

# apt_install PKG…: installs Debian packages, quietly; when apt does not
# know a package (a fresh machine has empty package lists) or the install
# fails, it updates the lists once and tries again. apt's output is shown
# only if that fails too.
apt_updated=
apt_install() {
	local sudo=() log
	[ "$(id -u)" = 0 ] || sudo=(sudo)
	command -v apt-get >/dev/null || { say "apt-get not found: install $* with your package manager" >&2; return 1; }
	log=$(mktemp)
	for try in 1 2; do
		if [ -z "$apt_updated" ] && { [ "$try" = 2 ] || ! apt-cache show "$@" >/dev/null 2>&1; }; then
			say "apt-get update (package lists)…"
			"${sudo[@]}" apt-get update -q >>"$log" 2>&1 || true
			apt_updated=1
		fi
		if "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>"$log" 2>&1; then
			rm -f "$log"
			return 0
		fi
		[ -n "$apt_updated" ] && break
	done
	cat "$log" >&2
	rm -f "$log"
	say "could not install $* with apt-get (output above)" >&2
	return 1
}

# The server's store is tested against a real PostgreSQL: Debian's package,
# installed when missing (the tests start their own throwaway cluster).
step="PostgreSQL"
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
	say "installing PostgreSQL (Debian's postgresql package) for the store tests…"
	apt_install postgresql
fi
export HOTPATCH_REQUIRE_POSTGRES=1

# The dashboard's end-to-end tests drive a real headless Chromium: Debian's
# package, installed when missing. Their screenshots are kept in
# artifacts/browser/ (or $HOTPATCH_ARTIFACTS/browser/).
step="Chromium"
if [ -z "${HOTPATCH_CHROMIUM:-}" ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
	say "installing Chromium (Debian's chromium package) for the dashboard's browser tests (a few minutes)…"
	apt_install chromium fonts-dejavu-core
fi
export HOTPATCH_REQUIRE_BROWSER=1

# The stock-binary tests rebuild Debian's own libexpat1 from its source
# package (docs/stock.md): dpkg-dev and the archive's source lines; the
# build dependencies are installed by the test itself (apt-get build-dep),
# on the host and in a build root that debootstrap makes (kept in
# ~/.cache/hotpatch/build-root-CODENAME, about 1 GB, reused).
step="Debian sources"
if [ "$(id -u)" = 0 ] && [ -r /etc/debian_version ]; then
	if ! command -v dpkg-source >/dev/null || ! command -v patch >/dev/null || ! command -v debootstrap >/dev/null; then
		say "installing dpkg-dev, patch and debootstrap for the stock-binary tests…"
		apt_install dpkg-dev patch debootstrap
	fi
	if ! grep -rqs '^Types:.*deb-src\|^deb-src ' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		say "adding the main archive's source lines (deb-src) for the stock-binary tests…"
		./scripts/deb-src.sh
	fi
fi

step="go mod download"
say "go mod download (Go modules, from the module proxy on a fresh machine)…"
go mod download

step="gofmt"
say "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*'))
if [ -n "$unformatted" ]; then
	say "gofmt would change: $unformatted" >&2
	exit 1
fi

step="go vet"
say "go vet (compiles every package)…"
go vet ./...

# One package per core at a time (compiling and the gcc-built fixtures
# are CPU-bound), and within a package as many parallel tests (the slow
# ones mostly wait: on a browser, a database, an agent). Go's defaults,
# spelled out; on the 2-core machines CI uses, 2 and 2. Each package's
# line appears when it is done; agent and server take the longest.
cores=$(nproc 2>/dev/null || echo 2)
step="go test"
say "go test -p $cores -parallel $cores (about 1 min with warm caches, a few more on a fresh machine, which compiles everything and the C fixtures first; one line per package)…"
go test -count=1 -p "$cores" -parallel "$cores" ./...

# Platform stubs must keep compiling.
step="cross-build"
say "cross-build for freebsd/amd64 and darwin/arm64 (the stubs)…"
GOOS=freebsd go build ./...
GOOS=darwin GOARCH=arm64 go build ./...

say "all checks passed in $(elapsed) (browser screenshots in ${HOTPATCH_ARTIFACTS:-artifacts}/browser/)"
status=ok
