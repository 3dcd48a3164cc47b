# shellcheck shell=bash disable=SC2154  # $dir, $TERN come from tern_test_setup
# queue_lib.sh - helpers shared by tests/it_queue_*.sh (source it from the
# repository root; it sources scripts/lib.sh): the set-up, a plaintext sink
# that records what it got, configs routed to it, tern runs, and the
# queue's and the record's counts.
#
#   qsetup [REDIS_ARGS]   tern_test_setup and a fresh Redis (tern_redis)
#   qsink NAME ARGS...    fresh sink with NAME.rec and NAME.stats
#   qconf NAME            NAME.conf: $QTHREADS (1) workers, route * to the sink, stdin lines
#   qinject NAME ARGS...  tern inject -c NAME.conf ARGS (output dropped); a failure fails "inject"
#   qdrain NAME           tern run --drain into NAME.run/.rerr; its exit status
#   qstart NAME [TAG]     tern run in the background (TAG: NAME.TAG.run/.rerr); PID in $QPID
#                         (stop it with tern_stop, scripts/lib.sh)
#   qleft NAME            messages in Redis (ready + leased + scheduled)
#   qleased               leased entries summed over every partition now
#   qids NAME             distinct Message-IDs the sink recorded
#   qlines NAME           record lines (deliveries, duplicates included)
#   qwait_ids NAME N [TENTHS]   wait until qids >= N and the queue is empty
#   qwait_lines NAME N [TENTHS] wait until qlines >= N (deliveries under way)
#   qwait_cluster NAME N [TENTHS] wait until qids >= N and no message is left on the cluster
#   qcluster_workload NAME    sink NAME (5 ms late), NAME.conf, 3,000 messages injected
#   qrcpt_peer [CERT KEY] tests/rcpt_peer.py (a receiver answering each RCPT by
#                         its local part; STARTTLS with CERT and KEY) writing
#                         mail to $dir/mail; sets SINK_PORT, exits the test
#                         if it does not start

. scripts/lib.sh

QRUN_LIMIT=${QRUN_LIMIT:-50}   # seconds, any one tern run

qsetup() {
    tern_test_setup
    tern_redis "$@"
}

qsink() {
    local name=$1
    shift
    rm -f "$dir/$name.rec" "$dir/$name.stats"
    tern_sink "$name" --quiet --no-starttls --record "$dir/$name.rec" \
        --stats-file "$dir/$name.stats" "$@"
}

qconf() {
    {
        echo "threads = ${QTHREADS:-1}"
        echo "tls = none"
        echo "route * = 127.0.0.1:$SINK_PORT"
        cat
    } | tern_config "$dir/$1.conf"
}

qinject() {
    local name=$1
    shift
    "$TERN" inject -c "$dir/$name.conf" "$@" >/dev/null || fail inject "tern inject failed"
}

qdrain() {
    timeout "$QRUN_LIMIT" "$TERN" run -c "$dir/$1.conf" --drain >"$dir/$1.run" 2>"$dir/$1.rerr"
}

qstart() {
    local tag=${2:+.$2}
    # -k: tern blocks SIGTERM while it stops; a run stuck at exit (seen once
    # under LeakSanitizer) must not hang the suite. Also counted from the
    # test's own SIGTERM: a stop takes ~10 ms, but once under the sanitizers,
    # with the suite's scripts two at a time, a tern that had printed its
    # stop was still not gone after 5 s; 20 s leaves room for such a stall.
    tern_bg "$QRUN_LIMIT" "$dir/$1$tag.run" "$dir/$1$tag.rerr" "$TERN" run -c "$dir/$1.conf"
    QPID=$TERN_BG_PID
}

qleft() {
    "$TERN" queue -c "$dir/$1.conf" stats |
        awk '$1 == "ready" || $1 == "leased" || $1 == "scheduled" { n += $2 } END { print n + 0 }'
}

qleased() {
    local n=0 k
    for k in $(rcli --scan --pattern '*:leased'); do
        n=$((n + $(rcli zcard "$k")))
    done
    echo "$n"
}

qids() { cut -f9 "$dir/$1.rec" 2>/dev/null | sort -u | grep -c '@tern.test>$'; }
qlines() { wc -l <"$dir/$1.rec" 2>/dev/null || echo 0; }

qwait_ids() {
    local n=${3:-400}
    while [ "$n" -gt 0 ]; do
        [ "$(qids "$1")" -ge "$2" ] && [ "$(qleft "$1")" = 0 ] && return 0
        sleep 0.1
        n=$((n - 1))
    done
    return 1
}

# qcluster_workload NAME: what the cluster failure tests deliver: a sink
# NAME sending everything 5 ms late, 2 workers with 4 connections each
# and a 3 s lease (acks a failure lost come back soon), and 3,000
# messages over 8 domains (partitions on every master).
qcluster_workload() {
    qsink "$1" --latency 5
    QTHREADS=2 qconf "$1" <<'EOC'
lease = 3s
max_connections = 4
EOC
    qinject "$1" --generate 3000 --domains d1.test,d2.test,d3.test,d4.test,d5.test,d6.test,d7.test,d8.test
}

# qwait_cluster NAME N [TENTHS]: until the sink NAME has N distinct
# messages and no message is left on the cluster's masters
# (tern_cluster_keys; REDIS_CLUSTER_PORTS names them).
qwait_cluster() {
    local n=${3:-600}
    while [ "$n" -gt 0 ] && { [ "$(qids "$1")" -lt "$2" ] || [ "$(tern_cluster_keys 'tern:*:m:*')" != 0 ]; }; do
        sleep 0.1
        n=$((n - 1))
    done
}

qwait_lines() {
    local n=${3:-100}
    while [ "$(qlines "$1")" -lt "$2" ] && [ "$n" -gt 0 ]; do
        sleep 0.1
        n=$((n - 1))
    done
}

qrcpt_peer() {
    mkdir -p "$dir/mail"
    /usr/bin/python3 tests/rcpt_peer.py "$dir/peer.port" "$dir/mail" "$@" 2>"$dir/peer.err" &
    TERN_PIDS="$TERN_PIDS $!"
    tern_wait_file "$dir/peer.port" 100 || { fail peer "rcpt_peer did not start: $(cat "$dir/peer.err")"; exit 1; }
    SINK_PORT=$(cat "$dir/peer.port")
}
