#!/bin/bash
# it_policy.sh - TLS policy against real receivers on loopback:
#  - tls = encrypt never falls back: no STARTTLS offered, or STARTTLS refused
#    (454): nothing reaches the receiver, mail stays queued with the reason;
#  - tls = may with STARTTLS refused: delivered in plaintext, recorded so;
#  - tls = may against a TLS 1.0-only receiver: the preferred tier fails,
#    the legacy tier is remembered for the host, mail is delivered and the
#    tier recorded as legacy;
#  - an OpenSSL-based receiver (Python aiosmtpd): TLS 1.3, verified against
#    the test CA, so tern is not only BoringSSL talking to itself.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
tern_test_env
events() { for p in $(seq 0 15); do rcli xrange "tern:{$p}:events" - +; done; }
stat() { $TERN queue -c "$1" stats | awk -v k="$2" '$1==k{print $2}'; }

run_case() {   # name, tls level, messages, sink args...
    local name=$1 level=$2 n=$3; shift 3
    rcli flushall >/dev/null
    tern_sink "$name" --record "$dir/$name.rec" --quiet "$@" || return 1
    tern_config "$dir/$name.conf" <<EOC
threads = 1
tls = $level
ca_file = $CERTS/ca.pem
route * = localhost:$SINK_PORT
EOC
    $TERN inject -c "$dir/$name.conf" --generate "$n" --domains "$name.test" --size 500 >/dev/null
    timeout 60 $TERN run -c "$dir/$name.conf" --drain >"$dir/$name.out" 2>"$dir/$name.err"
    touch "$dir/$name.rec"
    kill "$SINK_PID"
}

run_case strip encrypt 5 --no-starttls
[ "$(wc -l <"$dir/strip.rec")" -eq 0 ] && [ "$(stat "$dir/strip.conf" scheduled)" = 5 ] \
    && events | grep -q 'STARTTLS not offered' \
    && pass encrypt_no_starttls_fails_closed || fail encrypt_no_starttls_fails_closed \
    "received $(wc -l <"$dir/strip.rec"), scheduled $(stat "$dir/strip.conf" scheduled)"

run_case refused encrypt 5 --cert "$CERTS/server.pem" --key "$CERTS/server.key" --starttls-reply "454 4.7.0 TLS not available"
[ "$(wc -l <"$dir/refused.rec")" -eq 0 ] && [ "$(stat "$dir/refused.conf" scheduled)" = 5 ] \
    && events | grep -q 'STARTTLS refused' \
    && pass encrypt_454_fails_closed || fail encrypt_454_fails_closed "received $(wc -l <"$dir/refused.rec")"

run_case mayref may 5 --cert "$CERTS/server.pem" --key "$CERTS/server.key" --starttls-reply "454 4.7.0 TLS not available"
[ "$(wc -l <"$dir/mayref.rec")" -eq 5 ] && grep -q 'plaintext=5' "$dir/mayref.out" \
    && pass may_454_delivers_plaintext || fail may_454_delivers_plaintext "$(grep summary "$dir/mayref.out")"

run_case tls10 may 20 --cert "$CERTS/server.pem" --key "$CERTS/server.key" --tls-min 1.0 --tls-max 1.0 \
    --ciphers ECDHE-ECDSA-AES128-SHA
got=$(wc -l <"$dir/tls10.rec")
v10=$(cut -f5 "$dir/tls10.rec" | grep -c '^TLSv1$')
if [ "$got" -eq 20 ] && [ "$v10" -eq 20 ] && grep -q 'legacy 20' "$dir/tls10.out"; then
    pass may_tls10_legacy_tier
else
    fail may_tls10_legacy_tier "received $got, TLSv1 $v10; $(grep tiers "$dir/tls10.out")"
fi
events | grep -qx legacy && pass tls10_event_tier_legacy || fail tls10_event_tier_legacy "no legacy tier in events"

# OpenSSL-based receiver: aiosmtpd with STARTTLS.
rcli flushall >/dev/null
/usr/bin/python3 tests/openssl_receiver.py "$dir/aio.port" "$dir/aio.rec" "$CERTS/server.pem" "$CERTS/server.key" 2>"$dir/aio.err" &
TERN_PIDS="$TERN_PIDS $!"
if tern_wait_file "$dir/aio.port" 100; then
    tern_config "$dir/aio.conf" <<EOC
threads = 1
ca_file = $CERTS/ca.pem
route * = localhost:$(cat "$dir/aio.port")
EOC
    $TERN inject -c "$dir/aio.conf" --generate 10 --domains aio.test --size 500 >/dev/null
    timeout 60 $TERN run -c "$dir/aio.conf" --drain >"$dir/aio.out" 2>"$dir/aio.err2"
    n=$(wc -l <"$dir/aio.rec" 2>/dev/null || echo 0)
    [ "$n" -eq 10 ] && grep -q 'TLSv1.3' "$dir/aio.out" && [ "$(cut -f3 "$dir/aio.rec" | sort -u)" = TLSv1.3 ] \
        && pass openssl_receiver_tls13 \
        || fail openssl_receiver_tls13 "received $n; $(grep -E 'seen|summary' "$dir/aio.out")"
    ver=$(events | grep -A1 -x verified | grep -cx yes)
    [ "$ver" -eq 10 ] && pass openssl_receiver_verified || fail openssl_receiver_verified "$ver of 10 verified"
else
    fail openssl_receiver_tls13 "aiosmtpd did not start: $(cat "$dir/aio.err")"
fi
exit $TERN_FAILS
