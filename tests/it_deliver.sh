#!/bin/bash
# it_deliver.sh - end to end: real redis-server, the sink, tern run.
#  - 2,000 messages to 20 domains over STARTTLS: all delivered exactly once,
#    byte-identical (SHA-256 of what the sink received vs what was queued),
#    TLS 1.3 recorded in the events; the start notes that this Redis runs
#    without the AOF;
#  - the same against a sink without STARTTLS: delivered in plaintext and
#    recorded as plaintext;
#  - a receiver answering 4xx: nothing is lost, every message stays queued;
#  - SIGTERM while delivering: exits, nothing lost.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
tern_test_env

domains=$(seq -f "d%g.test" 1 20 | paste -sd, -)

# --- 1. TLS 1.3, 2,000 messages, 20 domains --------------------------------
tern_sink tls --cert "$CERTS/server.pem" --key "$CERTS/server.key" --record "$dir/tls.rec" --quiet || exit 1
tern_config "$dir/tls.conf" <<EOC
threads = 2
route * = 127.0.0.1:$SINK_PORT
ca_file = $CERTS/ca.pem
EOC
$TERN inject -c "$dir/tls.conf" --generate 2000 --domains "$domains" --size 2048 >/dev/null || fail tls_inject "inject failed"
# What was queued: hash every body before delivery.
for p in $(seq 0 15); do
    rcli --scan --pattern "tern:{$p}:m:*" | while read -r k; do
        rcli --raw hget "$k" data | head -c -1 | sha256sum | cut -d' ' -f1
    done
done | sort >"$dir/queued.sha"
$TERN run -c "$dir/tls.conf" --drain >"$dir/run1.out" 2>"$dir/run1.err"
rc=$?
[ $rc -eq 0 ] && pass tls_run_exit0 || { fail tls_run_exit0 "rc=$rc"; cat "$dir/run1.err"; }
n=$(wc -l <"$dir/tls.rec")
[ "$n" -eq 2000 ] && pass tls_all_delivered || fail tls_all_delivered "sink got $n of 2000"
dups=$(cut -f2,4 "$dir/tls.rec" | sort | uniq -d | wc -l)
[ "$dups" -eq 0 ] && pass tls_exactly_once || fail tls_exactly_once "$dups duplicates"
cut -f4 "$dir/tls.rec" | sort >"$dir/got.sha"
# The sink hashes the unstuffed DATA (CRLF line endings); generated bodies are CRLF already.
if [ "$(wc -l <"$dir/queued.sha")" -eq 2000 ] && cmp -s "$dir/queued.sha" "$dir/got.sha"; then
    pass tls_bytes_identical
else
    fail tls_bytes_identical "SHA-256 of received bodies differ from queued ($(wc -l <"$dir/queued.sha") queued hashes)"
fi
v13=$(cut -f5 "$dir/tls.rec" | grep -c '^TLSv1.3$')
[ "$v13" -eq 2000 ] && pass tls_13_on_sink || fail tls_13_on_sink "$v13 of 2000 over TLS 1.3"
grep -q '^summary delivered=2000 ' "$dir/run1.out" && pass tls_summary || fail tls_summary "$(tail -n 3 "$dir/run1.out")"
# The test Redis keeps nothing on disk: the start says what a crash would lose.
grep -q '^tern: note: Redis appendonly is off: ' "$dir/run1.err" && pass start_note_no_aof ||
    fail start_note_no_aof "$(head -n 3 "$dir/run1.err")"
ready=$($TERN queue -c "$dir/tls.conf" stats | awk '$1=="ready"{r+=$2} $1=="leased"{r+=$2} $1=="scheduled"{r+=$2} END{print r}')
[ "$ready" = 0 ] && pass tls_queue_empty || fail tls_queue_empty "ready+leased+scheduled=$ready"
ev=$(for p in $(seq 0 15); do rcli xrevrange "tern:{$p}:events" + - COUNT 5; done | grep -c 'TLSv1.3')
[ "$ev" -ge 1 ] && pass tls_events_record_tls13 || fail tls_events_record_tls13 "no TLSv1.3 in events"
kill "$SINK_PID"

