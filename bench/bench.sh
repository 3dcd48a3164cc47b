#!/bin/bash
# bench.sh - throughput and CPU per message of `tern run --drain` against the
# bundled sink (io_uring, STARTTLS, session tickets on), and optionally of a
# private Postfix instance relaying the same kind of mail to the same sink.
# Every run gets a fresh private redis-server and a fresh sink; everything
# started is stopped again on exit, also on failure or Ctrl-C.
#
#   bench/bench.sh [--messages N] [--domains D] [--size BYTES] [--threads T]
#                  [--runs R] [--peer postfix|none] [--peer-messages N]
#                  [--peer-concurrency C] [--msgs-per-conn K] [--no-tls] [--aof]
#                  [--sink-threads S] [--no-resume] [--per-host C]
#                  [--out DIR] [--tag NAME]
#
# Prints one table (a row per run, then medians), a Postfix row when asked,
# and writes the same figures to OUT/TAG.csv and the table to OUT/TAG.txt.
# Columns and the way CPU is measured: bench/README.md.
set -eu
cd "$(dirname "$0")/.."
export TERN_BUILD=${TERN_BUILD:-build/bench}
. scripts/lib.sh
. bench/postfix.sh

N=100000 D=100 SIZE=4096 THREADS=0 RUNS=3 PEER=none PEER_N=20000
MPC="" TLS=1 RESUME=1 AOF=0 PER_HOST="" SINK_THREADS=1 OUT=run/bench TAG=results

usage() {
    sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: $1 wants a positive integer, got '$2'" >&2; exit 2; }; }
nonneg() { [[ $2 =~ ^[0-9]+$ ]] || { echo "bench.sh: $1 wants a number, got '$2'" >&2; exit 2; }; }

while [ $# -gt 0 ]; do
    case $1 in
    --messages) posint "$1" "${2-}"; N=$2; shift ;;
    --domains) posint "$1" "${2-}"; D=$2; shift ;;
    --size) posint "$1" "${2-}"; SIZE=$2; shift ;;
    --threads) nonneg "$1" "${2-}"; THREADS=$2; shift ;;
    --runs) posint "$1" "${2-}"; RUNS=$2; shift ;;
    --peer) case ${2-} in postfix|none) PEER=$2 ;; *) usage ;; esac; shift ;;
    --peer-concurrency) posint "$1" "${2-}"; PF_CONCURRENCY=$2; shift ;;
    --peer-messages) posint "$1" "${2-}"; PEER_N=$2; shift ;;
    --msgs-per-conn) posint "$1" "${2-}"; MPC=$2; shift ;;
    --sink-threads) posint "$1" "${2-}"; SINK_THREADS=$2; shift ;;
    --no-tls) TLS=0 ;;
    --no-resume) RESUME=0 ;;
    --per-host) posint "$1" "${2-}"; PER_HOST=$2; shift ;;
    --aof) AOF=1 ;;
    --out) OUT=${2:?}; shift ;;
    --tag) [[ ${2-} =~ ^[A-Za-z0-9._-]+$ ]] || usage; TAG=$2; shift ;;
    -h|--help) usage ;;
    *) echo "bench.sh: unknown option $1" >&2; usage ;;
    esac
    shift
done

for b in "$TERN_BUILD/tern" "$TERN_BUILD/tern-sink"; do
    [ -x "$b" ] || { echo "bench.sh: $b missing: run make BUILD=$TERN_BUILD all" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "bench.sh: redis-server not installed" >&2; exit 1; }

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$OUT/work-$TAG
rm -rf "$WORK"
tern_init "$WORK"
trap 'pf_stop; tern_cleanup' EXIT
trap 'exit 130' INT TERM
tern_certs
HZ=$(getconf CLK_TCK)
DOMAINS=$(seq -f "bench%g.test" 1 "$D" | paste -sd, -)
CSV=$OUT/$TAG.csv
TXT=$OUT/$TAG.txt

