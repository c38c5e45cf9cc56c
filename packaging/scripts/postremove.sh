#!/bin/sh
# After removal: systemd forgets the units. On purge (Debian), also the
# state, the configuration directory and the hotpatch user: nothing is
# left. rpm has no purge; its state stays, as rpm packages' state does.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = purge ]; then
	rm -rf /var/lib/hotpatchd /var/lib/hotpatch-server /etc/hotpatch
	if getent passwd hotpatch >/dev/null; then
		userdel hotpatch
	fi
	if getent group hotpatch >/dev/null; then
		groupdel hotpatch
	fi
fi
exit 0
