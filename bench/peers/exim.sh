# shellcheck shell=bash disable=SC2034  # PEER_ERROR is read by bench/run
# peers/exim.sh - Exim as a peer of bench/run: a private instance
# (bench/exim.sh: own configuration, spool and logs, loopback only, nothing
# system-wide changed) relaying the workload to the same tern-sink over
# STARTTLS, with two-phase queue runners that carry on down each connection
# and TLS session resumption. The interface: bench/peers/postfix.sh.
. bench/exim.sh

peer_available() { ex_available; }
peer_start() { ex_start "$@"; local rc=$?; PEER_ERROR=$EX_ERROR; return $rc; }
peer_inject() { ex_inject "$@"; }
peer_wait() { ex_wait "$@"; local rc=$?; PEER_ERROR=$EX_ERROR; return $rc; }
peer_cpu_s() { ex_cpu_s; }
peer_latency() { ex_latency; }
peer_stop() { ex_stop; }
peer_describe() {
    echo "exim $(ex_version) (Debian exim4-daemon-light, GnuTLS): smtp-source (${PEERLIB_INJECT_PROCS}x${PEERLIB_INJECT_SESSIONS} sessions) -> exim (queue_only, spool fsync) -> -qq queue runners (${EX_RUNNERS} at most, one a second), connections carried on (a message per connection: each delivered as it arrives), TLS resumption, CPU by $EX_CPU_METHOD"
}
