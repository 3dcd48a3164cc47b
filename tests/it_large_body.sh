#!/bin/bash
# it_large_body.sh - bodies longer than SMTP_OUT_REF_MIN (16 KiB), which the
# SMTP client sends from the message itself instead of copying them into
# its output (engine/smtp_client.h, smtp_client_output), arrive intact:
#  a. DATA over STARTTLS: 40 messages of ~200 KiB whose lines start with
#     '.' every ~20 KiB (the runs between stuffed dots go out by
#     reference, the dots and the terminator as bytes), two threads,
#     several transactions per connection; every body byte-identical at
#     the sink (SHA-256 of the unstuffed DATA), each delivered once;
#  b. the same messages with BDAT (the sink offers CHUNKING);
#  c. the same in plaintext (no TLS: the pieces are copied into the send
#     buffer instead of being encrypted).
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
tern_test_env
PY=/usr/bin/python3
N=40
RUN_LIMIT=60

# One ~200 KiB message, CRLF line ends (so the queued data is what the
# sink hashes), a line starting with '.' every 280 lines (~20 KiB), and
# one right at the start of the body.
"$PY" - "$dir/big.eml" <<'EOF'
import sys
lines = ["Subject: large body", "From: a@x.test", "", ".first line starts with a dot"]
for i in range(2800):
    s = "".join(chr(97 + (i + k) % 26) for k in range(70))
    lines.append(("." + s) if i % 280 == 279 else s)
lines.append("..two dots")
open(sys.argv[1], "wb").write(("\r\n".join(lines) + "\r\n").encode())
EOF
want=$(sha256sum <"$dir/big.eml" | cut -d' ' -f1)

# run NAME SINK-ARGS... : N messages through a fresh sink; checks.
run() {
    local name=$1; shift
    rcli flushall >/dev/null
    if ! tern_sink "$name" "$@" --record "$dir/$name.rec" --quiet; then
        fail "${name}_sink" "sink did not start"
        return
    fi
    local tls="ca_file = $CERTS/ca.pem"
    case " $* " in *" --no-starttls "*) tls="tls = may" ;; esac
    tern_config "$dir/$name.conf" <<EOC
threads = 2
route * = 127.0.0.1:$SINK_PORT
$tls
EOC
    local i
    for i in $(seq 1 $N); do
        $TERN inject -c "$dir/$name.conf" --from a@x.test --to "r$i@d$((i % 3)).test" "$dir/big.eml" >/dev/null ||
            fail "${name}_inject" "inject $i failed"
    done
    timeout "$RUN_LIMIT" $TERN run -c "$dir/$name.conf" --drain >"$dir/$name.out" 2>"$dir/$name.err"
    local rc=$?
    [ $rc -eq 0 ] && pass "${name}_run" || fail "${name}_run" "rc=$rc $(tail -n 2 "$dir/$name.err" | tr '\n' ' ')"
    local got same once
    got=$(wc -l <"$dir/$name.rec")
    same=$(cut -f4 "$dir/$name.rec" | grep -c "^$want$")
    once=$(cut -f2 "$dir/$name.rec" | sort -u | wc -l)
    [ "$got" -eq $N ] && [ "$same" -eq $N ] && [ "$once" -eq $N ] && pass "${name}_bytes_identical" ||
        fail "${name}_bytes_identical" "$got received, $same with the queued SHA-256, $once distinct recipients"
    local proto=TLSv1.3 tlsn
    [ "$tls" = "tls = may" ] && proto=-
    tlsn=$(cut -f5 "$dir/$name.rec" | grep -c -- "^$proto$")
    [ "$tlsn" -eq $N ] && pass "${name}_transport_$proto" || fail "${name}_transport_$proto" "$tlsn of $N"
    kill "$SINK_PID" 2>/dev/null
    wait "$SINK_PID" 2>/dev/null
    tern_forget_pid "$SINK_PID"
}

run data --cert "$CERTS/server.pem" --key "$CERTS/server.key"
run bdat --cert "$CERTS/server.pem" --key "$CERTS/server.key" --chunking
run plain --no-starttls

exit $TERN_FAILS
