#!/bin/bash
# it_exim.sh - interop with a second real receiver: tern delivers to a
# private Exim (bench/exim.sh: Debian's binary, its own directories,
# loopback only), whose STARTTLS is GnuTLS, not BoringSSL or OpenSSL, and
# whose SMTP server checks pipelining strictly (a command sent before it
# may be is a "synchronization error"). Exim relays everything on to
# tern-sink.
#  a. CHUNKING offered: tern verifies Exim's certificate (tls = verify, the
#     test CA, the MX name), TLS 1.3, BDAT with transactions pipelined;
#     every message accepted by Exim over TLS 1.3 with CHUNKING, one
#     recipient refused by Exim (550 in the middle of a pipeline) bounces,
#     the rest delivered; TLS sessions resumed on later connections (Exim
#     issues TLS 1.3 tickets); everything relayed to the sink once;
#  b. CHUNKING not offered: DATA, the next MAIL/RCPT/DATA behind each final
#     dot; every message delivered and relayed;
#  c. one message per connection: QUIT right behind each final dot;
#     delivered, relayed, a connection each;
#  and Exim logged no synchronization or protocol error in any of them.
# Needs the unpacked Exim (scripts/install-bench-deps.sh) and root to start
# it; without them the test says SKIP and passes nothing.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/exim.sh
if ! why=$(ex_available); then
    echo "SKIP it_exim: $why"
    exit 0
