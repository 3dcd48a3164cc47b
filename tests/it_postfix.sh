#!/bin/bash
# it_postfix.sh - interop with a real receiver: tern delivers to a private
# Postfix smtpd (bench/postfix.sh: its own directories, loopback only),
# which offers PIPELINING and CHUNKING, so tern sends BDAT with several
# transactions in flight on a connection (docs/design.md, pipelined
# transactions). Postfix relays everything on to tern-sink:
#  - every message reaches the sink once (and the bounce below);
#  - tern pipelined transactions, and Postfix logged no pipelining
#    complaint, no rejection and sent each message;
#  - one of the recipients refused by Postfix (a recipient restriction)
#    bounces with Postfix's reply, the rest of the pipeline delivered;
#  - then Postfix stops offering CHUNKING (smtpd_discard_ehlo_keywords):
#    tern sends DATA, with the next MAIL/RCPT/DATA behind each final dot,
#    every message delivered and relayed, no pipelining complaint;
#  - one message per connection (max_messages_per_connection = 1): QUIT
#    goes right behind each final dot; every message delivered and
#    relayed, each session ended by that QUIT (Postfix counts quit=1),
#    no complaint.
# Needs Postfix (scripts/install-bench-deps.sh) and root to start it;
# without them the test says SKIP and passes nothing.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/postfix.sh
if ! pf_available || [ "$(id -u)" -ne 0 ]; then
    echo "SKIP it_postfix: Postfix not installed or not root (scripts/install-bench-deps.sh)"
    exit 0
fi
tern_test_env
PFROOT=$(mktemp -d /tmp/tern-pf.XXXXXX)
chmod 755 "$PFROOT"
trap 'pf_stop; rm -rf "$PFROOT"; tern_cleanup; rm -rf "$dir"' EXIT
N=300

tern_sink relay --cert "$CERTS/server.pem" --key "$CERTS/server.key" --quiet \
    --record "$dir/relay.rec" --stats-file "$dir/relay.stats" || { fail postfix_started "sink"; exit 1; }
if ! pf_start "$PFROOT/pf" "$SINK_PORT" "$CERTS/ca.pem"; then
    fail postfix_started "$PF_ERROR"
    exit 1
fi
# One refused recipient domain, to see a refusal inside a pipeline.
postconf -c "$PFROOT/pf/etc" -e \
    'smtpd_recipient_restrictions = check_recipient_access inline:{ { refused.test = 550 5.7.1 no mail for refused.test } }, permit_mynetworks, reject' &&
    postfix -c "$PFROOT/pf/etc" reload >/dev/null 2>&1
sleep 0.5

tern_config "$dir/t.conf" <<EOC
threads = 1
tls = may
route * = 127.0.0.1:$PF_PORT
max_transactions_in_flight = 8
EOC
$TERN inject -c "$dir/t.conf" --generate "$N" --domains a.test,b.test --size 2000 >/dev/null
printf 'Subject: refused\r\n\r\nno\r\n' | $TERN inject -c "$dir/t.conf" --from sender@a.test --to nobody@refused.test >/dev/null
timeout 120 $TERN run -c "$dir/t.conf" --drain >"$dir/t.out" 2>"$dir/t.err"
sum=$(grep '^summary ' "$dir/t.out")
kv() { tr ' ' '\n' <<<"$sum" | sed -n "s/^$1=//p"; }

[ "$(kv delivered)" = $((N + 1)) ] && [ "$(kv failed)" = 1 ] && pass postfix_tern_delivered ||
    fail postfix_tern_delivered "$sum $(tail -3 "$dir/t.err" | tr '\n' ' ')"
# Postfix relays on its own schedule: wait for the sink to count the N
# messages and the bounce for the refused recipient (to sender@a.test,
# through Postfix too); then no more may come (each once).
sunk() { sed -n 's/^messages=//p' "$dir/relay.stats" 2>/dev/null; }
n=600
while [ "$n" -gt 0 ] && [ "$(sunk)" != $((N + 1)) ]; do
    sleep 0.1
    n=$((n - 1))
done
sleep 0.5
[ "$(sunk)" = $((N + 1)) ] && pass postfix_relayed_each_once ||
    fail postfix_relayed_each_once "sink has $(sunk), want $((N + 1))"
piped=$(kv pipelined)
[ "${piped:-0}" -gt 0 ] && pass postfix_pipelined_transactions ||
    fail postfix_pipelined_transactions "tern pipelined ${piped:-none}"
