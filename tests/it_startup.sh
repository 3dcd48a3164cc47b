#!/bin/bash
# it_startup.sh - `tern run` started before its Redis (engine/redis_wait.h):
#  a. tern run starts with no redis-server on the configured socket, logs
#     "waiting for Redis at ADDR", and once redis-server starts there the
#     mail injected is delivered; SIGTERM then stops it (exit 0);
#  b. tern run --drain started while Redis is down (a restart in
#     progress, its AOF holding queued mail): it waits, then delivers
#     everything and exits 0; the notes and warnings at start: Redis's
#     default hash-max-listpack-value gets a note, appendonly yes (as this
#     Redis runs) none, an allkeys-* eviction policy a warning (queued
#     messages could be evicted), noeviction none;
#  c. tern run --drain with Redis never coming up gives up after
#     redis_wait (exit 1, a clear error) instead of hanging;
#  d. SIGTERM while waiting: exit 0, nothing started;
#  e. the listener, started with Redis, answers 451 once Redis is gone
#     (it never accepts mail it cannot store) and 250 again once it is back.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
. tests/queue_lib.sh
tern_test_setup
tern_certs || exit 1
REDIS_EXTRA="--appendonly yes --appendfsync always"
REDIS_ADDR=unix:$dir/redis.sock
REDIS_SOCK=$dir/redis.sock
N=200

qsink s || exit 1
qconf s <<EOC
redis_wait = 2s
EOC
stop_redis() {
    kill -TERM "$REDIS_PID"
    wait "$REDIS_PID" 2>/dev/null
    tern_forget_pid "$REDIS_PID"
}
waitlog() {   # file, pattern: up to 10 s
    local n=100
    while [ "$n" -gt 0 ]; do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
        n=$((n - 1))
    done
    return 1
}

# --- a. tern first, then Redis ------------------------------------------------
qstart s a
TPID=$QPID
waitlog "$dir/s.a.rerr" "waiting for Redis at $REDIS_ADDR" && pass run_waits_for_redis ||
    fail run_waits_for_redis "$(tail -n 3 "$dir/s.a.rerr")"
kill -0 "$TPID" 2>/dev/null && pass run_alive_without_redis || fail run_alive_without_redis "exited"
tern_redis "$REDIS_EXTRA" || exit 1
"$TERN" inject -c "$dir/s.conf" --generate $N --domains a.test,b.test --size 1k >/dev/null ||
    fail inject "tern inject failed"
qwait_ids s $N 300 && pass run_delivers_after_redis_starts ||
    fail run_delivers_after_redis_starts "$(qids s) of $N delivered: $(tail -n 3 "$dir/s.a.rerr")"
tern_stop "$TPID" && pass run_stops_cleanly || fail run_stops_cleanly "exit $?"

# --- b. --drain through a Redis restart ------------------------------------------
"$TERN" inject -c "$dir/s.conf" --generate $N --domains c.test --size 1k >/dev/null ||
    fail inject "tern inject failed"
stop_redis
tern_bg 60 "$dir/b.run" "$dir/b.rerr" "$TERN" run -c "$dir/s.conf" --drain
DPID=$TERN_BG_PID
waitlog "$dir/b.rerr" "waiting for Redis" || fail drain_waits "$(cat "$dir/b.rerr")"
sleep 0.5
tern_redis "$REDIS_EXTRA" || exit 1
wait "$DPID"
rc=$?
tern_forget_pid "$DPID"
if [ "$rc" = 0 ] && qwait_ids s $((2 * N)) 50; then
    pass drain_waits_then_delivers
else
    fail drain_waits_then_delivers "exit $rc, $(qids s) of $((2 * N)): $(tail -n 3 "$dir/b.rerr")"
fi
# Redis's own default hash-max-listpack-value (64) gets a note at start;
# a value above the usual message size gets none.
grep -q "tern: note: Redis hash-max-listpack-value is 64" "$dir/b.rerr" && pass start_note_listpack ||
    fail start_note_listpack "$(head -n 3 "$dir/b.rerr")"
