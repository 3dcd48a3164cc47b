#!/bin/bash
# it_queue_oom.sh - Redis at maxmemory (maxmemory-policy noeviction, the
# limit set just below what the queue already holds):
#  a. new mail is refused: `tern inject` fails with Redis's OOM error and
#     stores nothing;
#  b. the engine still drains the queue: the take and ack scripts run at
#     maxmemory (allow-oom), so every message is delivered once, every ack
#     is applied (none refused, nothing left leased) and Redis's memory
#     goes down;
#  c. a bounce made at maxmemory is stored with the ack that removes its
#     message (the report script runs at maxmemory too) and delivered: the
#     sender gets the DSN for the rejected recipient.
# Against tests/rcpt_peer.py (reject* 550, others 250).
set -u
cd "$(dirname "$0")/.."
. tests/queue_lib.sh
qsetup || exit 1
qrcpt_peer
qconf o <<EOC
partitions = 4
EOC
C=$dir/o.conf
N=300
"$TERN" inject -c "$C" --generate $N --domains a.test,b.test,c.test --size 4000 >/dev/null ||
    fail inject "generate failed"
printf 'Subject: to be bounced\r\n\r\nhello\r\n' |
    "$TERN" inject -c "$C" --from sender@s.test --to reject1@r.test >/dev/null || fail inject "inject failed"
mem() { rcli info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p' | tr -d '\r'; }
before=$(mem)
rcli config set maxmemory-policy noeviction >/dev/null
rcli config set maxmemory $((before - 100000)) >/dev/null

# a. new mail is refused at maxmemory
printf 'Subject: refused\r\n\r\nno room\r\n' |
    "$TERN" inject -c "$C" --from x@s.test --to y@r.test >"$dir/refused.out" 2>"$dir/refused.err"
rc=$?
[ "$rc" != 0 ] && grep -q 'OOM' "$dir/refused.err" && pass inject_refused_at_maxmemory ||
    fail inject_refused_at_maxmemory "exit $rc: $(cat "$dir/refused.err")"

# b. the queue drains
timeout "$QRUN_LIMIT" "$TERN" run -c "$C" --drain >"$dir/o.run" 2>"$dir/o.rerr" ||
    fail drain "exit $?: $(tail -n 3 "$dir/o.rerr")"
got=$(grep -l 'Subject: ' "$dir"/mail/*.eml 2>/dev/null | wc -l)
leased=0
for p in 0 1 2 3; do leased=$((leased + $(rcli zcard "tern:{$p}:leased"))); done
after=$(mem)
if ! grep -q 'ack on partition' "$dir/o.rerr" && [ "$leased" = 0 ] && [ "$(qleft o)" = 0 ] &&
    [ "$after" -lt "$before" ]; then
    pass drains_at_maxmemory
else
    fail drains_at_maxmemory "leased $leased, left $(qleft o), memory $before -> $after: $(grep 'failed' "$dir/o.rerr" | head -n 2)"
fi
ids=$(cat "$dir"/mail/*.eml | grep -c '^Message-ID: ')
[ "$(grep -c '^summary delivered=' "$dir/o.run")" = 1 ] && [ "$ids" -ge $N ] &&
    pass every_message_delivered || fail every_message_delivered "$ids Message-IDs in $got mails"

# c. the bounce went in at maxmemory and out to the sender
dsn=$(grep -lF 'Final-Recipient: rfc822; reject1@r.test' "$dir"/mail/*.eml 2>/dev/null | wc -l)
[ "$dsn" = 1 ] && pass bounce_stored_at_maxmemory ||
    fail bounce_stored_at_maxmemory "$dsn DSNs for reject1: $(grep 'bounce' "$dir/o.rerr" | head -n 2)"
[ "$TERN_FAILS" -eq 0 ]
