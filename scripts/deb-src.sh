#!/usr/bin/env bash
# Makes `apt-get source` work for Debian 12's main archive: adds the deb-src
# lines (bookworm, bookworm-updates) when no source line is configured, and
# refreshes the package lists. The stock-binary tests and `make stock-demo`
# rebuild installed packages from their source packages (docs/stock.md).
# Needs root.
set -euo pipefail
if grep -rqs '^Types:.*deb-src\|^deb-src ' /etc/apt/sources.list /etc/apt/sources.list.d/; then
	exit 0
fi
if [ ! -r /usr/share/keyrings/debian-archive-keyring.gpg ]; then
	echo "deb-src.sh: no Debian archive keyring: not a Debian machine, source packages not set up" >&2
	exit 1
fi
cat > /etc/apt/sources.list.d/hotpatch-stock-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