fi
tern_test_env
# Exim's processes run as its own user: its directories and the CA it
# reads must not be under $dir (mode 700).
EXROOT=$(mktemp -d /tmp/tern-exim.XXXXXX)
chmod 755 "$EXROOT"
cp "$CERTS/ca.pem" "$EXROOT/ca.pem"
chmod 644 "$EXROOT/ca.pem"
trap 'ex_stop; rm -rf "$EXROOT"; tern_cleanup; rm -rf "$dir"' EXIT
EX_SERVER_CERT=$CERTS/server.pem EX_SERVER_KEY=$CERTS/server.key EX_DENY_DOMAIN=refused.test
N=200
sunk() { tern_stat "$dir/relay.stats" messages; }
summary() { grep '^summary ' "$dir/$1.out"; }
kv() { summary "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
exim_errors() {   # protocol complaints in any of Exim's logs
    grep -hiE 'synchroni[sz]ation error|protocol error|SMTP syntax error|unexpected disconnection|TLS error' \
        "$EX_DIR"/log/* 2>/dev/null | head -3
}
received() { grep -c ' <= ' "$EX_DIR/log/mainlog"; }

tern_sink relay --cert "$CERTS/server.pem" --key "$CERTS/server.key" --quiet \
    --stats-file "$dir/relay.stats" || { fail exim_started "sink"; exit 1; }

# run NAME CONFIG-LINES...: inject N messages and drain them to Exim
# (tls = verify); the checks wait for the sink themselves.
run() {
    local name=$1; shift
    {
        echo "threads = 1"
        echo "tls = verify"
        echo "ca_file = $CERTS/ca.pem"
        echo "route * = localhost:$EX_PORT"
        printf '%s\n' "$@"
    } | tern_config "$dir/$name.conf"
    $TERN inject -c "$dir/$name.conf" --generate "$N" --domains a.test,b.test --size 3000 >/dev/null
    timeout 120 $TERN run -c "$dir/$name.conf" --drain >"$dir/$name.out" 2>"$dir/$name.err"
}

# --- a. CHUNKING ----------------------------------------------------------
ex_start "$EXROOT/a" "$SINK_PORT" "$EXROOT/ca.pem" || { fail exim_started "$EX_ERROR"; exit 1; }
printf 'Subject: refused\r\n\r\nno\r\n' >"$dir/refused.eml"
run a "max_transactions_in_flight = 8"
# the refused recipient, queued with the rest of a second batch
$TERN inject -c "$dir/a.conf" --generate 20 --domains a.test --size 3000 >/dev/null
$TERN inject -c "$dir/a.conf" --from sender@a.test --to nobody@refused.test <"$dir/refused.eml" >/dev/null
timeout 120 $TERN run -c "$dir/a.conf" --drain >"$dir/a2.out" 2>"$dir/a2.err"
# a2: the 20, and the bounce of the refused one, to sender@a.test (also
# through Exim)
[ "$(kv a delivered)" = "$N" ] && [ "$(kv a plaintext)" = 0 ] && [ "$(kv a2 delivered)" = 21 ] &&
    [ "$(kv a2 failed)" = 1 ] && grep -q ' <= <> ' "$EX_DIR/log/mainlog" && pass exim_chunking_verified_delivered ||
    fail exim_chunking_verified_delivered "$(summary a) | $(summary a2) $(tail -n 2 "$dir/a2.err" | paste -sd' ' -)"
tls13=$(grep ' <= ' "$EX_DIR/log/mainlog" | grep -c 'X=TLS1.3:')
chunked=$(grep ' <= ' "$EX_DIR/log/mainlog" | grep -c ' K ')
[ "$(received)" = $((N + 21)) ] && [ "$tls13" = $((N + 21)) ] && [ "$chunked" = $((N + 21)) ] &&
    pass exim_received_tls13_chunking ||
    fail exim_received_tls13_chunking "received $(received), TLS 1.3 $tls13, CHUNKING $chunked of $((N + 21))"
grep -q 'no mail for refused.test' "$dir/a2.err" "$dir/a2.out" "$EX_DIR/log/rejectlog" 2>/dev/null &&
    pass exim_refused_recipient_in_pipeline || fail exim_refused_recipient_in_pipeline "no 550 seen"
resumed=$(kv a2 hs_resumed)
[ "${resumed:-0}" -ge 1 ] && pass exim_tls_session_resumed ||
    fail exim_tls_session_resumed "$(summary a2)"
tern_wait_stat "$dir/relay.stats" messages $((N + 21)) 300 && sleep 1.5   # a later runner would relay any duplicate
[ "$(sunk)" = $((N + 21)) ] && pass exim_relayed_each_once || fail exim_relayed_each_once "sink has $(sunk) of $((N + 21))"
errs=$(exim_errors)
[ -z "$errs" ] && pass exim_no_complaint_chunking || fail exim_no_complaint_chunking "$errs"
ex_stop

# --- b. DATA --------------------------------------------------------------
base=$(sunk)
EX_CHUNKING=0
ex_start "$EXROOT/b" "$SINK_PORT" "$EXROOT/ca.pem" || { fail exim_started_data "$EX_ERROR"; exit 1; }
run b "max_transactions_in_flight = 8"
chunked=$(grep ' <= ' "$EX_DIR/log/mainlog" | grep -c ' K ')
[ "$(kv b delivered)" = "$N" ] && [ "$(received)" = "$N" ] && [ "$chunked" = 0 ] &&
    pass exim_data_pipelined_delivered ||
    fail exim_data_pipelined_delivered "$(summary b); Exim received $(received), $chunked with CHUNKING"
tern_wait_stat "$dir/relay.stats" messages $((base + N)) 300
[ "$(sunk)" = $((base + N)) ] && pass exim_data_relayed || fail exim_data_relayed "sink has $(($(sunk) - base)) of $N"
errs=$(exim_errors)
[ -z "$errs" ] && pass exim_no_complaint_data || fail exim_no_complaint_data "$errs"
ex_stop

# --- c. QUIT behind the last message --------------------------------------
base=$(sunk)
EX_CHUNKING=1
N=20
ex_start "$EXROOT/c" "$SINK_PORT" "$EXROOT/ca.pem" || { fail exim_started_quit "$EX_ERROR"; exit 1; }
run c "max_messages_per_connection = 1"
[ "$(kv c delivered)" = "$N" ] && [ "$(kv c conns)" = "$N" ] && [ "$(received)" = "$N" ] &&
    pass exim_quit_behind_delivered || fail exim_quit_behind_delivered "$(summary c); Exim received $(received)"
tern_wait_stat "$dir/relay.stats" messages $((base + N)) 300
[ "$(sunk)" = $((base + N)) ] && pass exim_quit_behind_relayed || fail exim_quit_behind_relayed "sink has $(($(sunk) - base)) of $N"
errs=$(exim_errors)
[ -z "$errs" ] && pass exim_no_complaint_quit || fail exim_no_complaint_quit "$errs"
exit $((TERN_FAILS > 0))
