#!/bin/bash
# it_listener_auth.sh - the listener's memory of verified credentials
# (listen_auth_cache, engine/auth_cache.h), end to end with swaks over
# STARTTLS. The user's hash is a costly yescrypt (~0.5 s a check here), so
# that sessions overlap a check:
#  - four sessions that AUTH at once with the same credentials: all 235,
#    one password check among them (two allowed: on a loaded machine one
#    swaks may reach AUTH after the first check is done; four would mean
#    nothing was shared);
#  - the next session with them: 235 from the cache, no check;
#  - a wrong password after that: 535, checked (failures are never kept);
#  - listen_auth_cache = 0: every AUTH is checked.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
tern_test_env


# yescrypt at cost 10 (tern passwd uses libxcrypt's default, 5: ~20 ms)
hash=$(python3 - <<'EOP' 2>/dev/null
import ctypes, crypt
lc = ctypes.CDLL("libcrypt.so.1")
lc.crypt_gensalt.restype = ctypes.c_char_p
lc.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
print(crypt.crypt("carol pass", lc.crypt_gensalt(b"$y$", 10, None, 0).decode()))
EOP
)
case $hash in '$y$'*) ;; *) fail costly_hash "python3 could not make a yescrypt hash: [$hash]"; exit 1 ;; esac
echo "carol:$hash" >"$dir/users"

tern_sink s --cert "$CERTS/server.pem" --key "$CERTS/server.key" --quiet || exit 1
PORT=$(tern_free_port)
tern_config "$dir/t.conf" <<EOC
threads = 1
route * = 127.0.0.1:$SINK_PORT
ca_file = $CERTS/ca.pem
listen = 127.0.0.1:$PORT tls=required cert=$CERTS/server.pem key=$CERTS/server.key
auth_file = $dir/users
listen_received = no
EOC

start() {   # config, output
    $TERN run -c "$1" >"$2" 2>"$2.err" &
    RUN_PID=$!
    TERN_PIDS="$TERN_PIDS $RUN_PID"
    for _ in $(seq 50); do
        swaks --server 127.0.0.1:$PORT --quit-after EHLO >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail listener_up "no listener on $PORT: $(cat "$2.err")"
    exit 1
}
sw() {   # output, password
    swaks --server "127.0.0.1:$PORT" --ehlo client.test --from a@src.test --to b@dst.test --tls \
        --auth PLAIN --auth-user carol --auth-password "$2" >"$1" 2>&1
}
summary() { grep '^listener:' "$1"; }

start "$dir/t.conf" "$dir/run.out"
pids=""
for i in 1 2 3 4; do
    sw "$dir/c$i" 'carol pass' &
    pids="$pids $!"
done
# shellcheck disable=SC2086
wait $pids
ok=0
for i in 1 2 3 4; do grep -q '^<~  235 2.7.0' "$dir/c$i" && ok=$((ok + 1)); done
[ $ok -eq 4 ] && pass concurrent_auth_all_235 || fail concurrent_auth_all_235 "$ok of 4: $(grep -h '535\|454' "$dir"/c? | head -3)"
sw "$dir/c5" 'carol pass'
grep -q '^<~  235 2.7.0' "$dir/c5" && pass cached_auth_235 || fail cached_auth_235 "$(grep '^<~' "$dir/c5" | tail -3)"
sw "$dir/c6" 'carol wrong'
grep -qE '^<~?\*+ 535 5.7.8' "$dir/c6" && pass wrong_password_after_cache_535 ||
    fail wrong_password_after_cache_535 "$(grep '^<~' "$dir/c6" | tail -3)"
tern_stop "$RUN_PID"
s=$(summary "$dir/run.out")
# one check for the four that overlapped, none for the fifth, one for the wrong password
echo "$s" | grep -qE ' auth_ok=5 auth_failed=1 auth_cached=1 auth_checks=[23] reloads=0$' && pass one_check_per_credentials ||
    fail one_check_per_credentials "$s"

# listen_auth_cache = 0: each AUTH is a check of its own
{ cat "$dir/t.conf"; echo "listen_auth_cache = 0"; } >"$dir/off.conf"
start "$dir/off.conf" "$dir/run2.out"
sw "$dir/d1" 'carol pass'
sw "$dir/d2" 'carol pass'
tern_stop "$RUN_PID"
s=$(summary "$dir/run2.out")
grep -q '^<~  235 2.7.0' "$dir/d2" && echo "$s" | grep -qE ' auth_ok=2 auth_failed=0 auth_cached=0 auth_checks=2 reloads=0$' &&
    pass cache_off_checks_each || fail cache_off_checks_each "$s"
[ "$TERN_FAILS" -eq 0 ]
