#!/bin/bash
# it_demo.sh - the README's first command keeps working: scripts/demo.sh
# (private redis-server, sink with STARTTLS, inject, drain, summary) exits 0
# with every message delivered over TLS and the queue empty.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
TERN_FAILS=0
dir=$(mktemp -d /tmp/tern-it-demo.XXXXXX)
trap 'rm -rf "$dir"' EXIT
DEMO_DIR=$dir/demo DEMO_MESSAGES=500 DEMO_DOMAINS=5 timeout 120 scripts/demo.sh >"$dir/out" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q '^summary delivered=500 ' "$dir/out" &&
    grep -q '^ready 0 leased 0 scheduled 0 enqueued 500 delivered 500' "$dir/out" &&
    grep -q 'TLSv1.3' "$dir/out" &&
    pass demo_runs || fail demo_runs "rc=$rc: $(tail -n 5 "$dir/out")"
exit $TERN_FAILS