log=$PFROOT/pf/log/maillog
# (A connection lost "after CONNECT" is the start-up probe. One still
# opening when the queue runs dry says QUIT once READY: it used to be
# closed mid-EHLO, which Postfix logged as "lost connection after EHLO".)
bad='improper command pipelining|protocol error|lost connection after (EHLO|MAIL|RCPT|DATA|BDAT|END-OF-MESSAGE)'
if grep -qiE "$bad" "$log"; then
    fail postfix_no_complaints "$(grep -iE "$bad" "$log" | head -2)"
else
    pass postfix_no_complaints
fi
sent=$(grep -c 'status=sent' "$log")
[ "$sent" -ge "$N" ] && pass postfix_sent_each || fail postfix_sent_each "status=sent $sent, want >= $N"
grep -q 'no mail for refused.test' "$log" && grep -q '"reply".*\|5.7.1' <(for p in $(seq 0 15); do rcli xrange "tern:{$p}:events" - +; done) &&
    pass postfix_refusal_in_pipeline || fail postfix_refusal_in_pipeline "$(grep -c 'refused.test' "$log") log lines"

# DATA only: PIPELINING without CHUNKING, the next transaction behind
# each final dot (smtp_client.h, PIPELINED TRANSACTIONS).
M=100
postconf -c "$PFROOT/pf/etc" -e 'smtpd_discard_ehlo_keywords = chunking' &&
    postfix -c "$PFROOT/pf/etc" reload >/dev/null 2>&1
sleep 0.5
$TERN inject -c "$dir/t.conf" --generate "$M" --domains c.test --size 2000 >/dev/null
timeout 120 $TERN run -c "$dir/t.conf" --drain >"$dir/t2.out" 2>"$dir/t2.err"
sum=$(grep '^summary ' "$dir/t2.out")
[ "$(kv delivered)" = "$M" ] && [ "$(kv failed)" = 0 ] && pass postfix_data_delivered ||
    fail postfix_data_delivered "$sum $(tail -3 "$dir/t2.err" | tr '\n' ' ')"
piped=$(kv pipelined)
[ "${piped:-0}" -gt 0 ] && pass postfix_data_pipelined ||
    fail postfix_data_pipelined "tern pipelined ${piped:-none}"
n=600
while [ "$n" -gt 0 ] && [ "$(sunk)" != $((N + 1 + M)) ]; do
    sleep 0.1
    n=$((n - 1))
done
sleep 0.5
[ "$(sunk)" = $((N + 1 + M)) ] && pass postfix_data_relayed_each_once ||
    fail postfix_data_relayed_each_once "sink has $(sunk), want $((N + 1 + M))"
# (Postfix logs the keywords it drops: proof the sessions had no CHUNKING.)
grep -q 'discarding EHLO keywords: CHUNKING' "$log" && pass postfix_data_without_chunking ||
    fail postfix_data_without_chunking "Postfix still offered CHUNKING"
if grep -qiE "$bad" "$log"; then
    fail postfix_data_no_complaints "$(grep -iE "$bad" "$log" | head -2)"
else
    pass postfix_data_no_complaints
fi

# One message per connection: QUIT behind the final dot (docs/design.md).
Q=20
tern_config "$dir/t3.conf" <<EOC
threads = 1
tls = may
route * = 127.0.0.1:$PF_PORT
max_messages_per_connection = 1
EOC
$TERN inject -c "$dir/t3.conf" --generate "$Q" --domains d.test --size 2000 >/dev/null
before=$(grep -c 'quit=1' "$log")
timeout 120 $TERN run -c "$dir/t3.conf" --drain >"$dir/t3.out" 2>"$dir/t3.err"
sum=$(grep '^summary ' "$dir/t3.out")
[ "$(kv delivered)" = "$Q" ] && [ "$(kv conns)" = "$Q" ] && pass postfix_quit_behind_delivered ||
    fail postfix_quit_behind_delivered "$sum $(tail -3 "$dir/t3.err" | tr '\n' ' ')"
n=600
while [ "$n" -gt 0 ] && [ "$(sunk)" != $((N + 1 + M + Q)) ]; do
    sleep 0.1
    n=$((n - 1))
done
sleep 0.5
[ "$(sunk)" = $((N + 1 + M + Q)) ] && pass postfix_quit_behind_relayed_each_once ||
    fail postfix_quit_behind_relayed_each_once "sink has $(sunk), want $((N + 1 + M + Q))"
quits=$(( $(grep -c 'quit=1' "$log") - before ))
[ "$quits" -ge "$Q" ] && pass postfix_quit_behind_counted ||
    fail postfix_quit_behind_counted "$quits sessions ended by QUIT, want >= $Q"
if grep -qiE "$bad" "$log"; then
    fail postfix_quit_behind_no_complaints "$(grep -iE "$bad" "$log" | head -2)"
else
    pass postfix_quit_behind_no_complaints
fi
exit $((TERN_FAILS > 0))
