#!/bin/bash
# it_tls_check.sh - `tern tls-check` against tern-sink on loopback:
#  - a valid chain under verify: exit 0, the chain printed, the second
#    connection resumes;
#  - a certificate for another name under verify: exit 1, hostname mismatch;
#  - no STARTTLS: encrypt fails (exit 1), may passes in plaintext (exit 0),
#    none never asks;
#  - STARTTLS refused (454) under encrypt: exit 1;
#  - a TLS 1.0-only receiver under may: the preferred tier fails, the
#    legacy tier is reached, exit 0; a TLS 1.2 CBC-only receiver under
#    encrypt reaches the sufficient tier;
#  - fingerprint: the certificate's and the public key's SHA-256 (as
#    openssl computes them) pass, a wrong pin fails;
#  - a server that sends no tickets: "resumption: no";
#  - a server that requires a client certificate: --client-cert passes,
#    without one verify fails and may passes (plaintext, as delivery would);
#  - a server that never speaks: the timeout ends it, exit 1; nobody
#    listening: exit 1, also under may;
#  - a bad option: exit 2.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
tern_test_setup
tern_certs || exit 1

if ! $TERN tls-check --help >/dev/null 2>&1; then
    fail tls_check_command "$TERN has no tls-check command (engine/main.c must call tls_check_main)"
    exit $TERN_FAILS
fi

SRV=(--cert "$CERTS/server.pem" --key "$CERTS/server.key")
tern_sink good "${SRV[@]}" || exit 1; GOOD=$SINK_PORT
tern_sink wrong --cert "$CERTS/wrongname.pem" --key "$CERTS/wrongname.key" || exit 1; WRONG=$SINK_PORT
tern_sink plain --no-starttls || exit 1; PLAIN=$SINK_PORT
tern_sink refused "${SRV[@]}" --starttls-reply "454 4.7.0 TLS not available" || exit 1; REFUSED=$SINK_PORT
tern_sink tls10 "${SRV[@]}" --tls-min 1.0 --tls-max 1.0 --ciphers ECDHE-ECDSA-AES128-SHA || exit 1; TLS10=$SINK_PORT
tern_sink cbc "${SRV[@]}" --tls-min 1.2 --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-SHA || exit 1; CBC=$SINK_PORT
tern_sink notickets "${SRV[@]}" --no-tickets || exit 1; NOTICKETS=$SINK_PORT
tern_sink needcert "${SRV[@]}" --require-client-cert "$CERTS/ca.pem" || exit 1; NEEDCERT=$SINK_PORT

# check NAME ARGS...: runs tls-check into $dir/NAME.out, sets rc and last.
check() {
    local name=$1; shift
    timeout 60 $TERN tls-check --helo tern.test --timeout 10 "$@" >"$dir/$name.out" 2>&1
    rc=$?
    last=$(tail -n 1 "$dir/$name.out")
}
# expect NAME RC LAST-LINE-PREFIX [PATTERN...]: each pattern must be in the output.
expect() {
    local name=$1 want=$2 prefix=$3; shift 3
    local why=""
    [ "$rc" -eq "$want" ] || why="exit $rc, want $want"
    case $last in "$prefix"*) ;; *) why="$why; last line \"$last\", want \"$prefix...\"" ;; esac
    for pat in "$@"; do
        grep -qF -- "$pat" "$dir/$name.out" || why="$why; no \"$pat\""
    done
    if [ -z "$why" ]; then pass "$name"; else fail "$name" "${why#; } ($(tr '\n' '|' <"$dir/$name.out" | tail -c 600))"; fi
}

check verify_ok --policy verify --ca-file "$CERTS/ca.pem" "localhost:$GOOD"
expect verify_ok 0 "PASS: verify: TLSv1.3 (tier preferred), verified (ok)" \
    "greeting: 220 " "EHLO: STARTTLS yes, PIPELINING yes" "tier reached: preferred" \
    "certificate chain: 2 certificates" "[0] subject: CN=mx.test" \
    "issuer:  CN=tern test intermediate" "[1] subject: CN=tern test intermediate" \
    "issuer:  CN=tern test root" \
    "names:   DNS:localhost, DNS:mx.test, DNS:*.wild.test, IP:127.0.0.1" \
    "key:     EC P-256" "verification: verified (ok)" "resumption: yes"

# The printed hashes are the ones openssl computes, ready for --pin.
CERT_PIN=$(openssl x509 -in "$CERTS/server.pem" -outform DER | sha256sum | cut -c1-64)
SPKI_PIN=$(openssl x509 -in "$CERTS/server.pem" -pubkey -noout | openssl pkey -pubin -outform DER |
    sha256sum | cut -c1-64)
grep -qx "      sha256 of certificate: $CERT_PIN" "$dir/verify_ok.out" &&
    grep -qx "      sha256 of public key:  $SPKI_PIN" "$dir/verify_ok.out" &&
    pass chain_hashes_match_openssl || fail chain_hashes_match_openssl "want $CERT_PIN / $SPKI_PIN"

check verify_wrongname --policy verify --ca-file "$CERTS/ca.pem" "localhost:$WRONG"
expect verify_wrongname 1 "FAIL: certificate verification: hostname mismatch" \
    "[0] subject: CN=other.test"

check verify_untrusted --policy verify "localhost:$GOOD"
expect verify_untrusted 1 "FAIL: certificate verification: unable to get local issuer certificate"

