# shellcheck shell=bash disable=SC2034  # sourced: PEERLIB_* are results for the caller
# peer_lib.sh - what the private peer instances of the benchmark share
# (bench/postfix.sh, bench/exim.sh): a free loopback port, the CPU of a
# family of processes, injection with Postfix's smtp-source, waiting until
# the sink has counted the messages, and latency percentiles. Sourced after
# scripts/lib.sh; not run on its own. One peer at a time per shell: the
# PEERLIB_* variables hold the current one's state.
#
# CPU: an MTA is a family of short- and long-lived processes. When the
# cgroup-v1 cpuacct controller is writable the peer is started inside a
# cgroup of its own and cpuacct.usage (ns, every process that ever ran in
# it) is read before and after. Otherwise /proc is sampled: utime + stime +
# cutime + cstime of the peer's root process (which reaps its exited
# children) plus those of its live children; exited grandchildren are
# covered by their parents' cutime. PF_CPU_FORCE=proc in the environment
# selects /proc sampling regardless.
#
#   peerlib_free_port             a free TCP port on 127.0.0.1
#   peerlib_listening PORT        0 once 127.0.0.1:PORT accepts (10 s at most)
#   peerlib_cpu_begin NAME        picks PEERLIB_CPU_METHOD (cgroup or proc),
#                                 removes stale empty groups of dead runs,
#                                 and makes the cgroup NAME-PID for cgroup
#   peerlib_cpu_join              in the subshell that execs the peer: join it
#   peerlib_cpu_s ROOT_PID        CPU seconds of the family so far
#   peerlib_cpu_end               waits (5 s at most) for the cgroup to
#                                 empty, kills what is left in it, removes
#                                 it (idempotent)
#   peerlib_inject PORT LOG N SIZE DOMAINS [RCPTS]
#                                 smtp-source into 127.0.0.1:PORT in the
#                                 background (PEERLIB_INJECT_PID)
#   peerlib_wait N SINK_STATS BASE TIMEOUT_S
#                                 until the sink counts BASE + N messages;
#                                 sets PEERLIB_DELIVERED; non-zero with
#                                 PEERLIB_ERROR set on timeout
#   peerlib_percentiles           seconds on stdin, one a line ->
#                                 "p50_ms p99_ms max_ms" (or "- - -")

PEERLIB_CGROUP_ROOT=/sys/fs/cgroup/cpuacct
PEERLIB_INJECT_PROCS=4                # parallel smtp-source processes...
PEERLIB_INJECT_SESSIONS=5             # ...each with this many SMTP sessions
PEERLIB_HEADER_BYTES=200              # smtp-source -l counts the body only
PEERLIB_WIDE_SHORT_SESSIONS=0
PEERLIB_CGROUP=""
PEERLIB_CPU_METHOD=proc

# peerlib_listening PORT: wait (10 s at most) until 127.0.0.1:PORT accepts.
peerlib_listening() {
    local i=100
    while [ $i -gt 0 ] && ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        sleep 0.1; i=$((i - 1))
    done
    [ $i -gt 0 ]
}

peerlib_free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

peerlib_cpu_begin() {
    PEERLIB_CPU_METHOD=proc
    PEERLIB_CGROUP=""
    peerlib_cgroup_sweep
    if [ "${PF_CPU_FORCE:-}" != proc ] && [ -w "$PEERLIB_CGROUP_ROOT" ] &&
        mkdir "$PEERLIB_CGROUP_ROOT/tern-bench-$1-$$" 2>/dev/null; then
        PEERLIB_CGROUP=$PEERLIB_CGROUP_ROOT/tern-bench-$1-$$
        PEERLIB_CPU_METHOD=cgroup
    fi
}

# A benchmark killed with SIGKILL runs no trap, so its cgroup stays: an
# empty tern-bench-NAME-PID whose PID is gone is removed here. A group
# that still holds processes is left alone (they are not this run's).
peerlib_cgroup_sweep() {
    local g pid
    for g in "$PEERLIB_CGROUP_ROOT"/tern-bench-*-*; do
        [ -d "$g" ] || continue
        pid=${g##*-}
        case $pid in '' | *[!0-9]*) continue ;; esac
        kill -0 "$pid" 2>/dev/null && continue
        [ -s "$g/cgroup.procs" ] || rmdir "$g" 2>/dev/null || true
    done
}

peerlib_cpu_join() {
    [ -z "$PEERLIB_CGROUP" ] || echo "$BASHPID" >"$PEERLIB_CGROUP/cgroup.procs"
}

