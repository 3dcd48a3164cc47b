#!/bin/bash
# it_queue_redis.sh - losing Redis under load (AOF, appendfsync everysec):
#  a. redis-server is stopped while tern delivers 2000 messages and
#     started again on the same socket and data directory 2 s later: tern
#     keeps running, logs the loss and the reconnect, and every message is
#     delivered; the queue ends empty;
#  b. while Redis is down, `tern inject` fails with a clear error and a
#     non-zero exit;
#  c. tern then stops cleanly on SIGTERM (exit 0);
#  d. Redis killed with SIGKILL under load (appendfsync everysec, the
#     messages queued more than a second before): after the restart every
#     message is still delivered; what the crash took (acks, takes of the
#     last second) only comes back as re-deliveries (lease = 3s here);
#  e. Redis "restarts" with its data set still loading (tests/loading_proxy.py
#     closes the connection, then answers -LOADING for 1.5 s): tern sends
#     nothing but SCRIPT LOAD until the scripts load, so no ack or take is
#     refused, and every message is delivered;
#  f. Redis killed with SIGKILL while 128 KiB bodies stream into the engine
#     (each taken out of the RESP stream and received straight into its
#     string): every message delivered after the restart, each body
#     byte-identical to the one queued (SHA-256).
set -u
cd "$(dirname "$0")/.."
. tests/queue_lib.sh
REDIS_EXTRA="--appendonly yes --appendfsync everysec"
qsetup "$REDIS_EXTRA" || exit 1
N=2000
# loadconf NAME LEASE: NAME.conf for the $N messages of each part.
loadconf() {
    qconf "$1" <<EOC
lease = $2
batch = 50
max_in_memory = 200
max_connections = 8
EOC
}

qsink s --reply-delay 2 || exit 1
loadconf s 10s
qinject s --generate $N --domains a.test,b.test,c.test --size 1k
qstart s
TPID=$QPID
# Let delivery get going, then stop Redis (SHUTDOWN writes the AOF).
qwait_lines s 200
before=$(qlines s)
kill -TERM "$REDIS_PID"
wait "$REDIS_PID" 2>/dev/null
tern_forget_pid "$REDIS_PID"

# --- b. inject with Redis down ---------------------------------------------
out=$(printf 'Subject: x\r\n\r\nx\r\n' | "$TERN" inject -c "$dir/s.conf" --from a@b.test --to c@a.test 2>&1)
rc=$?
if [ "$rc" -ne 0 ] && echo "$out" | grep -q 'cannot connect to Redis at'; then
    pass inject_redis_down_fails
else
    fail inject_redis_down_fails "exit $rc: $out"
fi
sleep 2
kill -0 "$TPID" 2>/dev/null && pass engine_survives_redis_loss ||
    fail engine_survives_redis_loss "$(tail -n 3 "$dir/s.rerr")"
tern_redis "$REDIS_EXTRA" || { fail redis_restart "redis-server did not start again"; exit 1; }

# --- a. everything delivered after the restart ------------------------------
if qwait_ids s $N 400; then
    pass redis_restart_nothing_lost
else
    fail redis_restart_nothing_lost "$(qids s) of $N delivered, $(qleft s) left (before the stop: $before)"
fi
grep -q 'Redis connection lost' "$dir/s.rerr" && grep -q 'Redis reconnected' "$dir/s.rerr" &&
    pass redis_loss_logged_and_reconnected ||
    fail redis_loss_logged_and_reconnected "$(tail -n 5 "$dir/s.rerr")"
[ "$before" -lt $N ] && pass redis_stopped_under_load ||
    fail redis_stopped_under_load "all $N were delivered before Redis stopped"

# --- c. clean stop ------------------------------------------------------------
if tern_stop "$TPID"; then
    pass engine_stops_cleanly
else
    fail engine_stops_cleanly "exit status $?: $(tail -n 3 "$dir/s.rerr")"
fi
grep -q '^summary ' "$dir/s.run" && echo "info: $(grep '^summary ' "$dir/s.run")"
echo "info: $(qlines s) deliveries for $N messages"

