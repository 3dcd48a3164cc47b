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
#     last second) only comes back as re-deliveries (lease = 3s here).
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
. tests/queue_lib.sh
tern_test_setup
REDIS_EXTRA="--appendonly yes --appendfsync everysec"
tern_redis "$REDIS_EXTRA" || exit 1
N=2000

qsink s --reply-delay 2 || exit 1
qconf s <<EOC
lease = 10s
batch = 50
max_in_memory = 200
max_connections = 8
EOC
"$TERN" inject -c "$dir/s.conf" --generate $N --domains a.test,b.test,c.test --size 1k >/dev/null ||
    fail inject "tern inject failed"
qstart s
TPID=$QPID
# Let delivery get going, then stop Redis (SHUTDOWN writes the AOF).
n=100
while [ "$(qlines s)" -lt 200 ] && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
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
if qstop "$TPID"; then
    pass engine_stops_cleanly
else
    fail engine_stops_cleanly "exit status $?: $(tail -n 3 "$dir/s.rerr")"
fi
grep -q '^summary ' "$dir/s.run" && echo "info: $(grep '^summary ' "$dir/s.run")"
echo "info: $(qlines s) deliveries for $N messages"

# --- d. Redis SIGKILL --------------------------------------------------------------
rcli flushall >/dev/null
qsink k --reply-delay 2 || exit 1
qconf k <<EOC
lease = 3s
batch = 50
max_in_memory = 200
max_connections = 8
EOC
"$TERN" inject -c "$dir/k.conf" --generate $N --domains a.test,b.test,c.test --size 1k >/dev/null ||
    fail inject "tern inject failed"
sleep 1.5   # everysec: the enqueues are on disk
qstart k
KPID=$QPID
n=100
while [ "$(qlines k)" -lt 200 ] && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
kill -KILL "$REDIS_PID"
wait "$REDIS_PID" 2>/dev/null
tern_forget_pid "$REDIS_PID"
sleep 1
tern_redis "$REDIS_EXTRA" || { fail redis_restart "redis-server did not start again"; exit 1; }
if qwait_ids k $N 450; then
    pass redis_sigkill_nothing_lost
else
    fail redis_sigkill_nothing_lost "$(qids k) of $N delivered, $(qleft k) left"
fi
echo "info: after SIGKILL: $(qlines k) deliveries for $N messages"
qstop "$KPID" && pass engine_stops_cleanly_after_sigkill ||
    fail engine_stops_cleanly_after_sigkill "$(tail -n 3 "$dir/k.rerr")"
[ "$TERN_FAILS" -eq 0 ]
