#!/bin/bash
# it_listener_cluster.sh - the SMTP injection listener on a Redis Cluster
# (three masters; one replica, for the failover at the end): `tern run`
# with a listen line and workers delivering to the recording sink.
#
#   lc_single_250          a message to each of three domains, one per master: 250
#   lc_spanning_250        one message with recipients on all three masters, two
#                          of them in different partitions of one master (a
#                          transaction per partition: a cluster refuses one
#                          across slots): 250
#   lc_delivered           every recipient of those reached the sink
#   lc_moved_451           a slot moved to another master under the listener: the
#                          message for it gets 451 (MOVED), not 250
#   lc_moved_reread        the listener read the map again: the message is then
#                          queued (250) on the new master and delivered
#   lc_dead_master_451     a master stopped: a message with an entry on it gets 451,
#                          alone or with recipients on live masters
#   lc_live_masters_250    the listener keeps answering 250 for the other masters,
#                          and that mail is delivered
#   lc_refused_not_delivered  no message answered 451 alone was delivered
#   lc_master_back_250     the master started again: the listener reconnects to it
#                          (its script loaded first) and queues there again
#   lc_failover_250        the first master killed for good and its replica promoted:
#                          the listener reads the map again and queues there (250),
#                          and the mail is delivered
#   lc_clean_exit          no sanitizer report from tern run
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
tern_test_setup
# Without full coverage a cluster with a dead master still serves the
# other masters' slots (the default refuses everything: CLUSTERDOWN).
tern_redis_cluster 3 "--cluster-require-full-coverage no" || { fail lc_cluster "no cluster"; exit 1; }
read -r -a PORTS <<<"$REDIS_CLUSTER_PORTS"
read -r -a PIDS <<<"$REDIS_PID"
PARTS=16

# The partition of a domain: queue_partition_of (queue/queue_addr.c),
# FNV-1a 64 of the lower-cased domain modulo the partitions.
partition_of() {
    python3 -c 'import sys
h = 0xcbf29ce484222325
for b in sys.argv[1].lower().encode():
    h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
print(h % int(sys.argv[2]))' "$1" "$PARTS"
}
slot_of() { redis-cli -p "${PORTS[0]}" cluster keyslot "{$(partition_of "$1")}"; }
master_of() { tern_cluster_slot_owner "$(slot_of "$1")"; }

# until_250 TRIES PAUSE LOCAL DOMAIN: a message to LOCAL.i@DOMAIN, again
# every PAUSE seconds, until the listener answers 250 (a map being read
# again, a master coming back). Sets got (the last answer) and i.
until_250() {
    got=""
    for i in $(seq "$1"); do
        got=$(send "$3.$i@$4")
        [ "$got" = 250 ] && return 0
        sleep "$2"
    done
    return 1
}

# One domain per master: DOM[i] is served by PORTS[i].
declare -a DOM
for n in $(seq 1 60); do
    d=d$n.test
    m=$(master_of "$d")
    for i in 0 1 2; do
        [ "${PORTS[$i]}" = "$m" ] && [ -z "${DOM[$i]:-}" ] && DOM[$i]=$d
    done
    [ -n "${DOM[0]:-}" ] && [ -n "${DOM[1]:-}" ] && [ -n "${DOM[2]:-}" ] && break
done
[ -n "${DOM[0]:-}" ] && [ -n "${DOM[1]:-}" ] && [ -n "${DOM[2]:-}" ] ||
    { fail lc_domains "no domain for each master: ${DOM[*]:-}"; exit 1; }
# A second domain on the first master, in another partition.
A2=""
for n in $(seq 61 200); do
    d=d$n.test
    [ "$(master_of "$d")" = "${PORTS[0]}" ] &&
        [ "$(partition_of "$d")" != "$(partition_of "${DOM[0]}")" ] && { A2=$d; break; }
done
[ -n "$A2" ] || { fail lc_domains "no second domain on ${PORTS[0]}"; exit 1; }

tern_sink s --record "$dir/s.rec" --no-starttls --quiet || exit 1
PORT=$(tern_free_port)
tern_config "$dir/t.conf" <<EOC
threads = 2
partitions = $PARTS
route * = 127.0.0.1:$SINK_PORT
tls = none
listen = 127.0.0.1:$PORT
listen_allow = 127.0.0.1/32
listen_received = no
EOC
tern_bg 60 "$dir/run.out" "$dir/run.err" "$TERN" run -c "$dir/t.conf"
RUN_PID=$TERN_BG_PID
up=0
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && { up=1; break; }
    sleep 0.1
done
[ $up = 1 ] || { fail lc_up "no listener on $PORT: $(tail -5 "$dir/run.err")"; exit 1; }

# send RCPTS...: one message per argument (recipients comma-separated),
# each on its own connection; prints the DATA reply code of each.
send() {
    python3 - "$PORT" "$@" <<'EOF'
import smtplib, sys
port = int(sys.argv[1])
for rcpts in sys.argv[2:]:
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=20) as c:
            c.ehlo("client.test")
            c.mail("a@src.test")
            for r in rcpts.split(","):
                c.rcpt(r)
            code, _ = c.data(b"Subject: cluster\r\n\r\nhello\r\n")
            print(code)
    except Exception as e:
        print("error", type(e).__name__, e)
