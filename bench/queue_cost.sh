#!/bin/bash
# queue_cost.sh - what the Redis queue costs per message, and the engine's
# memory with a large queue: enqueue N messages (`tern inject --generate`),
# then drain them (`tern run --drain`) to the bundled sink (plaintext), on
# a private redis-server and sink that are stopped again on exit.
#
#   bench/queue_cost.sh [--messages N] [--domains D] [--size BYTES]
#                       [--threads T] [--cap M] [--aof] [--out DIR]
#
#   --cap M   max_messages_in_memory for the engine (default: unset)
#   --aof     Redis with appendonly yes, appendfsync everysec
#   --redis-set "NAME VALUE"   a CONFIG SET for the private redis-server
#                              (e.g. "hash-max-listpack-value 4096"); repeatable
#
# For each phase it prints messages/s, Redis commands per message (INFO
# commandstats: client calls, and the calls made inside the scripts), and
# Redis CPU per message (INFO cpu: used_cpu_user + used_cpu_sys of the
# redis-server process, network and its background threads included; and
# of its main thread alone, the one that limits Redis's throughput).
# INFO commandstats of the drain goes to stderr. For the drain it also prints
# the engine's peak RSS (/usr/bin/time) and its peak_in_memory line, and
# Redis's used memory after the enqueue. Output also goes to OUT/queue_cost.txt.
set -eu
cd "$(dirname "$0")/.."
. scripts/lib.sh

N=100000 D=100 SIZE=1024 THREADS=2 CAP="" AOF=0 OUT=run/queue_cost SETS=()
posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "queue_cost.sh: $1 wants a positive integer" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case $1 in
    --messages) posint "$1" "${2-}"; N=$2; shift ;;
    --domains) posint "$1" "${2-}"; D=$2; shift ;;
    --size) posint "$1" "${2-}"; SIZE=$2; shift ;;
    --threads) posint "$1" "${2-}"; THREADS=$2; shift ;;
    --cap) posint "$1" "${2-}"; CAP=$2; shift ;;
    --aof) AOF=1 ;;
    --redis-set) SETS+=("${2:?}"); shift ;;
    --out) OUT=${2:?}; shift ;;
    *) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    shift
done
for b in "$TERN_BUILD/tern" "$TERN_BUILD/tern-sink"; do
    [ -x "$b" ] || { echo "queue_cost.sh: $b missing: run make" >&2; exit 1; }
done

mkdir -p "$OUT"
work=$(mktemp -d /tmp/tern-qcost.XXXXXX)
trap 'tern_cleanup; rm -rf "$work"' EXIT
tern_init "$work"
if [ "$AOF" = 1 ]; then tern_redis "--appendonly yes --appendfsync everysec"; else tern_redis; fi
for s in ${SETS[@]+"${SETS[@]}"}; do
    # shellcheck disable=SC2086
    rcli config set $s >/dev/null
done
tern_sink sink --quiet --no-starttls --threads 2
{
    echo "threads = $THREADS"
    echo "tls = none"
    echo "route * = 127.0.0.1:$SINK_PORT"
    echo "lease = 1h"
    [ -n "$CAP" ] && echo "max_messages_in_memory = $CAP"
} | tern_config "$work/t.conf"
domains=$(seq -f 'd%g.test' 1 "$D" | paste -sd, -)

# counters: "<client calls> <calls inside scripts> <cpu seconds> <main thread cpu seconds>"
counters() {
    local cs cpu
    cs=$(rcli info commandstats | tr -d '\r')
    cpu=$(rcli info cpu | tr -d '\r' | awk -F: '
        $1 == "used_cpu_user" || $1 == "used_cpu_sys" { s += $2 }
        $1 == "used_cpu_user_main_thread" || $1 == "used_cpu_sys_main_thread" { m += $2 }
        END { printf "%.6f %.6f", s, m }')
    echo "$cs" | awk -F'[:=,]' -v cpu="$cpu" '
        /^cmdstat_/ { name = substr($1, 9); calls = $3
            # hsetnx and hget: the bodies, written and read outside the scripts
            if (name == "eval" || name == "evalsha" || name == "info" || name == "config" ||
                name == "ping" || name == "script|load" || name == "script" ||
                name == "hsetnx" || name == "hget") client += calls
            else inner += calls }
        END { printf "%d %d %s\n", client, inner, cpu }'
}
report() {   # phase, messages, wall seconds, before, after
    # shellcheck disable=SC2206  # the counters are words
    local b=($4) a=($5)
    awk -v p="$1" -v n="$2" -v w="$3" -v c0="${b[0]}" -v i0="${b[1]}" -v u0="${b[2]}" -v m0="${b[3]}" \
        -v c1="${a[0]}" -v i1="${a[1]}" -v u1="${a[2]}" -v m1="${a[3]}" 'BEGIN {
        printf "%-8s %9d msgs %8.2f s %9.0f msgs/s  redis: %.3f client cmds/msg, %.2f script cmds/msg, %.2f us CPU/msg (main thread %.2f)\n",
            p, n, w, n / w, (c1 - c0) / n, (i1 - i0) / n, (u1 - u0) * 1e6 / n, (m1 - m0) * 1e6 / n }'
}
now() { date +%s.%N; }

{
sets=""
[ ${#SETS[@]} -gt 0 ] && sets=", config set: ${SETS[*]}"
echo "queue_cost: $N messages of $SIZE bytes to $D domains, $THREADS threads, cap ${CAP:-none}, aof $AOF, $(redis-server --version | cut -d' ' -f3)$sets"
rcli config resetstat >/dev/null
before=$(counters)
t0=$(now)
"$TERN_BUILD/tern" inject -c "$work/t.conf" --generate "$N" --domains "$domains" --size "$SIZE" >/dev/null
t1=$(now)
after=$(counters)
report enqueue "$N" "$(echo "$t1 - $t0" | bc)" "$before" "$after"
echo "redis used_memory after enqueue: $(rcli info memory | tr -d '\r' | sed -n 's/^used_memory_human://p')"

rcli config resetstat >/dev/null
before=$(counters)
t0=$(now)
/usr/bin/time -f 'rss_kib %M' -o "$work/time" "$TERN_BUILD/tern" run -c "$work/t.conf" --drain \
    >"$work/run.out" 2>"$work/run.err"
t1=$(now)
after=$(counters)
delivered=$(sed -n 's/^summary delivered=\([0-9]*\).*/\1/p' "$work/run.out")
report drain "${delivered:-0}" "$(echo "$t1 - $t0" | bc)" "$before" "$after"
grep '^summary ' "$work/run.out" | tr ' ' '\n' | grep -E '^(msgs_per_s|cpu_us_per_msg|wall_s)=' | paste -sd' ' - |
    sed 's/^/engine: /'
echo "engine peak RSS: $(($(sed -n 's/^rss_kib //p' "$work/time") / 1024)) MiB; $(grep '^queue ' "$work/run.out")"
rcli info commandstats | tr -d "\r" | grep -E "evalsha|xadd|hmget|zadd|zscore|zrem|hincrby|del|lpop|zrangebyscore" >&2
left=$(rcli --scan --pattern '*:ready' | while read -r k; do rcli llen "$k"; done | paste -sd+ - | bc)
echo "left on ready: ${left:-0}"
} | tee "$OUT/queue_cost.txt"
