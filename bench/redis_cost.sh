#!/bin/bash
# redis_cost.sh - Redis's main-thread CPU per delivered message, step by
# step (take, HMGET of fields and body, ack with and without its event),
# with tern's own scripts and command builders (build/tern-redis-cost,
# bench/redis_cost.c), on a private redis-server set up as bench/run's
# (hash-max-listpack-value 8192) and stopped again on exit.
#
#   bench/redis_cost.sh [--messages N] [--size BYTES] [--rounds R]
#
# Prints one line: take_us hmget_us ack_us ack_no_event_us event_us total_us
# (medians over R rounds) and event_bytes (Redis memory per event entry);
# docs/queue.md "Cost in Redis" quotes it.
set -eu
cd "$(dirname "$0")/.."
. scripts/lib.sh
[ -x "$TERN_BUILD/tern-redis-cost" ] || { echo "redis_cost.sh: $TERN_BUILD/tern-redis-cost missing: run make" >&2; exit 1; }
work=$(mktemp -d /tmp/tern-rcost.XXXXXX)
trap 'tern_cleanup; rm -rf "$work"' EXIT
tern_init "$work"
tern_redis "--hash-max-listpack-value 8192"
"$TERN_BUILD/tern-redis-cost" "$REDIS_ADDR" "$@"
