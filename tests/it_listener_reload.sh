#!/bin/bash
# it_listener_reload.sh - the listener's certificates and credentials
# replaced while it runs (SIGHUP, listener_reload), end to end:
#  - after the files change and tern gets SIGHUP, the new certificate's
#    subject, key and expiry are logged, and a new STARTTLS session is
#    given it (its SHA-256 compared with the file's);
#  - a session that started TLS before the reload goes on with the old
#    context and has its message queued (the old set is kept for it);
#  - the credentials file read again with the certificates: a password
#    that changed no longer passes (not even from the auth cache, where it
#    was), the new one does, and a user added can log in;
#  - SIGHUP with a broken certificate file, an expired certificate, then a
#    broken credentials file: the reason is logged, the listener keeps
#    what it had;
#  - tern stops cleanly (exit 0, no sanitizer report); the summary counts
#    one reload.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
tern_test_env

PORT=$(tern_free_port)
cp "$CERTS/server.pem" "$dir/cur.pem"
cp "$CERTS/server.key" "$dir/cur.key"
hash() { echo -n "$1" | $TERN passwd; }
echo "dave:$(hash 'old pass')" >"$dir/users"
tern_sink s --cert "$CERTS/server.pem" --key "$CERTS/server.key" --quiet || exit 1
tern_config "$dir/t.conf" <<EOC
threads = 1
route * = 127.0.0.1:$SINK_PORT
ca_file = $CERTS/ca.pem
listen = 127.0.0.1:$PORT tls=required cert=$dir/cur.pem key=$dir/cur.key
listen_allow = 127.0.0.1/32
auth_file = $dir/users
listen_received = no
EOC
$TERN run -c "$dir/t.conf" >"$dir/run.out" 2>"$dir/run.err" &
RUN_PID=$!
TERN_PIDS="$TERN_PIDS $RUN_PID"

# fp: the SHA-256 of the certificate a new STARTTLS session is given.
fp() {
    python3 - "$PORT" <<'EOP'
import hashlib, smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10)
s.starttls(context=ctx)
print(hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest())
s.quit()
EOP
}
file_fp() { openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }
# login USER PASS: "235" or the error code of AUTH over STARTTLS.
login() {
    python3 - "$PORT" "$1" "$2" <<'EOP'
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10)
s.starttls(context=ctx)
try:
    s.login(sys.argv[2], sys.argv[3])
    print(235)
except smtplib.SMTPAuthenticationError as e:
    print(e.smtp_code)
s.quit()
EOP
}

up=0
for _ in $(seq 50); do
    fp >/dev/null 2>&1 && { up=1; break; }
    sleep 0.1
done
[ $up = 1 ] || { fail listener_up "$(cat "$dir/run.err")"; exit 1; }
old=$(file_fp "$CERTS/server.pem")
new=$(file_fp "$CERTS/rsa2048.pem")
[ "$(fp)" = "$old" ] && pass first_certificate || fail first_certificate "not server.pem"
[ "$(login dave 'old pass')" = 235 ] && [ "$(login dave 'old pass')" = 235 ] && pass first_password ||
    fail first_password "dave's first password refused"

# A session that starts TLS now and sends its message after the reload.
mkfifo "$dir/go"
python3 - "$PORT" "$dir/go" >"$dir/held.out" 2>&1 <<'EOP' &
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20)
s.starttls(context=ctx)
s.ehlo("held.test")
print("tls up", flush=True)
open(sys.argv[2]).read()           # until the reload is done
s.sendmail("a@src.test", ["held@dst.test"], "Subject: held\r\n\r\nacross a reload\r\n")
print("queued", flush=True)
s.quit()
EOP
held=$!
for _ in $(seq 50); do grep -q 'tls up' "$dir/held.out" && break; sleep 0.1; done

