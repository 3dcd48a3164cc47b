# shellcheck shell=bash disable=SC2034  # PEER_ERROR is read by bench/run
# peers/postfix.sh - Postfix as a peer of bench/run: a private instance
# (bench/postfix.sh: own config, queue and data directories, loopback only,
# nothing system-wide changed) relaying the workload to the same tern-sink
# over STARTTLS with connection caching.
#
# The peer interface bench/run drives (a new peer is one more file in
# bench/peers/ defining the same functions):
#   peer_available          0 when the peer can run here; else prints why
#   peer_start DIR SINK_PORT CA MSGS_PER_CONN
#                           start it, relaying to 127.0.0.1:SINK_PORT with
#                           STARTTLS verified against CA; MSGS_PER_CONN
#                           empty: the peer's connection caching default
#   peer_inject N SIZE DOMAINS RCPTS
#                           hand it N messages (background; returns at once)
#   peer_wait N SINK_STATS BASE
#                           until the sink's stats file counts BASE + N
#                           messages; non-zero on timeout
#   peer_held N, peer_release
#                           optional: with PEER_DRAIN=1 at peer_start the
#                           peer keeps what it accepts (peer_held N waits
#                           until N are kept) until peer_release lets the
#                           whole queue go: its drain is then timed alone,
#                           as tern's is
#   peer_cpu_s              CPU seconds the peer used so far (all processes)
#   peer_latency            "p50_ms p99_ms max_ms" arrival -> sink's 250
#   peer_describe           one line: how it was set up and measured
#   peer_stop               stop it (idempotent; also called from the trap)
#   PEER_ERROR              why the last step failed
. bench/postfix.sh

peer_available() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "postfix: the private instance must be started as root (postfix drops to mail_owner itself)"
        return 1
    fi
    pf_available || { echo "postfix: not installed (run scripts/install-bench-deps.sh)"; return 1; }
}

peer_start() { PF_HOLD=${PEER_DRAIN:-0} pf_start "$@"; local rc=$?; PEER_ERROR=$PF_ERROR; return $rc; }
peer_held() { pf_held "$@"; local rc=$?; PEER_ERROR=$PF_ERROR; return $rc; }
peer_release() { pf_release; local rc=$?; PEER_ERROR=$PF_ERROR; return $rc; }
peer_inject() { pf_inject "$@"; }
peer_wait() { pf_wait "$@"; local rc=$?; PEER_ERROR=$PF_ERROR; return $rc; }
peer_cpu_s() { pf_cpu_s; }
peer_latency() { pf_latency; }
peer_stop() { pf_stop; }
peer_describe() {
    if [ "${PEER_DRAIN:-0}" = 1 ]; then
        echo "postfix $(postconf -d -h mail_version 2>/dev/null): smtp-source (${PEERLIB_INJECT_PROCS}x${PEERLIB_INJECT_SESSIONS} sessions) -> smtpd -> queue (fsync), on hold; then released at once (postsuper -H, postqueue -f) and timed: queue -> smtp, destination concurrency $PF_CONCURRENCY, TLS connection reuse, CPU by $PF_CPU_METHOD (the drain only)"
    else
        echo "postfix $(postconf -d -h mail_version 2>/dev/null): smtp-source (${PEERLIB_INJECT_PROCS}x${PEERLIB_INJECT_SESSIONS} sessions) -> smtpd -> queue (fsync) -> smtp, destination concurrency $PF_CONCURRENCY, TLS connection reuse, CPU by $PF_CPU_METHOD"
    fi
}
