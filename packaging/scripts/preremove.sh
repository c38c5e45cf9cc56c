#!/bin/sh
# Before removal (not before an upgrade): stop and disable both units.
# Patches the agent applied stay in the processes that carry them.
set -e
case "$1" in
remove|purge|0) ;; # deb: remove; rpm: 0 packages left
*) exit 0 ;;
esac
if [ -d /run/systemd/system ]; then
	systemctl disable --now hotpatchd.service hotpatch-server.service >/dev/null 2>&1 || true
fi
exit 0
