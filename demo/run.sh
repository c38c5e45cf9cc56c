#!/usr/bin/env bash
# The hotpatch demo: build a sample service twice (with and without a fix),
# make a signed patch from the two builds, inspect it, show that a tampered
# patch is refused, fix a running process by hand, then roll the fix out to
# two simulated hosts (PID namespaces, each with its own hotpatchd enrolled
# with a hotpatch-server) ring by ring. Needs Go and gcc; runs as root
# (ptrace, PID namespaces). Everything it starts, it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
HOTPATCH=${HOTPATCH:-bin/hotpatch}
HOTPATCHD=${HOTPATCHD:-bin/hotpatchd}
SERVER=${SERVER:-bin/hotpatch-server}
for b in "$HOTPATCH" "$HOTPATCHD" "$SERVER"; do
	[ -x "$b" ] || { echo "demo: $b missing; run 'make demo' (it builds it)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/hotpatch-demo.XXXXXX")
children=()
nsinits=()
cleanup() {
	exec 2>/dev/null # no "Killed" notices for what the demo stops
	# The first process of a PID namespace takes every process of it along.
	for p in "${nsinits[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	for p in "${children[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
CFLAGS="-O2 -ffunction-sections -fdata-sections -Wl,--emit-relocs"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Build the ledger service twice: as shipped (vulnerable) and with the fix"
mkdir -p "$work/orig" "$work/fixed"
gcc $CFLAGS -o "$work/orig/ledger" demo/ledger/orig/ledger.c
gcc $CFLAGS -o "$work/fixed/ledger" demo/ledger/fixed/ledger.c
diff -u demo/ledger/orig/ledger.c demo/ledger/fixed/ledger.c | sed -n '/^@@/,$p' || true

requests='deposit 100
memo this-memo-is-far-too-long-for-sixteen-bytes
balance'
step "2. The vulnerable build accepts an oversized memo"
printf '%s\n' "$requests" | "$work/orig/ledger"
step "   The fixed build refuses it"
printf '%s\n' "$requests" | "$work/fixed/ledger" 2>&1

step "3. Create a signing key"
"$HOTPATCH" keygen -o "$work/demo"

step "4. Build the signed patch from the two builds"
"$HOTPATCH" build --original "$work/orig/ledger" --patched "$work/fixed/ledger" \
	--key "$work/demo.key" -o "$work/ledger-memo.hpatch" \
	--id ledger-memo-bounds --cve CVE-2026-0001 --severity high \
	--description "ledger: bounds check for memo (heap overflow)"

step "5. Inspect it"
"$HOTPATCH" inspect "$work/ledger-memo.hpatch"

step "6. A patch with one flipped byte is refused"
cp "$work/ledger-memo.hpatch" "$work/tampered.hpatch"
size=$(stat -c %s "$work/tampered.hpatch")
pos=$((size / 2))
orig_byte=$(dd if="$work/tampered.hpatch" bs=1 skip=$pos count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
printf "$(printf '\\%03o' $(( (orig_byte ^ 1) & 255 )))" | dd of="$work/tampered.hpatch" bs=1 seek=$pos conv=notrunc 2>/dev/null
if "$HOTPATCH" inspect "$work/tampered.hpatch"; then
	echo "demo: FAIL: the tampered patch was accepted" >&2
	exit 1
fi
echo "(refused, as it must be)"

step "7. Start the vulnerable service and use it"
coproc LEDGER { exec "$work/orig/ledger"; }
pid=$LEDGER_PID
ask() { printf '%s\n' "$1" >&"${LEDGER[1]}"; IFS= read -r reply <&"${LEDGER[0]}"; printf '  > %-45s < %s\n' "$1" "$reply"; }
ask "deposit 100"
ask "memo this-memo-is-far-too-long-for-sixteen-bytes"
echo "  (pid $pid, vulnerable)"

step "8. Apply the patch to the running process"
"$HOTPATCH" apply --pid "$pid" --trust "$work/demo.pub" "$work/ledger-memo.hpatch"
"$HOTPATCH" status --pid "$pid"
ask "memo this-memo-is-far-too-long-for-sixteen-bytes"
ask "deposit 20"
ask "balance"
echo "  (same pid $pid, balance and request counter kept: the fix landed in memory)"

step "9. Revert it: the exact original bytes come back"
"$HOTPATCH" revert --pid "$pid" ledger-memo-bounds
ask "memo this-memo-is-far-too-long-for-sixteen-bytes"
exec {LEDGER[1]}>&-
wait "$pid" 2>/dev/null || true

step "10. The fleet: a hotpatch-server, and two hosts (PID namespaces) each running the service and an enrolled hotpatchd"
"$SERVER" --data "$work/server" --listen 127.0.0.1:0 --tick 200ms --publisher "$work/demo.pub" >"$work/server.out" 2>&1 &
children+=($!)
for _ in $(seq 100); do grep -q listening "$work/server.out" 2>/dev/null && break; sleep 0.1; done
url=$(awk '/listening on/ {print $4}' "$work/server.out")
echo "  server at $url"
export HOTPATCH_SERVER=$url HOTPATCH_CA=$work/server/ca.pem HOTPATCH_TOKEN=$(cat "$work/server/admin.token")
declare -A hostpid svcpid
for host in canary broad; do
	unshare --pid --fork --mount-proc sleep infinity 2>/dev/null &
	children+=($!)
	for _ in $(seq 100); do init=$(cat /proc/$!/task/$!/children 2>/dev/null | awk '{print $1}'); [ -n "$init" ] && break; sleep 0.05; done
	hostpid[$host]=$init
	nsinits+=("$init")
	mkfifo "$work/$host.in" "$work/$host.out"
	nsenter --target "$init" --pid --mount -- "$work/orig/ledger" <"$work/$host.in" >"$work/$host.out" 2>/dev/null &
	children+=($!)
	exec {in}>"$work/$host.in" {out}<"$work/$host.out"
	eval "in_$host=$in out_$host=$out"
	for _ in $(seq 100); do svc=$(cat /proc/$!/task/$!/children 2>/dev/null | awk '{print $1}'); [ -n "$svc" ] && break; sleep 0.05; done
	svcpid[$host]=$svc
	# An enrollment token for this host: one use, bound to its ring (the
	# device does not choose its ring), in a file (never on a command line).
	(umask 077; "$HOTPATCH" fleet token create --role enroll --name "$host-host" --ring $host --uses 1 --ttl 1h >"$work/$host.enroll")
	"$HOTPATCHD" --server "$url" --ca "$HOTPATCH_CA" --enroll-token-file "$work/$host.enroll" \
		--state "$work/agent-$host" --trust "$work/demo.pub" --name "$host-host" \
		--pid-namespace "/proc/$init/ns/pid" --quiet &
	children+=($!)
	echo "  host $host: ledger pid $svc, hotpatchd enrolled in ring $host (a one-use token bound to it)"
done
askhost() {
	local in out
	eval "in=\$in_$1 out=\$out_$1"
	printf '%s\n' "$2" >&"$in"
	IFS= read -r reply <&"$out"
	printf '  %-7s > %-45s < %s\n' "$1" "$2" "$reply"
}
for _ in $(seq 100); do [ "$("$HOTPATCH" fleet devices --json | grep -c '"id"')" -ge 2 ] && break; sleep 0.1; done
"$HOTPATCH" fleet devices

step "11. The exploit works on both hosts"
for host in canary broad; do askhost $host "memo this-memo-is-far-too-long-for-sixteen-bytes"; done

step "12. Publish the patch and roll it out: canary first, then broad"
"$HOTPATCH" fleet publish "$work/ledger-memo.hpatch"
rollout=$("$HOTPATCH" fleet rollout start ledger-memo-bounds --rings canary,broad --json | sed -n 's/^  "id": "\(.*\)",$/\1/p' | head -1)
for _ in $(seq 600); do "$HOTPATCH" fleet rollout status "$rollout" --json | grep -q '^  "state": "done"' && break; sleep 0.1; done
"$HOTPATCH" fleet rollout status "$rollout"

step "13. The exploit fails on both hosts: same processes, fixed in memory"
for host in canary broad; do
	askhost $host "memo this-memo-is-far-too-long-for-sixteen-bytes"
	askhost $host "balance"
	echo "  $host: same pid ${svcpid[$host]}: $([ -d /proc/${svcpid[$host]} ] && echo still running)"
done

step "14. Who is protected against CVE-2026-0001"
"$HOTPATCH" fleet report --cve CVE-2026-0001

if [ "${HOTPATCH_DEMO_WAIT:-}" = 1 ]; then
	step "15. The dashboard: the same server, over the same TLS, at $url/ui/ (sign in with the token in $work/server/admin.token, kept until you press Enter)"
else
	step "15. The dashboard: the same server, over the same TLS, at $url/ui/ (the demo removes its server when it ends; run it with HOTPATCH_DEMO_WAIT=1 to keep it open for a browser)"
fi
jar=$work/cookies
if command -v curl >/dev/null; then
curl -s --cacert "$HOTPATCH_CA" -c "$jar" -o /dev/null --data-urlencode "token@$work/server/admin.token" "$url/ui/signin"
page=$(curl -s --cacert "$HOTPATCH_CA" -b "$jar" "$url/ui/")
echo "  overview: $(printf '%s' "$page" | sed -n 's/.*id="stat-hosts">\([0-9]*\)<.*/\1/p') hosts, $(printf '%s' "$page" | sed -n 's/.*id="stat-protected">\([^<]*\)<.*/\1/p') of the affected ones protected"
fi
if [ "${HOTPATCH_DEMO_WAIT:-}" = 1 ]; then
	echo "  admin token: $(cat "$work/server/admin.token")"
	read -r -p "  open $url/ui/ in a browser (CA: $HOTPATCH_CA) and sign in with that token; press Enter to end the demo " _
fi

step "Done: a $(stat -c %s "$work/ledger-memo.hpatch")-byte signed patch fixed running services without a restart, by hand and across a fleet."
