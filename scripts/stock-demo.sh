#!/usr/bin/env bash
# make stock-demo: patch binaries Debian ships, live, from their own source
# packages (docs/stock.md). It installs what it needs (dpkg-dev, the source
# lines, Debian 12's mosquitto 2.0.11-1.2+deb12u1 and lighttpd 1.4.69-1
# without starting their services), then runs the stock tests verbosely:
#   - libexpat1 (a library used by a small service): Debian's fix for
#     CVE-2024-50602, applied under load, behaviour changed, reverted;
#   - mosquitto (a server): Debian's fix for the leak of CVE-2023-28366,
#     applied to the running broker, the leak gone, no message lost,
#     reverted; and Debian's fix for CVE-2024-8376 refused (it changes the
#     layout of the broker's global db);
#   - lighttpd (a server whose source no longer rebuilds byte-for-byte):
#     the rebuild is not the installed file and the reason is named; the
#     patch for upstream's empty Content-Length fix is retargeted by the
#     per-function proof and applied under load, behaviour changed,
#     reverted.
# The first run rebuilds six package variants (a few minutes); later runs
# take seconds (rebuilds are cached in ~/.cache/hotpatch/stock).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "stock-demo: run as root (apt-get build-dep, ptrace)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt_install() {
	apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "$@" >/dev/null ||
		{ apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null && apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "$@" >/dev/null; }
}
if ! command -v dpkg-source >/dev/null || ! command -v patch >/dev/null; then
	echo "stock-demo: installing dpkg-dev and patch"
	apt_install dpkg-dev patch
fi
echo "stock-demo: the main archive's source lines (deb-src), for apt-get source"
./scripts/deb-src.sh
if [ "$(dpkg-query -W -f '${Version}' mosquitto 2>/dev/null || true)" != "2.0.11-1.2+deb12u1" ]; then
	echo "stock-demo: installing Debian's mosquitto 2.0.11-1.2+deb12u1 (its service is not started)"
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	apt_install --allow-downgrades mosquitto=2.0.11-1.2+deb12u1 libmosquitto1=2.0.11-1.2+deb12u1
	rm -f /usr/sbin/policy-rc.d
fi
if [ "$(dpkg-query -W -f '${Version}' lighttpd 2>/dev/null || true)" != "1.4.69-1" ]; then
	echo "stock-demo: installing Debian's lighttpd 1.4.69-1 (its service is not started)"
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	apt_install --allow-downgrades lighttpd=1.4.69-1
	rm -f /usr/sbin/policy-rc.d
fi
echo "stock-demo: go test -run TestStock -v ./stock (the first run rebuilds the packages: minutes)"
go test -count=1 -timeout 60m -run 'TestStock' -v ./stock 2>&1 | grep -v '^=== \|stock: leaving out'