! grep -q "tern: warning: Redis maxmemory-policy" "$dir/b.rerr" && pass start_no_eviction_warning ||
    fail start_no_eviction_warning "$(grep 'warning' "$dir/b.rerr")"
rcli config set hash-max-listpack-value 8192 >/dev/null
timeout -k 5 30 "$TERN" run -c "$dir/s.conf" --drain >"$dir/b2.run" 2>"$dir/b2.rerr"
! grep -q "tern: note: Redis hash-max-listpack-value" "$dir/b2.rerr" && pass start_no_note_when_tuned ||
    fail start_no_note_when_tuned "$(grep 'note' "$dir/b2.rerr")"
# This Redis runs with the AOF (REDIS_EXTRA): no note about it (the note
# for a Redis without it: it_queue_redis).
! grep -q "tern: note: Redis appendonly" "$dir/b2.rerr" && pass start_no_aof_note_with_aof ||
    fail start_no_aof_note_with_aof "$(grep 'note' "$dir/b2.rerr")"
# A Redis that may evict keys (allkeys-*) gets a warning: queued messages could vanish.
rcli config set maxmemory-policy allkeys-lru >/dev/null
timeout -k 5 30 "$TERN" run -c "$dir/s.conf" --drain >"$dir/b3.run" 2>"$dir/b3.rerr"
grep -q "tern: warning: Redis maxmemory-policy is allkeys-lru: " "$dir/b3.rerr" &&
    pass start_warns_eviction_policy || fail start_warns_eviction_policy "$(head -n 3 "$dir/b3.rerr")"
rcli config set maxmemory-policy noeviction >/dev/null

# --- c. --drain, Redis never comes up: bounded by redis_wait -----------------------
stop_redis
timeout -k 5 30 "$TERN" run -c "$dir/s.conf" --drain >"$dir/c.run" 2>"$dir/c.rerr"
rc=$?
if [ "$rc" = 1 ] && grep -q "Redis at $REDIS_ADDR not usable after 2.0 s of waiting" "$dir/c.rerr"; then
    pass drain_gives_up_after_redis_wait
else
    fail drain_gives_up_after_redis_wait "exit $rc: $(tail -n 2 "$dir/c.rerr")"
fi

# --- d. SIGTERM while waiting -----------------------------------------------------------
qstart s d
TPID=$QPID
waitlog "$dir/s.d.rerr" "waiting for Redis" || true
if tern_stop "$TPID" && grep -q "SIGTERM while waiting for Redis" "$dir/s.d.rerr"; then
    pass sigterm_while_waiting
else
    fail sigterm_while_waiting "$(tail -n 2 "$dir/s.d.rerr")"
fi

# --- e. the listener while Redis is away ------------------------------------------------
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
qconf l <<EOC
listen = 127.0.0.1:$PORT
listen_allow = 127.0.0.0/8
EOC
tern_redis "$REDIS_EXTRA" || exit 1
qstart l
TPID=$QPID
send() {   # prints the reply code to the data, or "refused"
    /usr/bin/python3 - "$PORT" <<'EOP'
import smtplib, sys
try:
    s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20)
    s.sendmail("a@src.test", ["b@d.test"], "Subject: x\r\n\r\nbody\r\n")
    print(250)
    s.quit()
except smtplib.SMTPDataError as e:
    print(e.smtp_code)
except smtplib.SMTPResponseException as e:
    print(e.smtp_code)
except OSError:
    print("refused")
EOP
}
up=
for _ in $(seq 50); do up=$(send); [ "$up" = 250 ] && break; sleep 0.1; done
[ "$up" = 250 ] && pass listener_250_with_redis || fail listener_250_with_redis "got $up"
stop_redis
code=$(send)
[ "$code" = 451 ] && pass listener_451_while_redis_away || fail listener_451_while_redis_away "got $code"
tern_redis "$REDIS_EXTRA" || exit 1
code=
for _ in $(seq 50); do code=$(send); [ "$code" = 250 ] && break; sleep 0.2; done
[ "$code" = 250 ] && pass listener_250_after_redis_back || fail listener_250_after_redis_back "got $code"
tern_stop "$TPID" || fail listener_run_stops "exit $?"

exit $((TERN_FAILS > 0))
