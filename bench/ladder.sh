#!/bin/bash
# ladder.sh - the cost of the TLS fallback ladder at level may, against a
# receiver that speaks TLS 1.0 only (the preferred tier's handshake fails,
# the legacy tier's succeeds).
#
#   bench/ladder.sh [--messages N]
#
# Two runs of N messages, one message per connection, resumption off (so
# every connection pays the handshakes being measured):
#   forget    tier_memory = 1ms: every connection climbs down the ladder
#             (a failed preferred handshake, a reconnect, a legacy handshake)
#   remember  tier_memory = 1h: the first connection climbs down, the rest
#             start at the legacy tier
#   modern    the same against a TLS 1.3 receiver (no descent at all)
# and, for one message on a cold engine, the enqueue->250 time. The
# difference per message between the runs is the price of one descent.
set -eu
cd "$(dirname "$0")/.."
export TERN_BUILD=${TERN_BUILD:-build/bench}
. scripts/lib.sh
N=300
while [ $# -gt 0 ]; do
    case $1 in
    --messages) N=${2:?}; shift ;;
    *) echo "usage: bench/ladder.sh [--messages N]" >&2; exit 2 ;;
    esac
    shift
done
for b in "$TERN_BUILD/tern" "$TERN_BUILD/tern-sink"; do
    [ -x "$b" ] || { echo "ladder.sh: $b missing: run make BUILD=$TERN_BUILD all" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/tern-ladder.XXXXXX)
trap 'tern_cleanup; rm -rf "$WORK"' EXIT
tern_init "$WORK"
tern_certs
tern_redis
tern_sink modern --cert "$CERTS/server.pem" --key "$CERTS/server.key" --quiet
MODERN_PORT=$SINK_PORT
tern_sink sink --cert "$CERTS/server.pem" --key "$CERTS/server.key" --tls-min 1.0 --tls-max 1.0 --quiet
OLD_PORT=$SINK_PORT

kv() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p" | head -1; }

run() {   # name, tier_memory, messages, port -> prints one row
    tern_config "$WORK/$1.conf" <<EOC
threads = 1
route * = 127.0.0.1:$4
ca_file = $CERTS/ca.pem
tls = may
tls_resumption = no
max_messages_per_connection = 1
max_connections = 4
tier_memory = $2
EOC
    redis-cli -s "$REDIS_SOCK" flushall >/dev/null
    "$TERN_BUILD/tern" inject -c "$WORK/$1.conf" --generate "$3" --domains ladder.test --size 2000 >/dev/null
    "$TERN_BUILD/tern" run -c "$WORK/$1.conf" --drain >"$WORK/$1.out" 2>&1
    local s legacy
    s=$(grep '^summary ' "$WORK/$1.out")
    legacy=$(sed -n 's/.*tiers: .*legacy \([0-9]*\).*/\1/p' "$WORK/$1.out")
    printf "%-9s %9s %9s %12s %9s %8s %8s %8s\n" "$1" "$3" "$(kv delivered "$s")" \
        "$(kv cpu_us_per_msg "$s")" "$(kv conns "$s")" "$(kv hs_full "$s")" "$(kv p50_ms "$s")" "${legacy:-?}"
}

echo "machine: nproc=$(nproc) kernel=$(uname -r) tern=$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "receiver: tern-sink, TLS 1.0 only; tern: tls = may, resumption off, one message per connection"
printf "%-9s %9s %9s %12s %9s %8s %8s %8s\n" run messages delivered cpu_us/msg conns hs_full p50_ms legacy
run cold1 1ms 1 "$OLD_PORT"
run direct1 1ms 1 "$MODERN_PORT"
run forget 1ms "$N" "$OLD_PORT"
run remember 1h "$N" "$OLD_PORT"
run modern 1h "$N" "$MODERN_PORT"
echo "(conns counts the failed preferred-tier attempts too; cold1/direct1: one message on a fresh engine,"
echo " whole-process CPU, to the TLS 1.0 receiver / to a TLS 1.3 receiver; modern: the same run as"
echo " remember against the TLS 1.3 receiver, the cost of a connection without any descent)"