MACHINE="machine: nproc=$(nproc) cpu=\"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)\" kernel=$(uname -r) tern=$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
WORKLOAD="workload: $N messages x $SIZE bytes to $D domains, $( [ $TLS = 1 ] && echo 'STARTTLS (tls = encrypt, sink tickets on, resumption '$( [ $RESUME = 1 ] && echo on || echo off)')' || echo 'plaintext'),"
WORKLOAD="$WORKLOAD redis AOF $( [ $AOF = 1 ] && echo 'everysec' || echo 'off'), engine threads=$THREADS, sink threads=$SINK_THREADS, max_messages_per_connection=${MPC:-default}, max_connections_per_host=${PER_HOST:-default}"

ticks() {   # utime+stime of one process (all its threads), clock ticks
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12+$13}'
}
us_per_msg() {   # ticks_before ticks_after messages
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$HZ" 'BEGIN{printf "%.1f", (n > 0 ? (b - a) / hz * 1e6 / n : 0)}'
}
kv() {   # key line: value of key=value in a summary line
    tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p" | head -1
}

sink_args() {
    if [ $TLS = 1 ]; then
        echo --cert "$CERTS/server.pem" --key "$CERTS/server.key"
    else
        echo --no-starttls
    fi
}

# stop_sink: SIGTERM, wait, return its summary line in SINK_SUMMARY.
stop_sink() {
    kill "$SINK_PID" 2>/dev/null || true
    wait "$SINK_PID" 2>/dev/null || true
    SINK_SUMMARY=$(grep 'messages=' "$TERN_DIR/$1.out" | tail -1)
}

echo "kind,run,messages,delivered,wall_s,msgs_per_s,engine_us_per_msg,engine_rusage_us_per_msg,redis_us_per_msg,sink_us_per_msg,inject_us_per_msg,hs_full,hs_resumed,sink_hs_full,sink_hs_resumed,p50_ms,p99_ms,conns,peak_conns,avg_bytes,msgs_per_conn,tls,aof" >"$CSV"

run_tern() {   # run number
    local r=$1 dir=$WORK/run$1 redis_extra="" sum rc
    mkdir -p "$dir"
    TERN_DIR=$dir
    [ $AOF = 1 ] && redis_extra="--appendonly yes --appendfsync everysec"
    tern_redis "$redis_extra"
    # shellcheck disable=SC2046
    tern_sink sink $(sink_args) --threads "$SINK_THREADS" --stats-file "$dir/sink.stats" --quiet
    {
        echo "# generated by bench/bench.sh"
        echo "hostname = tern.bench.test"
        echo "redis = $REDIS_ADDR"
        echo "threads = $THREADS"
        echo "route * = 127.0.0.1:$SINK_PORT"
        if [ $TLS = 1 ]; then echo "tls = encrypt"; echo "ca_file = $CERTS/ca.pem"; else echo "tls = none"; fi
        [ -n "$MPC" ] && echo "max_messages_per_connection = $MPC"
        [ $RESUME = 0 ] && echo "tls_resumption = no"
        [ -n "$PER_HOST" ] && echo "max_connections_per_host = $PER_HOST"
        true
    } >"$dir/tern.conf"
    "$TERN_BUILD/tern" check-config -c "$dir/tern.conf" >/dev/null

    local r0 r1 s0 s1 ri0 ri1
    ri0=$(ticks "$REDIS_PID")
    /usr/bin/time -f '%U %S' -o "$dir/inject.time" \
        "$TERN_BUILD/tern" inject -c "$dir/tern.conf" --generate "$N" --domains "$DOMAINS" --size "$SIZE" \
        >"$dir/inject.out" 2>&1 || { echo "bench.sh: tern inject failed:" >&2; cat "$dir/inject.out" >&2; exit 1; }
    ri1=$(ticks "$REDIS_PID")

    r0=$(ticks "$REDIS_PID"); s0=$(ticks "$SINK_PID")
    rc=0
    /usr/bin/time -f '%U %S' -o "$dir/run.time" \
        "$TERN_BUILD/tern" run -c "$dir/tern.conf" --drain >"$dir/run.out" 2>&1 || rc=$?
    r1=$(ticks "$REDIS_PID"); s1=$(ticks "$SINK_PID")
    sum=$(grep '^summary ' "$dir/run.out" | tail -1 || true)
    if [ $rc -ne 0 ] || [ -z "$sum" ]; then
        echo "bench.sh: tern run --drain failed (exit $rc):" >&2
        tail -20 "$dir/run.out" >&2
        exit 1
    fi
    stop_sink sink
    kill "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null || true

    local delivered inj_us eng_ru redis_us sink_us avg
    delivered=$(kv delivered "$sum")
    # Injection: tern inject (rusage) plus redis-server while it ran.
    inj_us=$(awk -v u="$(cat "$dir/inject.time")" -v a="$ri0" -v b="$ri1" -v hz="$HZ" -v n="$N" \
        'BEGIN{split(u, t, " "); printf "%.1f", ((t[1] + t[2]) + (b - a) / hz) * 1e6 / n}')
    eng_ru=$(awk -v u="$(cat "$dir/run.time")" -v n="$delivered" \
        'BEGIN{split(u, t, " "); printf "%.1f", (n > 0 ? (t[1] + t[2]) * 1e6 / n : 0)}')
    redis_us=$(us_per_msg "$r0" "$r1" "$delivered")
    sink_us=$(us_per_msg "$s0" "$s1" "$delivered")
    avg=$(awk -v b="$(kv bytes "$SINK_SUMMARY")" -v m="$(kv messages "$SINK_SUMMARY")" 'BEGIN{printf "%.0f", (m > 0 ? b / m : 0)}')
    echo "tern,$r,$N,$delivered,$(kv wall_s "$sum"),$(kv msgs_per_s "$sum"),$(kv cpu_us_per_msg "$sum"),$eng_ru,$redis_us,$sink_us,$inj_us,$(kv hs_full "$sum"),$(kv hs_resumed "$sum"),$(kv tls_full "$SINK_SUMMARY"),$(kv tls_resumed "$SINK_SUMMARY"),$(kv p50_ms "$sum"),$(kv p99_ms "$sum"),$(kv conns "$sum"),$(kv peak_conns "$SINK_SUMMARY"),$avg,${MPC:-default},$TLS,$AOF" >>"$CSV"
    echo "  run $r: $sum" >&2
    echo "         sink: $SINK_SUMMARY" >&2
}