peerlib_proc_ticks() {   # root pid
    local p t=0 s
    [ -n "$1" ] || { echo 0; return; }
    for p in $1 $(ps -o pid= --ppid "$1" 2>/dev/null); do
        s=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13+$14+$15}')
        t=$((t + ${s:-0}))
    done
    echo "$t"
}

peerlib_cpu_s() {
    if [ "$PEERLIB_CPU_METHOD" = cgroup ]; then
        awk '{printf "%.6f\n", $1 / 1e9}' "$PEERLIB_CGROUP/cpuacct.usage"
    else
        awk -v t="$(peerlib_proc_ticks "${1:-}")" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.6f\n", t / hz}'
    fi
}

peerlib_cpu_end() {
    if [ -n "$PEERLIB_CGROUP" ] && [ -d "$PEERLIB_CGROUP" ]; then
        local n=50 p
        while [ $n -gt 0 ] && [ -s "$PEERLIB_CGROUP/cgroup.procs" ]; do
            sleep 0.1; n=$((n - 1))
        done
        # whatever of the peer did not stop (every process in the group is
        # one it started)
        while read -r p; do kill -KILL "$p" 2>/dev/null; done <"$PEERLIB_CGROUP/cgroup.procs"
        n=20
        while [ $n -gt 0 ] && [ -s "$PEERLIB_CGROUP/cgroup.procs" ]; do
            sleep 0.1; n=$((n - 1))
        done
        rmdir "$PEERLIB_CGROUP" 2>/dev/null || true
    fi
    PEERLIB_CGROUP=""
}

# One smtp-source per domain bench<i>.test, PEERLIB_INJECT_PROCS at a time,
# each keeping its connections (-d) to PEERLIB_INJECT_SESSIONS parallel
# sessions; RCPTS recipients per message. When a domain has fewer messages
# than that (tail: one each) a process holds one session; with
# PEERLIB_WIDE_SHORT_SESSIONS=1 (a peer whose sessions are slow to end,
# bench/exim.sh) more processes run at once then, so that
# PEERLIB_INJECT_PROCS x PEERLIB_INJECT_SESSIONS sessions are open at a
# time in every workload.
peerlib_inject() {
    local port=$1 log=$2 n=$3 size=$4 domains=$5 rcpts=${6:-1} per rem i k payload procs
    payload=$((size > PEERLIB_HEADER_BYTES ? size - PEERLIB_HEADER_BYTES : 1))
    per=$((n / domains)); rem=$((n % domains))
    procs=$PEERLIB_INJECT_PROCS
    [ "$PEERLIB_WIDE_SHORT_SESSIONS" = 0 ] || [ "$per" -ge "$PEERLIB_INJECT_SESSIONS" ] ||
        procs=$((PEERLIB_INJECT_PROCS * PEERLIB_INJECT_SESSIONS))
    # shellcheck disable=SC2016  # $0, $1 belong to the inner sh
    for i in $(seq 1 "$domains"); do
        k=$per; [ "$i" -le "$rem" ] && k=$((k + 1))
        [ "$k" -gt 0 ] && echo "$k bench$i.test"
    done | xargs -P "$procs" -L 1 sh -c \
        'exec smtp-source -d -N -s '"$PEERLIB_INJECT_SESSIONS"' -m "$0" -r '"$rcpts"' -l '"$payload"' -f bench@tern.test -t "user@$1" 127.0.0.1:'"$port" \
        >"$log" 2>&1 &
    PEERLIB_INJECT_PID=$!
}

peerlib_wait() {
    local n=$1 sstats=$2 base=$3 timeout=$4 deadline got
    PEERLIB_ERROR=""
    deadline=$(( $(date +%s) + timeout ))
    while :; do
        got=$(tern_stat "$sstats" messages); got=$(( ${got:-0} - base ))
        [ "$got" -ge "$n" ] && break
        if [ "$(date +%s)" -ge "$deadline" ]; then
            PEERLIB_ERROR="timeout after ${timeout}s: sink counted $got of $n"
            # injectors stuck on a peer that stopped answering: ours to end
            pkill -P "$PEERLIB_INJECT_PID" 2>/dev/null
            kill "$PEERLIB_INJECT_PID" 2>/dev/null
            break
        fi
        sleep 0.05
    done
    PEERLIB_DELIVERED=$got
    wait "$PEERLIB_INJECT_PID" 2>/dev/null || true
    [ -z "$PEERLIB_ERROR" ]
}

peerlib_percentiles() {
    sort -n | awk '{v[NR]=$1} END{if(NR==0){print "- - -"; exit}
        i=int(NR*0.5); if(i<1)i=1; j=int(NR*0.99); if(j<1)j=1;
        printf "%.0f %.0f %.0f\n", v[i]*1000, v[j]*1000, v[NR]*1000}'
}