EOF
}

# wait_rcpts RCPT...: until the sink recorded each of them (5 s at most).
wait_rcpts() {
    local r missing
    for _ in $(seq 50); do
        missing=""
        for r in "$@"; do
            cut -f2 "$dir/s.rec" 2>/dev/null | tr ',' '\n' | grep -qxF "$r" || missing="$missing $r"
        done
        [ -z "$missing" ] && return 0
        sleep 0.1
    done
    echo "$missing"
    return 1
}

A=${DOM[0]} B=${DOM[1]} C=${DOM[2]}
out=$(send "one@$A" "two@$B" "three@$C" | paste -sd' ')
[ "$out" = "250 250 250" ] && pass lc_single_250 || fail lc_single_250 "$out"
out=$(send "x@$A,y@$B,z@$C,w@$C,v@$A2")
[ "$out" = 250 ] && pass lc_spanning_250 || fail lc_spanning_250 "$out"
miss=$(wait_rcpts "one@$A" "two@$B" "three@$C" "x@$A" "y@$B" "z@$C" "w@$C" "v@$A2") &&
    pass lc_delivered || fail lc_delivered "missing:$miss"

# Resharding: B's slot moved to the first master under the listener,
# whose map still says the second: MOVED, 451, and the map is read again.
slot=$(slot_of "$B")
tern_cluster_migrate_slot "$slot" "${PORTS[0]}" || fail lc_moved_451 "slot $slot not moved"
out=$(send "moved1@$B")
[ "$out" = 451 ] && pass lc_moved_451 || fail lc_moved_451 "$out"
until_250 20 0.1 moved2 "$B"
if [ "$got" = 250 ] && miss=$(wait_rcpts "moved2.$i@$B") &&
    grep -q 'slot map read again' "$dir/run.err"; then
    pass lc_moved_reread
else
    fail lc_moved_reread "last $got, missing ${miss:-}; $(grep listener "$dir/run.err" | tail -3)"
fi

# The third master stopped (it serves C only: B moved to the first).
kill "${PIDS[2]}" 2>/dev/null
wait "${PIDS[2]}" 2>/dev/null
tern_forget_pid "${PIDS[2]}"
out=$(send "dead1@$C" "dead2@$A,dead2@$C" "dead3@$C" | paste -sd' ')
[ "$out" = "451 451 451" ] && pass lc_dead_master_451 || fail lc_dead_master_451 "$out"
out=$(send "live1@$A" "live2@$B" "live3@$A,live3@$B" | paste -sd' ')
if [ "$out" = "250 250 250" ] && miss=$(wait_rcpts "live1@$A" "live2@$B" "live3@$A" "live3@$B"); then
    pass lc_live_masters_250
else
    fail lc_live_masters_250 "$out; missing ${miss:-}"
fi
if cut -f2 "$dir/s.rec" | tr ',' '\n' | grep -qE '^(dead1|dead3|moved1)@'; then
    fail lc_refused_not_delivered "$(cut -f2 "$dir/s.rec" | tr ',' '\n' | grep -E '^(dead|moved1)' | paste -sd' ')"
else
    pass lc_refused_not_delivered
fi

# The master started again (same port, bus port and node file: it is the
# same node and serves its slots again). The listener's link reconnects
# (at most once a second) and loads its script there first.
tern_cluster_restart 3
until_250 50 0.2 back "$C"
if [ "$got" = 250 ] && miss=$(wait_rcpts "back.$i@$C"); then
    pass lc_master_back_250
else
    fail lc_master_back_250 "last $got; missing ${miss:-}; $(grep listener "$dir/run.err" | tail -3)"
fi

# Failover: a replica of the first master (A's: the `redis =` address),
# then that master killed for good. The cluster promotes the replica; the
# listener cannot reconnect to the dead master, reads the map again and
# queues A's mail on the new one (and the workers deliver it, the same way).
if tern_cluster_add_replica 1; then
    { kill -9 "${PIDS[0]}"; wait "${PIDS[0]}"; } 2>/dev/null
    tern_forget_pid "${PIDS[0]}"
    until_250 100 0.2 failover "$A"
    if [ "$got" = 250 ] && miss=$(wait_rcpts "failover.$i@$A"); then
        pass lc_failover_250
    else
        fail lc_failover_250 "last $got; missing ${miss:-}; $(grep listener "$dir/run.err" | tail -3)"
    fi
else
    fail lc_failover_250 "no replica"
fi

tern_stop "$RUN_PID"; rc=$?
[ $rc -eq 0 ] && ! grep -qE 'Sanitizer|runtime error' "$dir/run.err" && pass lc_clean_exit ||
    fail lc_clean_exit "rc=$rc $(grep -E -m3 'Sanitizer|runtime error|SUMMARY' "$dir/run.err")"
# LC_DEBUG=DIR: keep a copy of the scratch directory (logs, the sink's record).
[ -n "${LC_DEBUG:-}" ] && cp -r "$dir" "$LC_DEBUG"
[ "$TERN_FAILS" -eq 0 ]