# --- d. Redis SIGKILL --------------------------------------------------------------
# sigkill_run NAME N SIZE LINES TEST: N messages of SIZE queued (on disk
# by everysec) and a run started; once LINES deliveries are in, Redis is
# SIGKILLed and started again; TEST passes when all N are delivered and the
# queue is empty. Leaves the run going (SPID). A hook between the inject
# and the run: sigkill_queued NAME, when defined.
sigkill_run() {
    local name=$1 n=$2 size=$3 lines=$4 test=$5
    rcli flushall >/dev/null
    qsink "$name" --reply-delay 2 || exit 1
    loadconf "$name" 3s
    qinject "$name" --generate "$n" --domains a.test,b.test,c.test --size "$size"
    declare -F sigkill_queued >/dev/null && sigkill_queued "$name"
    sleep 1.5   # everysec: the enqueues are on disk
    qstart "$name"
    SPID=$QPID
    qwait_lines "$name" "$lines"
    kill -KILL "$REDIS_PID"
    wait "$REDIS_PID" 2>/dev/null
    tern_forget_pid "$REDIS_PID"
    sleep 1
    tern_redis "$REDIS_EXTRA" || { fail redis_restart "redis-server did not start again"; exit 1; }
    if qwait_ids "$name" "$n" 450; then
        pass "$test"
    else
        fail "$test" "$(qids "$name") of $n delivered, $(qleft "$name") left"
    fi
}
sigkill_run k $N 1k 200 redis_sigkill_nothing_lost
echo "info: after SIGKILL: $(qlines k) deliveries for $N messages"
tern_stop "$SPID" && pass engine_stops_cleanly_after_sigkill ||
    fail engine_stops_cleanly_after_sigkill "$(tail -n 3 "$dir/k.rerr")"

# --- e. Redis still loading after a restart -------------------------------------
rcli flushall >/dev/null
qsink l --reply-delay 2 || exit 1
/usr/bin/python3 tests/loading_proxy.py "$dir/proxy.sock" "$REDIS_SOCK" 1.5 >"$dir/proxy.out" 2>&1 &
PPID_=$!
TERN_PIDS="$TERN_PIDS $PPID_"
tern_wait_file "$dir/proxy.sock.ready" 100 || fail proxy "loading_proxy did not start"
loadconf l 3s
REDIS_ADDR=unix:$dir/proxy.sock loadconf lp 3s
qinject l --generate $N --domains a.test,b.test,c.test --size 1k
qstart lp
LPID=$QPID
qwait_lines l 200
kill -USR1 "$PPID_"
if qwait_ids l $N 450; then
    pass redis_loading_nothing_lost
else
    fail redis_loading_nothing_lost "$(qids l) of $N delivered, $(qleft l) left"
fi
tern_stop "$LPID"
kill -TERM "$PPID_" 2>/dev/null
wait "$PPID_" 2>/dev/null
tern_forget_pid "$PPID_"
if grep -q 'SCRIPT LOAD failed: LOADING' "$dir/lp.rerr" && grep -q 'Redis ready' "$dir/lp.rerr" &&
    ! grep -qE '(take|ack) on partition [0-9]+ failed' "$dir/lp.rerr" &&
    grep -qE 'loading_replies=[1-9]' "$dir/proxy.out"; then
    pass redis_loading_waited_for_scripts
else
    fail redis_loading_waited_for_scripts "$(cat "$dir/proxy.out"); $(grep -E 'LOADING|ready|failed' "$dir/lp.rerr" | tail -n 5)"
fi
echo "info: loading restart: $(qlines l) deliveries for $N messages"

# --- f. Redis SIGKILL while long bodies stream -------------------------------------
# 128 KiB bodies go around hiredis's reader, received straight into their
# strings (engine/resp_splice.h); the connection dies in the middle of
# that stream, and the reader with its half-received body is replaced once
# the receive has come back.
NF=300
sigkill_queued() {   # the SHA-256 of each queued body, as the sink hashes it
    # (redis-cli --raw ends the value with a newline of its own)
    rcli --scan --pattern '*:m:*' | while read -r k; do
        rcli --raw hget "$k" data | head -c -1 | sha256sum | cut -d' ' -f1
    done | sort -u >"$dir/$1.want"
}
sigkill_run f $NF 128k 30 redis_sigkill_long_bodies_nothing_lost
cut -f4 "$dir/f.rec" | sort -u >"$dir/f.got"
[ "$(wc -l <"$dir/f.want")" = $NF ] && cmp -s "$dir/f.want" "$dir/f.got" && pass long_bodies_intact ||
    fail long_bodies_intact "$(wc -l <"$dir/f.want") queued bodies, $(comm -13 "$dir/f.want" "$dir/f.got" | wc -l) delivered hashes not among them, $(comm -23 "$dir/f.want" "$dir/f.got" | wc -l) not delivered"
tern_stop "$SPID" && grep -q 'Redis reconnected' "$dir/f.rerr" && pass engine_stops_cleanly_after_long_body_loss ||
    fail engine_stops_cleanly_after_long_body_loss "$(tail -n 3 "$dir/f.rerr")"
[ "$TERN_FAILS" -eq 0 ]
