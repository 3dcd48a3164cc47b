#!/bin/bash
# it_robust.sh - bad input gets a clear error and loses nothing:
#  - tern inject refuses bad addresses and oversize messages (exit 2, nothing in Redis);
#  - a malformed config is refused with file, line and reason; a client
#    certificate that cannot work (RSA-1024) fails check-config and stops
#    tern run;
#  - a peer that sends a malformed reply, drops the connection after the
#    final dot, or closes after the greeting: the engine keeps running and
#    every message is delivered (after the final dot: counted as in doubt).
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
tern_test_setup
tern_redis || exit 1

tern_config "$dir/t.conf" <<EOC
threads = 1
route * = 127.0.0.1:9
max_message_size = 2k
EOC
printf 'Subject: hi\r\n\r\nbody\r\n' >"$dir/msg"
check_refused() {   # name, expected message part, args...
    local name=$1 want=$2; shift 2
    local before after out rc
    before=$(rcli dbsize)
    out=$($TERN inject -c "$dir/t.conf" "$@" <"$dir/msg" 2>&1)
    rc=$?
    after=$(rcli dbsize)
    if [ $rc -eq 2 ] && [ "$before" = "$after" ] && echo "$out" | grep -qi -- "$want"; then
        pass "$name"
    else
        fail "$name" "rc=$rc dbsize $before->$after out=$out"
    fi
}
check_refused inject_rcpt_space "rcpt\|recipient\|space" --from a@x.test --to "b c@y.test"
check_refused inject_rcpt_crlf "rcpt\|recipient\|CR\|LF\|control" --from a@x.test --to "$(printf 'b@y.test\r\nRCPT TO:<evil@z>')"
check_refused inject_from_unbalanced "bracket\|sender\|from" --from "<a@x.test" --to b@y.test
check_refused inject_rcpt_nodomain "domain\|@" --from a@x.test --to b
check_refused inject_second_rcpt_bad "rcpt\|recipient\|bracket" --from a@x.test --to "ok@y.test,bad>@y.test"
head -c 5000 /dev/zero | tr '\0' 'x' >"$dir/big"
before=$(rcli dbsize)
out=$($TERN inject -c "$dir/t.conf" --from a@x.test --to b@y.test "$dir/big" 2>&1); rc=$?
[ $rc -eq 2 ] && [ "$(rcli dbsize)" = "$before" ] && echo "$out" | grep -q max_message_size \
    && pass inject_oversize || fail inject_oversize "rc=$rc $out"
out=$($TERN inject -c "$dir/t.conf" --from "<a@x.test>" --to "b@y.test,c@z.test" "$dir/msg" 2>&1); rc=$?
[ $rc -eq 0 ] && [ "$($TERN queue -c "$dir/t.conf" stats | awk '$1=="ready"{print $2}')" = 2 ] \
    && pass inject_good_two_domains || fail inject_good_two_domains "rc=$rc $out"

printf 'threads = 1\nroute * = 127.0.0.1:25\nnonsense here = 3\n' >"$dir/bad.conf"
out=$($TERN run -c "$dir/bad.conf" 2>&1); rc=$?
[ $rc -eq 2 ] && echo "$out" | grep -q "$dir/bad.conf:3: nonsense: unknown key" \
    && pass config_refused_with_line || fail config_refused_with_line "rc=$rc $out"
out=$($TERN check-config -c "$dir/bad.conf" 2>&1); rc=$?
[ $rc -eq 2 ] && pass check_config_exit2 || fail check_config_exit2 "rc=$rc"

# Certificates we would present: a weak one stops `tern run` and fails
# check-config with the reason; a good one passes with notes.
tern_certs || exit 1
printf 'client_cert = %s\nclient_key = %s\n' "$CERTS/rsa1024.pem" "$CERTS/rsa1024.key" |
    tern_config "$dir/weak.conf"
out=$($TERN check-config -c "$dir/weak.conf" 2>&1); rc=$?
[ $rc -eq 1 ] && echo "$out" | grep -q "rsa1024.pem: error: key is RSA 1024 bits" \
    && pass check_config_weak_client_cert || fail check_config_weak_client_cert "rc=$rc $out"
out=$(timeout 20 $TERN run -c "$dir/weak.conf" --drain 2>&1); rc=$?
[ $rc -eq 2 ] && echo "$out" | grep -q "refusing to start" \
    && pass run_refuses_weak_client_cert || fail run_refuses_weak_client_cert "rc=$rc $out"
printf 'client_cert = %s\nclient_key = %s\nca_file = %s\n' "$CERTS/client.pem" "$CERTS/client.key" \
    "$CERTS/ca.pem" | tern_config "$dir/goodcc.conf"
out=$($TERN check-config -c "$dir/goodcc.conf" 2>&1); rc=$?
[ $rc -eq 0 ] && echo "$out" | grep -q "client.pem: note: key EC P-256" && echo "$out" | grep -q "private CA" \
    && pass check_config_good_client_cert || fail check_config_good_client_cert "rc=$rc $out"

for mode in malformed-mail drop-after-dot drop-greeting garbage-greeting; do
    rcli flushall >/dev/null
    rm -f "$dir/peer.port" "$dir/$mode.rec"
    /usr/bin/python3 tests/hostile_peer.py "$dir/peer.port" "$dir/$mode.rec" "$mode" &
    ppid=$!
    TERN_PIDS="$TERN_PIDS $ppid"
    tern_wait_file "$dir/peer.port" 100 || { fail "$mode" "peer did not start"; continue; }
    tern_config "$dir/$mode.conf" <<EOC
threads = 1
route * = 127.0.0.1:$(cat "$dir/peer.port")
max_connections = 1
EOC
    $TERN inject -c "$dir/$mode.conf" --generate 5 --domains h.test --size 300 >/dev/null
    timeout 60 $TERN run -c "$dir/$mode.conf" --drain >"$dir/$mode.out" 2>"$dir/$mode.err"
    rc=$?
    got=$(wc -l <"$dir/$mode.rec" 2>/dev/null || echo 0)
    left=$($TERN queue -c "$dir/$mode.conf" stats | awk '$1=="ready"||$1=="leased"||$1=="scheduled"{r+=$2} END{print r}')
    if [ $rc -eq 0 ] && [ "$got" -ge 5 ] && [ "$left" = 0 ] && grep -q 'delivered=5 ' "$dir/$mode.out"; then
        pass "peer_$mode"
    else
        fail "peer_$mode" "rc=$rc received=$got left=$left $(grep summary "$dir/$mode.out") $(tail -n 2 "$dir/$mode.err")"
    fi
    if [ "$mode" = drop-after-dot ]; then
        grep -q 'in_doubt=1 ' "$dir/$mode.out" && grep -q 'possible duplicate' "$dir/$mode.err" \
            && pass in_doubt_counted_and_logged || fail in_doubt_counted_and_logged "$(grep summary "$dir/$mode.out")"
    fi
    kill "$ppid" 2>/dev/null
done
exit $TERN_FAILS