# --- 2. no STARTTLS: plaintext, recorded as such ----------------------------
tern_sink plain --no-starttls --record "$dir/plain.rec" --quiet || exit 1
tern_config "$dir/plain.conf" <<EOC
threads = 1
route * = 127.0.0.1:$SINK_PORT
EOC
$TERN inject -c "$dir/plain.conf" --generate 50 --domains a.test,b.test --size 1024 >/dev/null
$TERN run -c "$dir/plain.conf" --drain >"$dir/run2.out" 2>"$dir/run2.err"
n=$(wc -l <"$dir/plain.rec")
[ "$n" -eq 50 ] && pass plain_delivered || fail plain_delivered "sink got $n of 50"
grep -q 'plaintext=50' "$dir/run2.out" && pass plain_summary_plaintext || fail plain_summary_plaintext "$(grep summary "$dir/run2.out")"
pt=$(for p in $(seq 0 15); do rcli xrange "tern:{$p}:events" - +; done | grep -c '^plaintext$')
[ "$pt" -eq 50 ] && pass plain_events_tier_plaintext || fail plain_events_tier_plaintext "$pt events say plaintext"
tls_yes=$(cut -f5 "$dir/plain.rec" | grep -vc '^-$')
[ "$tls_yes" -eq 0 ] && pass plain_no_tls_on_sink || fail plain_no_tls_on_sink "$tls_yes with TLS"
kill "$SINK_PID"

# --- 3. receiver answers 4xx: everything stays queued -----------------------
tern_sink busy --cert "$CERTS/server.pem" --key "$CERTS/server.key" --data-reply "451 4.3.0 try again later" --quiet || exit 1
tern_config "$dir/busy.conf" <<EOC
threads = 1
route * = 127.0.0.1:$SINK_PORT
EOC
before=$($TERN queue -c "$dir/busy.conf" stats | awk '$1=="enqueued"{print $2}')
$TERN inject -c "$dir/busy.conf" --generate 30 --domains busy.test --size 512 >/dev/null
$TERN run -c "$dir/busy.conf" --drain >"$dir/run3.out" 2>"$dir/run3.err"
sched=$($TERN queue -c "$dir/busy.conf" stats | awk '$1=="scheduled"{print $2}')
[ "$sched" -eq 30 ] && pass busy_4xx_stays_queued || fail busy_4xx_stays_queued "scheduled=$sched (want 30)"
grep -q 'deferred=30 ' "$dir/run3.out" && pass busy_summary_deferred || fail busy_summary_deferred "$(grep summary "$dir/run3.out")"
kill "$SINK_PID"

# --- 4. SIGTERM mid-run: nothing lost ---------------------------------------
tern_sink slow --cert "$CERTS/server.pem" --key "$CERTS/server.key" --record "$dir/slow.rec" --quiet || exit 1
tern_config "$dir/term.conf" <<EOC
threads = 2
route * = 127.0.0.1:$SINK_PORT
EOC
rcli flushall >/dev/null
$TERN inject -c "$dir/term.conf" --generate 20000 --domains "$domains" --size 1024 >/dev/null
$TERN run -c "$dir/term.conf" >"$dir/run4.out" 2>"$dir/run4.err" &
tpid=$!
TERN_PIDS="$TERN_PIDS $tpid"
sleep 1
kill -TERM $tpid
wait $tpid
rc=$?
[ $rc -eq 0 ] && pass sigterm_exit0 || fail sigterm_exit0 "rc=$rc $(tail -n 3 "$dir/run4.err")"
got=$(wc -l <"$dir/slow.rec")
left=$($TERN queue -c "$dir/term.conf" stats | awk '$1=="ready"||$1=="leased"||$1=="scheduled"{r+=$2} END{print r}')
leased=$($TERN queue -c "$dir/term.conf" stats | awk '$1=="leased"{print $2}')
[ $((got + left)) -ge 20000 ] && pass sigterm_nothing_lost || fail sigterm_nothing_lost "delivered $got + queued $left < 20000"
[ "$leased" -eq 0 ] && pass sigterm_no_leases_left || fail sigterm_no_leases_left "leased=$leased"

exit $TERN_FAILS