check secure_domain --policy secure --ca-file "$CERTS/ca.pem" --domain mx.test "127.0.0.1:$GOOD"
expect secure_domain 0 "PASS: secure:"
check secure_wrong_domain --policy secure --ca-file "$CERTS/ca.pem" --domain example.org "localhost:$GOOD"
expect secure_wrong_domain 1 "FAIL: certificate verification: hostname mismatch"

check encrypt_no_starttls --policy encrypt "127.0.0.1:$PLAIN"
expect encrypt_no_starttls 1 "FAIL: STARTTLS not offered" "EHLO: STARTTLS no"
check may_no_starttls --policy may "127.0.0.1:$PLAIN"
expect may_no_starttls 0 "PASS: may: plaintext, STARTTLS not offered"
check none_plaintext --policy none "127.0.0.1:$GOOD"
expect none_plaintext 0 "PASS: none: plaintext" "EHLO: STARTTLS yes"
grep -q '^TLS' "$dir/none_plaintext.out" && fail none_never_starts_tls "TLS attempted" \
    || pass none_never_starts_tls
check encrypt_refused --policy encrypt "127.0.0.1:$REFUSED"
expect encrypt_refused 1 "FAIL: STARTTLS refused" "refused: 454 4.7.0 TLS not available"

check may_tls10 --policy may --ca-file "$CERTS/ca.pem" "localhost:$TLS10"
expect may_tls10 0 "PASS: may: TLSv1 (tier legacy)" \
    "== attempt 1: offering tier preferred" "(negotiation: a lower tier may work)" \
    "== attempt 2: offering tier legacy" "tier reached: legacy"
check encrypt_tls10 --policy encrypt "localhost:$TLS10"
expect encrypt_tls10 1 "FAIL: TLS: " "== attempt 2: offering tier sufficient"
grep -q "attempt 3" "$dir/encrypt_tls10.out" && fail encrypt_stays_above_tls12 "legacy tier offered" \
    || pass encrypt_stays_above_tls12
check encrypt_cbc --policy encrypt "localhost:$CBC"
expect encrypt_cbc 0 "PASS: encrypt: TLSv1.2 (tier sufficient), not verified" \
    "tier reached: sufficient"

check pin_cert --policy fingerprint --pin "$CERT_PIN" "localhost:$GOOD"
expect pin_cert 0 "PASS: fingerprint: TLSv1.3 (tier preferred), verified (ok)"
check pin_spki_with_colons --policy fingerprint --pin "$(echo "$SPKI_PIN" | sed 's/../&:/g; s/:$//')" "localhost:$GOOD"
expect pin_spki_with_colons 0 "PASS: fingerprint:"
check pin_wrong --policy fingerprint --pin "$(printf '%064d' 0)" "localhost:$GOOD"
expect pin_wrong 1 "FAIL: certificate verification: fingerprint mismatch"

check no_tickets --policy encrypt "localhost:$NOTICKETS"
expect no_tickets 0 "PASS: encrypt:" "resumption: no (the server gave no session to resume)"

check client_cert --ca-file "$CERTS/ca.pem" --client-cert "$CERTS/client.pem" \
    --client-key "$CERTS/client.key" "localhost:$NEEDCERT"
expect client_cert 0 "PASS: verify:" "resumption: yes"
check client_cert_missing --ca-file "$CERTS/ca.pem" "localhost:$NEEDCERT"
expect client_cert_missing 1 "FAIL: TLS: " "TLS failed after the handshake: "
check may_tls_fails --policy may "localhost:$NEEDCERT"
expect may_tls_fails 0 "PASS: may: plaintext, TLS failed: "

# A server that accepts and then says nothing.
/usr/bin/python3 -c '
import socket, sys, time, os
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(4)
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1])); os.rename(sys.argv[1] + ".tmp", sys.argv[1])
conns = []
while True:
    c, _ = s.accept(); conns.append(c)
' "$dir/mute.port" &
TERN_PIDS="$TERN_PIDS $!"
if tern_wait_file "$dir/mute.port" 100; then
    start=$(date +%s)
    timeout 30 $TERN tls-check --timeout 1 "127.0.0.1:$(cat "$dir/mute.port")" >"$dir/mute.out" 2>&1
    rc=$?; last=$(tail -n 1 "$dir/mute.out")
    expect mute 1 "FAIL: connection: timed out waiting for the server"
    [ $(($(date +%s) - start)) -le 5 ] && pass timeout_bounds_wait || fail timeout_bounds_wait "took too long"
else
    fail mute "silent listener did not start"
fi

# A port that is bound but not listening: connecting is refused, and
# holding the bind keeps any other socket (or an ephemeral self-connect)
# off it for the duration of the check.
/usr/bin/python3 -c '
import os, socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0))
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1])); os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(120)
' "$dir/closed.port" &
TERN_PIDS="$TERN_PIDS $!"
if tern_wait_file "$dir/closed.port" 100; then
    check refused_connect --policy may "127.0.0.1:$(cat "$dir/closed.port")"
    expect refused_connect 1 "FAIL: cannot connect: Connection refused"
else
    fail refused_connect "could not bind a closed port"
fi

check usage --policy bogus localhost
expect usage 2 "tern tls-check: bogus: unknown level"
check usage_port --port 25 localhost:26
expect usage_port 2 "tern tls-check: two different ports given"

exit $TERN_FAILS
