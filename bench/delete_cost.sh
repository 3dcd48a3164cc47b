#!/bin/bash
# delete_cost.sh - what `tern queue delete` costs Redis with a long ready
# list: N messages on one partition's ready list (`tern inject
# --generate`), then deletes of ids at the head, at the tail, and a batch
# at the tail, each timed by Redis itself (SLOWLOG: the script's run time,
# during which Redis serves nothing else). Private redis-server, stopped
# on exit.
#
#   bench/delete_cost.sh [--messages N] [--batch B]     (defaults 100000, 1000)
set -eu
cd "$(dirname "$0")/.."
. scripts/lib.sh

N=100000 B=1000
while [ $# -gt 0 ]; do
    case $1 in
    --messages) N=$2; shift 2 ;;
    --batch) B=$2; shift 2 ;;
    *) echo "usage: bench/delete_cost.sh [--messages N] [--batch B]" >&2; exit 2 ;;
    esac
done
[[ $N =~ ^[1-9][0-9]*$ && $B =~ ^[1-9][0-9]*$ && $B -lt $N ]] ||
    { echo "delete_cost.sh: N and B positive, B < N" >&2; exit 2; }
dir=$(mktemp -d /tmp/tern-delcost.XXXXXX)
trap 'tern_cleanup; rm -rf "$dir"' EXIT
tern_init "$dir"
tern_redis >/dev/null
printf 'partitions = 1\nevents_queued = no\n' | tern_config "$dir/t.conf"
TERN=$TERN_BUILD/tern
"$TERN" inject -c "$dir/t.conf" --generate "$N" --domains d.test --size 64 >/dev/null
R() { redis-cli -s "$REDIS_SOCK" "$@"; }
R config set slowlog-log-slower-than 0 >/dev/null
R config set slowlog-max-len 16 >/dev/null
# timed IDS...: delete them, print the remove script's run time in µs.
timed() {
    R slowlog reset >/dev/null
    "$TERN" queue -c "$dir/t.conf" delete "$@" >/dev/null
    R slowlog get 16 | awk '$0 == "EVAL" || $0 == "eval" { print prev; exit } { prev = $0 }'
}
echo "ready list of $(R llen 'tern:{0}:ready') ids"
echo "delete 1 id at the head:   $(timed "$(R lindex 'tern:{0}:ready' 0)") us"
echo "delete 1 id at the tail:   $(timed "$(R lindex 'tern:{0}:ready' -1)") us"
# shellcheck disable=SC2046
echo "delete $B ids at the tail: $(timed $(R lrange 'tern:{0}:ready' "-$B" -1)) us"
echo "ready list of $(R llen 'tern:{0}:ready') ids after $((B + 2)) deletes"