echo "$MACHINE" >&2
echo "$WORKLOAD" >&2
for r in $(seq 1 "$RUNS"); do
    run_tern "$r"
done

PEER_STATUS=""
if [ "$PEER" = postfix ]; then
    if [ $TLS = 0 ]; then
        PEER_STATUS="postfix: skipped (--no-tls: the peer is configured for STARTTLS only)"
    elif [ "$(id -u)" -ne 0 ]; then
        PEER_STATUS="postfix: skipped (the private instance must be started as root: postfix drops to mail_owner itself)"
    elif ! pf_available; then
        PEER_STATUS="postfix: not installed (run scripts/install-bench-deps.sh); tern figures only"
    else
        TERN_DIR=$WORK/postfix-run
        mkdir -p "$TERN_DIR"
        # shellcheck disable=SC2046
        tern_sink sink $(sink_args) --threads "$SINK_THREADS" --stats-file "$TERN_DIR/sink.stats" --quiet
        echo "  postfix: $PEER_N messages, destination concurrency $PF_CONCURRENCY, via smtp-source -> private postfix -> sink 127.0.0.1:$SINK_PORT" >&2
        if pf_run "$PEER_N" "$SIZE" "$D" "$SINK_PORT" "$TERN_DIR/sink.stats" "$SINK_PID" "$CERTS/ca.pem" "$MPC"; then
            stop_sink sink
            avg=$(awk -v b="$(kv bytes "$SINK_SUMMARY")" -v m="$(kv messages "$SINK_SUMMARY")" 'BEGIN{printf "%.0f", (m > 0 ? b / m : 0)}')
            echo "postfix,1,$PEER_N,$PF_DELIVERED,$PF_WALL_S,$PF_MSGS_PER_S,$PF_CPU_US,$PF_CPU_US,,$PF_SINK_US,,,,$(kv tls_full "$SINK_SUMMARY"),$(kv tls_resumed "$SINK_SUMMARY"),$PF_P50_MS,$PF_P99_MS,$(kv connections "$SINK_SUMMARY"),$(kv peak_conns "$SINK_SUMMARY"),$avg,${MPC:-default},$TLS,fsync" >>"$CSV"
            echo "         sink: $SINK_SUMMARY" >&2
            PEER_STATUS="postfix: $PEER_N messages (smtp-source -> smtpd -> queue -> smtp), destination concurrency $PF_CONCURRENCY${MPC:+, at most $MPC message(s) per connection}; CPU measured by $PF_CPU_METHOD"
        else
            PEER_STATUS="postfix: FAILED: $PF_ERROR (maillog: $TERN_DIR/postfix/log/maillog)"
            stop_sink sink || true
        fi
    fi
