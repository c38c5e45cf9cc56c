#!/usr/bin/env bash
# The hotpatch demo: build a sample service twice (with and without a fix),
# make a signed patch from the two builds, inspect it, and show that a
# tampered patch is refused. Needs only Go and gcc.
set -euo pipefail
cd "$(dirname "$0")/.."
HOTPATCH=${HOTPATCH:-bin/hotpatch}
[ -x "$HOTPATCH" ] || { echo "demo: $HOTPATCH missing; run 'make demo' (it builds it)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/hotpatch-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
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

step "Done: a $(stat -c %s "$work/ledger-memo.hpatch")-byte signed patch fixed a running service without a restart."