cp "$CERTS/rsa2048.pem" "$dir/cur.pem"
cp "$CERTS/rsa2048.key" "$dir/cur.key"
{ echo "dave:$(hash 'new pass')"; echo "erin:$(hash 'erin pass')"; } >"$dir/users"
kill -HUP "$RUN_PID"
tern_wait_file_grep() { for _ in $(seq 50); do grep -q "$2" "$1" && return 0; sleep 0.1; done; return 1; }
tern_wait_file_grep "$dir/run.err" 'SIGHUP: listener certificates and credentials reloaded' &&
    grep -q 'cur.pem: note: key RSA 2048 bits' "$dir/run.err" && pass sighup_logged ||
    fail sighup_logged "$(tail -3 "$dir/run.err")"
got=""
for _ in $(seq 20); do got=$(fp); [ "$got" = "$new" ] && break; sleep 0.1; done
[ "$got" = "$new" ] && pass new_sessions_get_new_certificate || fail new_sessions_get_new_certificate "got $got"
echo go >"$dir/go"
wait "$held"
grep -q '^queued' "$dir/held.out" && pass session_across_reload_queued ||
    fail session_across_reload_queued "$(tail -3 "$dir/held.out")"
a=$(login dave 'old pass') b=$(login dave 'new pass') e=$(login erin 'erin pass')
[ "$a $b $e" = "535 235 235" ] && pass credentials_reloaded || fail credentials_reloaded "old/new/erin: $a $b $e"

echo "not a certificate" >"$dir/cur.pem"
kill -HUP "$RUN_PID"
tern_wait_file_grep "$dir/run.err" 'keeps its certificates' && pass bad_reload_refused ||
    fail bad_reload_refused "$(tail -3 "$dir/run.err")"
[ "$(fp)" = "$new" ] && pass bad_reload_keeps_certificate || fail bad_reload_keeps_certificate "certificate changed"
# an expired certificate: the check `tern run` starts with refuses it
cp "$CERTS/expired.pem" "$dir/cur.pem"
cp "$CERTS/expired.key" "$dir/cur.key"
n0=$(grep -c 'keeps its certificates' "$dir/run.err")
kill -HUP "$RUN_PID"
for _ in $(seq 50); do [ "$(grep -c 'keeps its certificates' "$dir/run.err")" -gt "$n0" ] && break; sleep 0.1; done
grep -q 'expired' "$dir/run.err" && [ "$(grep -c 'keeps its certificates' "$dir/run.err")" -gt "$n0" ] &&
    [ "$(fp)" = "$new" ] && pass expired_certificate_refused || fail expired_certificate_refused "$(tail -3 "$dir/run.err")"
cp "$CERTS/rsa2048.pem" "$dir/cur.pem"
cp "$CERTS/rsa2048.key" "$dir/cur.key"
echo "no colon here" >"$dir/users"
n0=$(grep -c 'keeps its certificates' "$dir/run.err")
kill -HUP "$RUN_PID"
for _ in $(seq 50); do [ "$(grep -c 'keeps its certificates' "$dir/run.err")" -gt "$n0" ] && break; sleep 0.1; done
[ "$(grep -c 'keeps its certificates' "$dir/run.err")" -gt "$n0" ] && [ "$(login dave 'new pass')" = 235 ] &&
    pass bad_credentials_keep_old || fail bad_credentials_keep_old "$(tail -2 "$dir/run.err")"

tern_stop "$RUN_PID"; rc=$?
[ $rc -eq 0 ] && ! grep -qE 'Sanitizer|runtime error' "$dir/run.err" && pass run_exit0_clean ||
    fail run_exit0_clean "rc=$rc $(grep -E -m3 'Sanitizer|runtime error|SUMMARY' "$dir/run.err")"
grep -qE '^listener: .* reloads=1$' "$dir/run.out" && pass summary_counts_reload ||
    fail summary_counts_reload "$(grep '^listener:' "$dir/run.out")"
[ "$TERN_FAILS" -eq 0 ]