fi

# The table, from the CSV, so printed and stored figures cannot differ.
{
    echo "$MACHINE"
    echo "$WORKLOAD"
    awk -F, '
    function med(col,   n, i, j, t, a) {
        n = 0
        for (i = 1; i <= nt; i++) a[++n] = T[i, col] + 0
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    $1 == "tern" { nt++; for (i = 1; i <= NF; i++) T[nt, i] = $i }
    $1 == "postfix" { np++; for (i = 1; i <= NF; i++) P[i] = $i }
    END {
        f = "%-8s %9s %9s %9s %9s %9s %9s %13s %7s %7s %8s %6s\n"
        printf f, "run", "msgs/s", "engine", "redis", "sink", "inject", "total", "hs full/res", "p50ms", "p99ms", "conns", "peak"
        printf f, "", "", "us/msg", "us/msg", "us/msg", "us/msg", "us/msg", "(sink)", "", "", "", ""
        for (r = 1; r <= nt; r++) {
            tot = T[r, c["engine_us_per_msg"]] + T[r, c["redis_us_per_msg"]] + T[r, c["inject_us_per_msg"]]
            printf f, "tern " T[r, c["run"]], T[r, c["msgs_per_s"]], T[r, c["engine_us_per_msg"]], T[r, c["redis_us_per_msg"]],
                T[r, c["sink_us_per_msg"]], T[r, c["inject_us_per_msg"]], sprintf("%.1f", tot),
                T[r, c["sink_hs_full"]] "/" T[r, c["sink_hs_resumed"]], T[r, c["p50_ms"]], T[r, c["p99_ms"]],
                T[r, c["conns"]], T[r, c["peak_conns"]]
            TT[r] = tot
        }
        if (nt > 0) {
            n = nt; for (i = 1; i <= n; i++) a[i] = TT[i]
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
            mt = n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            printf f, "median", sprintf("%.0f", med(c["msgs_per_s"])), sprintf("%.1f", med(c["engine_us_per_msg"])),
                sprintf("%.1f", med(c["redis_us_per_msg"])), sprintf("%.1f", med(c["sink_us_per_msg"])),
                sprintf("%.1f", med(c["inject_us_per_msg"])), sprintf("%.1f", mt),
                med(c["sink_hs_full"]) "/" med(c["sink_hs_resumed"]), med(c["p50_ms"]), med(c["p99_ms"]),
                med(c["conns"]), med(c["peak_conns"])
        }
        if (np > 0) {
            printf f, "postfix", P[c["msgs_per_s"]], P[c["engine_us_per_msg"]], "-", P[c["sink_us_per_msg"]], "(incl.)",
                P[c["engine_us_per_msg"]], P[c["sink_hs_full"]] "/" P[c["sink_hs_resumed"]], P[c["p50_ms"]], P[c["p99_ms"]],
                P[c["conns"]], P[c["peak_conns"]]
            if (nt > 0 && P[c["msgs_per_s"]] > 0 && P[c["engine_us_per_msg"]] > 0) {
                printf "ratio tern/postfix (medians): throughput %.1fx; CPU per message: postfix/tern-engine %.1fx, postfix/tern-total %.1fx\n",
                    med(c["msgs_per_s"]) / P[c["msgs_per_s"]],
                    P[c["engine_us_per_msg"]] / med(c["engine_us_per_msg"]),
                    P[c["engine_us_per_msg"]] / mt
            }
        }
    }' "$CSV"
    [ -n "$PEER_STATUS" ] && echo "$PEER_STATUS"
    echo "csv: $CSV"
} | tee "$TXT"
