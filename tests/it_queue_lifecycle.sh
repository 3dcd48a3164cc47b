#!/bin/bash
# it_queue_lifecycle.sh - a message's life, end to end, against a receiver
# that answers each recipient on its own (tests/rcpt_peer.py: defer* 451,
# reject* 550, others 250); retry_schedule = 1h 2h, delay_warning = 1h:
#  a. per recipient: one message to ok1, defer1, reject1 delivers ok1,
#     keeps defer1 (alone) scheduled 1h ahead, fails reject1;
#  b. the 5xx produces one DSN to the sender (null sender, multipart/report,
#     Action: failed, Status 5.1.1 from the RCPT reply, the original
#     header); a message from the
#     null sender that fails produces none;
#  c. the events stream, read with a consumer group (XREADGROUP), has the
#     outcome with each recipient list, mx, ip, reply and attempt;
#  d. once older than delay_warning, the next deferral sends one delay
#     report (Action: delayed) and is scheduled by the schedule's second
#     step; a later deferral sends none (the last step repeats);
#  e. past max_age the message expires: a 4.4.7 DSN, an `expired` event,
#     and it leaves the queue;
#  f. the same attempt of a message failing again (its first ack lost:
#     played by copying the message back) enqueues its report under the
#     same id, finds it queued, and queues no second one
#     (`reports_repeated=1`; the report's own domain is unreachable, so it
#     stays queued between the two runs).
# `tern queue retry` makes a scheduled message due at once.
set -u
cd "$(dirname "$0")/.."
. tests/queue_lib.sh
qsetup || exit 1
PY=/usr/bin/python3
qrcpt_peer
qconf s <<EOC
partitions = 1
retry_schedule = 1h 2h
delay_warning = 1h
EOC
C=$dir/s.conf
S='tern:{0}'
drain() { timeout "$QRUN_LIMIT" "$TERN" run -c "$C" --drain >>"$dir/s.run" 2>>"$dir/s.rerr"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# mails PATTERN: received messages containing PATTERN (grep -F)
mails() { grep -lF -- "$1" "$dir"/mail/*.eml 2>/dev/null | wc -l; }
# due_in_s: seconds until the one scheduled message's next attempt
due_in_s() { echo $((($(rcli zrange "$S:sched" 0 0 withscores | sed -n 2p) - $(now_ms)) / 1000)); }

rcli xgroup create "$S:events" audit '$' mkstream >/dev/null
printf 'Subject: lifecycle one\r\nMessage-ID: <one@s.test>\r\n\r\nhello\r\n' |
    "$TERN" inject -c "$C" --from sender@s.test --to ok1@r.test,defer1@r.test,reject1@r.test >/dev/null
printf 'Subject: a bounce\r\n\r\nbounce\r\n' | "$TERN" inject -c "$C" --from '<>' --to reject2@r.test >/dev/null
drain || fail drain "exit $?: $(tail -n 3 "$dir/s.rerr")"

# --- a. per recipient --------------------------------------------------------------
id=$(rcli zrange "$S:sched" 0 -1)
[ "$(mails 'RCPT <ok1@r.test>')" = 1 ] && [ "$(echo "$id" | wc -w)" = 1 ] &&
    [ "$(rcli hget "$S:m:$id" rcpts)" = defer1@r.test ] && [ "$(rcli hget "$S:m:$id" attempts)" = 1 ] &&
    pass per_recipient_outcomes ||
    fail per_recipient_outcomes "ok1 mails $(mails 'RCPT <ok1@r.test>'), scheduled '$id' rcpts $(rcli hget "$S:m:$id" rcpts)"
due=$(due_in_s)
[ "$due" -gt 3500 ] && [ "$due" -le 3600 ] && pass retry_schedule_first_step ||
    fail retry_schedule_first_step "next attempt in $due s, want about 3600"

# --- b. the bounce --------------------------------------------------------------------
dsn=$(grep -lF 'Final-Recipient: rfc822; reject1@r.test' "$dir"/mail/*.eml 2>/dev/null)
if [ "$(echo "$dsn" | grep -c .)" = 1 ] && head -n 1 "$dsn" | grep -qx 'MAIL <>' &&
    grep -qF 'RCPT <sender@s.test>' "$dsn" && grep -q 'multipart/report; report-type=delivery-status' "$dsn" &&
    grep -q '^Action: failed' "$dsn" && grep -q '^Status: 5\.1\.1' "$dsn" &&
    grep -q '^Diagnostic-Code: smtp; 550 5\.1\.1' "$dsn" &&
    grep -q '^Subject: lifecycle one' "$dsn"; then
    pass dsn_for_5xx
else
    fail dsn_for_5xx "$(ls "$dir/mail")"
fi
[ "$(mails 'reject2@r.test')" = 0 ] && pass no_bounce_for_a_bounce ||
    fail no_bounce_for_a_bounce "$(mails 'reject2@r.test') reports mention reject2"

# --- c. events through a consumer group ---------------------------------------------
$PY - "$REDIS_SOCK" >"$dir/ev.out" <<'EOF'
import sys
sys.path.insert(0, "tests")
from resp_client import Redis
cmd = Redis(sys.argv[1]).cmd
r = cmd("XREADGROUP", "GROUP", "audit", "t1", "COUNT", "100", "STREAMS", "tern:{0}:events", ">")
for eid, kv in r[0][1]:
    d = dict(zip(kv[::2], kv[1::2]))
    print("%s|%s|%s|%s|%s|%s|%s|%s|%s" % (d.get("status"), d.get("delivered"), d.get("deferred"),
          d.get("failed"), d.get("attempt"), d.get("mx"), d.get("ip"), d.get("reply", "").split(" ")[0], eid))
    cmd("XACK", "tern:{0}:events", "audit", eid)
print("pending", cmd("XPENDING", "tern:{0}:events", "audit")[0])
EOF
if grep -q "^deferred|ok1@r.test|defer1@r.test|reject1@r.test|1|127.0.0.1:$SINK_PORT|127.0.0.1|250|" "$dir/ev.out" &&
    grep -q '^pending 0$' "$dir/ev.out"; then
    pass events_consumer_group
else
    fail events_consumer_group "$(cat "$dir/ev.out")"
fi

# --- d. delay warning -----------------------------------------------------------------
rcli hset "$S:m:$id" created $(($(now_ms) - 2 * 3600 * 1000)) >/dev/null
"$TERN" queue -c "$C" retry >/dev/null
drain || fail drain "exit $?"
due=$(due_in_s)
warn=$(grep -lF 'Action: delayed' "$dir"/mail/*.eml 2>/dev/null | wc -l)
[ "$warn" = 1 ] && [ "$(rcli hget "$S:m:$id" warned)" = yes ] && [ "$(rcli hget "$S:m:$id" attempts)" = 2 ] &&
    pass delay_warning_sent || fail delay_warning_sent "$warn delay reports, warned=$(rcli hget "$S:m:$id" warned)"
[ "$due" -gt 7100 ] && [ "$due" -le 7200 ] && pass retry_schedule_second_step ||
    fail retry_schedule_second_step "next attempt in $due s, want about 7200"
"$TERN" queue -c "$C" retry >/dev/null
drain || fail drain "exit $?"
due=$(due_in_s)
warn=$(grep -lF 'Action: delayed' "$dir"/mail/*.eml 2>/dev/null | wc -l)
[ "$warn" = 1 ] && [ "$due" -gt 7100 ] && [ "$due" -le 7200 ] && pass delay_warning_once_last_step_repeats ||
    fail delay_warning_once_last_step_repeats "$warn delay reports, next attempt in $due s"

# --- e. expiry ----------------------------------------------------------------------------
rcli hset "$S:m:$id" created $(($(now_ms) - 6 * 86400 * 1000)) >/dev/null
"$TERN" queue -c "$C" retry >/dev/null
drain || fail drain "exit $?"
exp=$(grep -lF 'Status: 4.4.7' "$dir"/mail/*.eml 2>/dev/null)
if [ "$(rcli exists "$S:m:$id")" = 0 ] && [ "$(echo "$exp" | grep -c .)" = 1 ] &&
    grep -qF 'Final-Recipient: rfc822; defer1@r.test' "$exp" &&
    rcli xrange "$S:events" - + | grep -qx expired; then
    pass expiry_bounces
else
    fail expiry_bounces "exists=$(rcli exists "$S:m:$id"), 4.4.7 reports: $(echo "$exp" | grep -c .)"
fi
[ "$(qleft s)" = 0 ] && pass lifecycle_queue_empty || fail lifecycle_queue_empty "$(qleft s) left"

# --- f. a report repeated after a lost ack ---------------------------------------------
C2=$dir/s2.conf
{ cat "$C"; echo "route s2.test = 127.0.0.1:1"; } >"$C2"
printf 'Subject: twice\r\n\r\ntwice\r\n' | "$TERN" inject -c "$C2" --from sender@s2.test --to reject3@r.test >/dev/null
mid=$(rcli lrange "$S:ready" 0 -1)
rcli copy "$S:m:$mid" "$S:copy" >/dev/null
drain2() { timeout "$QRUN_LIMIT" "$TERN" run -c "$C2" --drain >"$dir/s2.run" 2>>"$dir/s2.rerr"; }
drain2 || fail drain "exit $?: $(tail -n 3 "$dir/s2.rerr")"
reports() { for k in $(rcli --scan --pattern "$S:m:*"); do rcli hget "$k" rcpts; done | grep -c '^sender@s2\.test$'; }
first=$(reports)
rcli copy "$S:copy" "$S:m:$mid" >/dev/null
rcli rpush "$S:ready" "$mid" >/dev/null
drain2 || fail drain "exit $?: $(tail -n 3 "$dir/s2.rerr")"
rep=$(sed -n 's/^queue .*reports_repeated=\([0-9]*\).*/\1/p' "$dir/s2.run")
[ "$first" = 1 ] && [ "$(reports)" = 1 ] && [ "$rep" = 1 ] && [ "$(rcli exists "$S:m:$mid")" = 0 ] &&
    pass report_repeated_once || fail report_repeated_once "reports $first then $(reports), reports_repeated=$rep"
[ "$TERN_FAILS" -eq 0 ]
