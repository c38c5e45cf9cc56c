#!/bin/sh
# After install or upgrade: the hotpatch system user (hotpatch-server runs
# as it), the state directories, and systemd told about the units. Neither
# unit is enabled or started: the agent needs a trusted key (and a server
# or patches) first. See the README, "Install from the package".
set -e
if ! getent group hotpatch >/dev/null; then
	groupadd --system hotpatch
fi
if ! getent passwd hotpatch >/dev/null; then
	useradd --system --gid hotpatch --home-dir /var/lib/hotpatch-server --no-create-home \
		--shell /usr/sbin/nologin --comment "hotpatch-server" hotpatch
fi
install -d -m 0700 -o root -g root /var/lib/hotpatchd
install -d -m 0700 -o hotpatch -g hotpatch /var/lib/hotpatch-server
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
