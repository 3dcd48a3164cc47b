#!/bin/bash
# it_sink.sh - integration test of tern-sink: plaintext, STARTTLS,
# session resumption, STARTTLS injection, BDAT, reply overrides, threads,
# record lines (SHA-256 of the data), stats file, SIGTERM summary; and the
# test knobs: --drop-rate/--drop-seed (every drop point, counted, recorded
# after the dot, deterministic per seed), --reply-delay (late reply, the
# thread keeps serving), --latency (every send held, in order, TLS flights
# included), --abort-handshake (EOF, no alert), SIGUSR1 (ticket
# keys rotated, also under load on two threads), conns_open/peak_conns.
#
# Prints PASS/FAIL lines; exits non-zero when anything failed.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
tern_test_setup
SINK=$TERN_BUILD/tern-sink
PY=/usr/bin/python3
TMP=$dir

if [ ! -x "$SINK" ]; then
    fail it_sink_build "$SINK missing"
    exit 1
fi
tern_certs || { fail it_sink_certs "gen-test-certs.sh failed"; exit 1; }
CERT=$CERTS/server.pem KEY=$CERTS/server.key CA=$CERTS/ca.pem

# start_sink NAME ARGS...: starts a sink with stats and record files; sets
# PORT and SINKPID.
start_sink() {
    local name=$1
    shift
    rm -f "$TMP/$name.stats" "$TMP/$name.rec"
    tern_sink "$name" --stats-file "$TMP/$name.stats" --record "$TMP/$name.rec" "$@" 2>/dev/null ||
        return 1
    PORT=$SINK_PORT SINKPID=$SINK_PID
}

SUMMARY_RE='^tern-sink: messages=[0-9]* .*peak_conns=[0-9]* drops_greeting=[0-9]* '
SUMMARY_RE+='drops_mail=[0-9]* drops_data=[0-9]* drops_dot=[0-9]*'
# stop_sink NAME: SIGTERM, wait, and check exit status 0 + summary line.
stop_sink() {
    local name=$1 rc
    kill -TERM "$SINKPID"
    wait "$SINKPID"
    rc=$?
    tern_forget_pid "$SINKPID"
    if [ "$rc" -ne 0 ]; then
        fail "${name}_sigterm" "exit status $rc; stderr: $(cat "$TMP/$name.err")"
    elif ! tail -n 1 "$TMP/$name.out" | grep -q "$SUMMARY_RE"; then
        fail "${name}_sigterm" "no summary line: $(cat "$TMP/$name.out")"
    else
        pass "${name}_sigterm"
    fi
}

# The SMTP client: a small raw client so the test controls every byte
# (pipelining, injection, BDAT, TLS session reuse).
cat >"$TMP/client.py" <<'EOF'
import hashlib, os, signal, socket, ssl, sys, json, time

def lines_reply(f):
    """Read one (possibly multi-line) reply; return (code, text)."""
    out = []
    while True:
        l = f.readline()
        if not l:
            raise EOFError("connection closed")
        out.append(l.decode().rstrip("\r\n"))
        if len(l) < 4 or l[3:4] != b"-":
            return int(out[-1][:3]), "\n".join(out)

class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.sock.makefile("rb")
        self.tls = None
    def send(self, b):
        (self.tls or self.sock).sendall(b)
    def reply(self):
        return lines_reply(self.f)
    def cmd(self, line):
        self.send(line.encode() + b"\r\n")
        return self.reply()
    def starttls(self, ca, session=None):
        code, _ = self.cmd("STARTTLS")
        assert code == 220, code
        ctx = CTX[ca]
        self.tls = ctx.wrap_socket(self.sock, server_hostname="localhost", session=session)
        self.f = self.tls.makefile("rb")

CTX = {}

def stuff(data):
    out = []
    for line in data.split(b"\r\n"):
        out.append(b"." + line if line.startswith(b".") else line)
    return b"\r\n".join(out)

def rotate(pid, errfile):
    """SIGUSR1 to the sink; return once it says the keys changed."""
    os.kill(pid, signal.SIGUSR1)
    for _ in range(200):
        with open(errfile) as f:
            if "tern-sink: ticket keys rotated" in f.read():
                return
        time.sleep(0.05)
    raise SystemExit("sink never reported the rotation")

def main():
    spec = json.loads(sys.argv[1])
    port = spec["port"]
    ca = spec.get("ca")
    if ca:
        ctx = ssl.create_default_context(cafile=ca)
        CTX[ca] = ctx
    results = []
    session = None
    for i in range(spec.get("conns", 1)):
        if i == spec.get("rotate_before"):
            rotate(spec["sink_pid"], spec["sink_err"])
        c = Conn(port)
        r = {"greeting": c.reply()[0]}
        code, ehlo = c.cmd("EHLO client.test")
        r["ehlo"] = ehlo
        if spec.get("inject"):
            c.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n")
            r["inject"] = c.reply()
            try:
                more = c.f.read()
            except Exception as e:
                more = b""
            r["after_inject"] = more.decode(errors="replace")
            results.append(r)
            continue
        if spec.get("tls"):
            c.starttls(ca, session if spec.get("resume") else None)
            code, ehlo = c.cmd("EHLO client.test")
            r["ehlo_tls"] = ehlo
        for m in range(spec.get("msgs", 1)):
            data = (f"Message-ID: <m{i}.{m}@client.test>\r\nSubject: test {i}\r\n\r\n"
                    f"hello {i} {m}\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n").encode()
            data += b"x" * spec.get("pad", 0) + b"\r\n"
            rcpts = spec.get("rcpts", ["a@b.test"])
            if spec.get("bdat"):
                c.send(b"MAIL FROM:<s@x.test>\r\n" +
                       b"".join(b"RCPT TO:<%s>\r\n" % x.encode() for x in rcpts) +
                       b"BDAT %d\r\n" % 10 + data[:10] +
                       b"BDAT %d LAST\r\n" % (len(data) - 10) + data[10:])
                codes = [c.reply()[0] for _ in range(len(rcpts) + 3)]
            else:
                # PIPELINING: envelope and DATA in one write
                c.send(b"MAIL FROM:<s@x.test>\r\n" +
                       b"".join(b"RCPT TO:<%s>\r\n" % x.encode() for x in rcpts) + b"DATA\r\n")
                codes = [c.reply()[0] for _ in range(len(rcpts) + 2)]
                c.send(stuff(data) + b".\r\n")
                codes.append(c.reply()[0])
            r.setdefault("codes", []).append(codes)
            r.setdefault("sha", []).append(hashlib.sha256(data).hexdigest())
            r.setdefault("size", []).append(len(data))
        r["quit"] = c.cmd("QUIT")[0]
        if c.tls:
            if session is None or not spec.get("same_session"):
                session = c.tls.session     # same_session: the first one's
            r["resumed"] = c.tls.session_reused
            r["version"] = c.tls.version()
        results.append(r)
    print(json.dumps(results))

main()
EOF

client() { "$PY" "$TMP/client.py" "$1"; }
# jq is not guaranteed: small python one-liners read the JSON.
jget() { "$PY" -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
stat_of() { sed -n "s/^$2=//p" "$TMP/$1.stats" 2>/dev/null; }
# wait_stat NAME KEY VALUE: the stats file shows KEY=VALUE (polled).
wait_stat() {
    for _ in $(seq 1 100); do
        [ "$(stat_of "$1" "$2")" = "$3" ] && return 0
        sleep 0.05
    done
    return 1
}

# --- 1. plaintext + STARTTLS + resumption against one sink ---------------
if start_sink main --cert "$CERT" --key "$KEY" --chunking --threads 2; then
    pass sink_starts
    grep -q "^tern-sink: listening on 127.0.0.1:$PORT\$" "$TMP/main.out" &&
        pass sink_prints_port || fail sink_prints_port "$(cat "$TMP/main.out")"

    OUT=$(client "{\"port\": $PORT, \"msgs\": 2, \"rcpts\": [\"a@b.test\", \"c@d.test\"]}")
    CODES=$(echo "$OUT" | jget 'd[0]["codes"]')
    if [ "$CODES" = "[[250, 250, 250, 354, 250], [250, 250, 250, 354, 250]]" ]; then
        pass plain_transaction
    else
        fail plain_transaction "codes $CODES"
    fi
    echo "$OUT" | jget '"STARTTLS" in d[0]["ehlo"] and "CHUNKING" in d[0]["ehlo"] and "PIPELINING" in d[0]["ehlo"]' |
        grep -q True && pass plain_ehlo_caps || fail plain_ehlo_caps "$(echo "$OUT" | jget 'd[0]["ehlo"]')"
    wait_stat main messages 2
    SHA0=$(echo "$OUT" | jget 'd[0]["sha"][0]')
    SIZE0=$(echo "$OUT" | jget 'd[0]["size"][0]')
    WANT=$(printf 's@x.test\ta@b.test,c@d.test\t%s\t%s\t-\t-\t0\t127.0.0.1:' "$SIZE0" "$SHA0")
    LINE=$(grep -F "<m0.0@client.test>" "$TMP/main.rec")
    if [ "${LINE#"$WANT"}" != "$LINE" ] && [ "$(echo "$LINE" | cut -f9)" = "<m0.0@client.test>" ]; then
        pass plain_record_line
    else
        fail plain_record_line "got '$LINE' want prefix '$WANT'"
    fi

    OUT=$(client "{\"port\": $PORT, \"tls\": true, \"resume\": true, \"conns\": 3, \"ca\": \"$CA\"}")
    V=$(echo "$OUT" | jget '[r["version"] for r in d]')
    R=$(echo "$OUT" | jget '[r["resumed"] for r in d]')
    NOTLS=$(echo "$OUT" | jget '"STARTTLS" in d[0]["ehlo_tls"]')
    [ "$V" = "['TLSv1.3', 'TLSv1.3', 'TLSv1.3']" ] && pass tls_handshake || fail tls_handshake "$V"
    [ "$NOTLS" = "False" ] && pass tls_no_second_starttls || fail tls_no_second_starttls "offered again"
    if [ "$R" = "[False, True, True]" ]; then
        pass tls_resumed_client_view
    else
        fail tls_resumed_client_view "$R"
    fi
    if wait_stat main tls_full 1 && wait_stat main tls_resumed 2; then
        pass tls_stats
    else
        fail tls_stats "$(cat "$TMP/main.stats")"
    fi
    SHA=$(echo "$OUT" | jget 'd[1]["sha"][0]')
    LINE=$(grep -F "<m1.0@client.test>" "$TMP/main.rec" | grep -F "TLSv1.3")
    if [ "$(echo "$LINE" | cut -f4)" = "$SHA" ] && [ "$(echo "$LINE" | cut -f5)" = "TLSv1.3" ] &&
        [ "$(echo "$LINE" | cut -f6)" != "-" ] && [ "$(echo "$LINE" | cut -f7)" = "1" ]; then
        pass tls_record_line
    else
        fail tls_record_line "got '$LINE' want sha $SHA, TLSv1.3, resumed 1"
    fi

    # Plaintext pipelined behind STARTTLS: 554 and closed, nothing executed.
    OUT=$(client "{\"port\": $PORT, \"inject\": true}")
    INJ=$(echo "$OUT" | jget 'd[0]["inject"][0], repr(d[0]["after_inject"])')
    if [ "$INJ" = "554 ''" ]; then
        pass starttls_injection_refused
    else
        fail starttls_injection_refused "$INJ"
    fi

    # BDAT (CHUNKING), large enough to span several receive buffers.
    OUT=$(client "{\"port\": $PORT, \"bdat\": true, \"pad\": 200000}")
    CODES=$(echo "$OUT" | jget 'd[0]["codes"]')
    SHA=$(echo "$OUT" | jget 'd[0]["sha"][0]')
    wait_stat main messages 6
    LINE=$(grep -F "<m0.0@client.test>" "$TMP/main.rec" | grep -F "$SHA")
    if [ "$CODES" = "[[250, 250, 250, 250]]" ] && [ -n "$LINE" ]; then
        pass bdat_transaction
    else
        fail bdat_transaction "codes $CODES line '$LINE'"
    fi

    # Many connections at once over both threads.
    PAR=""
    for i in $(seq 1 8); do
        client "{\"port\": $PORT, \"conns\": 3, \"msgs\": 2}" >"$TMP/par.$i" &
        PAR="$PAR $!"
        TERN_PIDS="$TERN_PIDS $!"
    done
    for p in $PAR; do
        wait "$p"
        tern_forget_pid "$p"
    done
    if wait_stat main messages 54; then
        pass parallel_clients
    else
        fail parallel_clients "$(cat "$TMP/main.stats")"
    fi
    [ "$(wc -l <"$TMP/main.rec")" -eq 54 ] && pass record_line_count ||
        fail record_line_count "$(wc -l <"$TMP/main.rec") lines, want 54"

    if command -v swaks >/dev/null; then
        if swaks --server "127.0.0.1:$PORT" --from s@x.test --to w@b.test \
            >"$TMP/swaks.out" 2>&1 &&
            wait_stat main messages 55 && grep -q "^s@x.test	w@b.test	" "$TMP/main.rec"; then
            pass swaks_plain
        else
            fail swaks_plain "$(tail -n 5 "$TMP/swaks.out")"
        fi
    fi
    stop_sink main
    grep -q "messages=5[45] .*tls_full=1 tls_resumed=2 " "$TMP/main.out" &&
        pass summary_counts || fail summary_counts "$(tail -n 1 "$TMP/main.out")"
else
    fail sink_starts "$(cat "$TMP/main.err")"
fi

# --- 2. reply overrides -------------------------------------------------
if start_sink busy --cert "$CERT" --key "$KEY" --data-reply "451 4.3.0 busy" --quiet; then
    OUT=$(client "{\"port\": $PORT}")
    CODES=$(echo "$OUT" | jget 'd[0]["codes"]')
    if [ "$CODES" = "[[250, 250, 354, 451]]" ] && wait_stat busy rejected 1 &&
        [ "$(stat_of busy messages)" = "0" ] && [ ! -s "$TMP/busy.rec" ]; then
        pass data_reply_override
    else
        fail data_reply_override "codes $CODES stats $(cat "$TMP/busy.stats")"
    fi
    stop_sink busy
else
    fail data_reply_override "sink did not start: $(cat "$TMP/busy.err")"
fi

if start_sink notls --starttls-reply "454 4.7.0 TLS not available" --no-pipelining --quiet; then
    cat >"$TMP/notls.py" <<EOF
import smtplib
s = smtplib.SMTP("127.0.0.1", $PORT, timeout=10)
s.ehlo("c.test")
print("PIPELINING" in s.esmtp_features or "pipelining" in s.esmtp_features, s.has_extn("starttls"), s.docmd("STARTTLS")[0])
s.quit()
EOF
    R=$("$PY" "$TMP/notls.py" 2>&1)
    [ "$R" = "False True 454" ] && pass starttls_reply_override || fail starttls_reply_override "$R"
    stop_sink notls
else
    fail starttls_reply_override "sink did not start: $(cat "$TMP/notls.err")"
fi


# --- 3. --drop-rate / --drop-seed ---------------------------------------
# The client sends N messages one connection at a time (up to 4 per
# connection), each again until it gets its 250, the body in two writes
# (so that "data" drops come mid-body), and says where each connection
# died: after the greeting, after MAIL FROM, or after the body.
cat >"$TMP/drop_client.py" <<'EOF'
import json, socket, sys, time
port, n, per_conn = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

class Dropped(Exception):
    pass

def reply(f):
    while True:
        try:
            l = f.readline()
        except ConnectionResetError:
            raise Dropped()
        if not l:
            raise Dropped()
        if len(l) < 4 or l[3:4] != b"-":
            return int(l[:3])

seen = {"greeting": 0, "mail": 0, "body": 0, "quit": 0}
i = conns = 0
while i < n:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    conns += 1
    stage = "greeting"
    try:
        assert reply(f) == 220
        s.sendall(b"EHLO client.test\r\n")
        reply(f)
        done = 0
        while i < n and done < per_conn:
            stage = "mail"
            s.sendall(b"MAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n")
            codes = [reply(f) for _ in range(3)]
            assert codes == [250, 250, 354], codes
            stage = "body"
            body = b"Message-ID: <m%d@drop.test>\r\n\r\n" % i + b"x" * 4000 + b"\r\n"
            s.sendall(body[:2000])
            time.sleep(0.005)
            s.sendall(body[2000:] + b".\r\n")
            assert reply(f) == 250
            i += 1
            done += 1
        stage = "quit"
        s.sendall(b"QUIT\r\n")
        reply(f)
    except (Dropped, BrokenPipeError, ConnectionResetError):
        seen[stage] += 1
    s.close()
print(json.dumps({"seen": seen, "conns": conns}))
EOF

# drop_run NAME SEED: a one-thread sink dropping 30%, 80 messages; prints
# the client's view, then the sink's drop counters, then the record's
# dropped message ids.
drop_run() {
    start_sink "$1" --quiet --threads 1 --drop-rate 0.3 --drop-seed "$2" || return 1
    "$PY" "$TMP/drop_client.py" "$PORT" 80 4 >"$TMP/$1.client" 2>&1
    stop_sink "$1"
}
kv() { tr ' ' '\n' | sed -n "s/^$1=//p"; }
sumline() { tail -n 1 "$TMP/$1.out"; }

if drop_run drop1 7 && drop_run drop2 7 && drop_run drop3 8; then
    S=$(sumline drop1)
    G=$(echo "$S" | kv drops_greeting) M=$(echo "$S" | kv drops_mail)
    D=$(echo "$S" | kv drops_data) T=$(echo "$S" | kv drops_dot)
    SEEN=$(jget 'd["seen"]["greeting"], d["seen"]["mail"], d["seen"]["body"], d["seen"]["quit"]' \
        <"$TMP/drop1.client" 2>/dev/null)
    if [ "$G" -gt 0 ] && [ "$M" -gt 0 ] && [ "$D" -gt 0 ] && [ "$T" -gt 0 ]; then
        pass drop_every_point
    else
        fail drop_every_point "$S"
    fi
    if [ "$SEEN" = "$G $M $((D + T)) 0" ]; then
        pass drop_counts_match_client
    else
        fail drop_counts_match_client "client saw (greeting mail body quit) '$SEEN'; sink: $S"
    fi
    # Data: every message once, plus each after-dot drop a second time,
    # marked in field 10.
    LINES=$(wc -l <"$TMP/drop1.rec")
    MARKED=$(awk -F'\t' '$10 == "dropped-after-dot"' "$TMP/drop1.rec" | wc -l)
    UNIQ=$(cut -f9 "$TMP/drop1.rec" | sort -u | wc -l)
    UNMARKED_UNIQ=$(awk -F'\t' 'NF == 9 {print $9}' "$TMP/drop1.rec" | sort -u | wc -l)
    if [ "$LINES" -eq $((80 + T)) ] && [ "$MARKED" -eq "$T" ] && [ "$UNIQ" -eq 80 ] &&
        [ "$UNMARKED_UNIQ" -eq 80 ] && [ "$(echo "$S" | kv messages)" -eq 80 ]; then
        pass drop_dot_recorded_and_marked
    else
        fail drop_dot_recorded_and_marked "lines $LINES marked $MARKED unique $UNIQ/$UNMARKED_UNIQ drops_dot $T"
    fi
    grep -q "^drops_dot=$T\$" "$TMP/drop1.stats" && grep -q "^drops_greeting=$G\$" "$TMP/drop1.stats" &&
        pass drop_stats_file || fail drop_stats_file "$(cat "$TMP/drop1.stats")"
    dropped_ids() { awk -F'\t' '$10 == "dropped-after-dot" {print $9}' "$TMP/$1.rec" | tr '\n' ' '; }
    # All but peak_conns: a dropped connection may still be closing when
    # the client's next one arrives.
    counts() { sumline "$1" | sed 's/ peak_conns=[0-9]*//'; }
    if [ "$(counts drop2)" = "$(counts drop1)" ] && [ "$(dropped_ids drop2)" = "$(dropped_ids drop1)" ] &&
        cmp -s "$TMP/drop1.client" "$TMP/drop2.client"; then
        pass drop_same_seed_same_drops
    else
        fail drop_same_seed_same_drops "$S / $(sumline drop2)"
    fi
    if [ "$(dropped_ids drop3)" != "$(dropped_ids drop1)" ] ||
        ! cmp -s "$TMP/drop1.client" "$TMP/drop3.client"; then
        pass drop_other_seed_other_drops
    else
        fail drop_other_seed_other_drops "seeds 7 and 8 dropped the same"
    fi
else
    fail drop_runs "sink did not start or stop: $(cat "$TMP"/drop*.err)"
fi
BAD=""
for a in "--drop-rate 1.5" "--drop-rate -0.1" "--drop-rate x" "--drop-seed -1" "--reply-delay 999999999" "--latency 10001"; do
    # shellcheck disable=SC2086
    timeout 5 "$SINK" --listen 127.0.0.1:0 $a >/dev/null 2>&1
    [ $? -eq 2 ] || BAD="$BAD [$a]"
done
[ -z "$BAD" ] && pass knob_values_checked || fail knob_values_checked "accepted:$BAD"

# --- 4. --reply-delay ---------------------------------------------------
# A's final dot (with QUIT pipelined behind it) waits 500 ms for its 250;
# meanwhile B, on the same single thread, gets its greeting and EHLO
# reply at once.
# smtp_lines.py: what the timing clients below share.
cat >"$TMP/smtp_lines.py" <<'EOF'
import socket
def conn(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s, s.makefile("rb")
def reply(f):
    """The code of the next whole reply (its last line)."""
    while True:
        l = f.readline()
        if not l:
            raise EOFError("closed")
        if len(l) < 4 or l[3:4] != b"-":
            return int(l[:3])
EOF
cat >"$TMP/delay_client.py" <<'EOF'
import json, sys, time
from smtp_lines import reply
import smtp_lines
port = int(sys.argv[1])
def conn():
    return smtp_lines.conn(port)
a, fa = conn()
reply(fa)
a.sendall(b"EHLO a.test\r\n"); reply(fa)
a.sendall(b"MAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n")
codes = [reply(fa) for _ in range(3)]
a.sendall(b"Message-ID: <delay@a.test>\r\n\r\nhi\r\n.\r\nQUIT\r\n")
t0 = time.monotonic()
b, fb = conn()
reply(fb)
b.sendall(b"EHLO b.test\r\n"); reply(fb)
tb = time.monotonic() - t0
codes += [reply(fa), reply(fa)]
ta = time.monotonic() - t0
print(json.dumps({"codes": codes, "a_s": ta, "b_s": tb}))
EOF
if start_sink delay --quiet --threads 1 --reply-delay 500; then
    OUT=$("$PY" "$TMP/delay_client.py" "$PORT" 2>&1)
    R=$(echo "$OUT" | jget 'd["codes"] == [250, 250, 354, 250, 221], d["a_s"] >= 0.45, d["b_s"] < 0.25' 2>&1)
    [ "$R" = "True True True" ] && pass reply_delay_late_not_blocking ||
        fail reply_delay_late_not_blocking "$OUT"
    wait_stat delay peak_conns 2 && pass reply_delay_conns_overlap ||
        fail reply_delay_conns_overlap "$(cat "$TMP/delay.stats")"
    stop_sink delay
else
    fail reply_delay_late_not_blocking "sink did not start: $(cat "$TMP/delay.err")"
fi
# A client that leaves during a long delay: the sink closes at once (the
# timeout is cancelled), it does not wait the 5 s out.
if start_sink delay_gone --quiet --reply-delay 5000; then
    "$PY" - "$PORT" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
f = s.makefile("rb")
f.readline()
s.sendall(b"HELO c.test\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<r@y.test>\r\nDATA\r\n")
for _ in range(4):
    f.readline()
s.sendall(b"hi\r\n.\r\n")
s.close()
EOF
    wait_stat delay_gone messages 1 && wait_stat delay_gone conns_open 0 &&
        pass reply_delay_cancelled_on_close ||
        fail reply_delay_cancelled_on_close "$(cat "$TMP/delay_gone.stats")"
    stop_sink delay_gone
fi

# --- 4b. --latency --------------------------------------------------------
# Everything the sink sends is held 300 ms: each reply, each TLS flight,
# and each batch apart: two NOOPs sent 150 ms apart are answered 300 ms
# after each, in order. The greeting is held twice that (the round trip of
# the TCP handshake, instant on loopback), so a STARTTLS session's first
# EHLO reply after TLS comes six holds after the connect. Another
# connection on the same thread is served meanwhile (its greeting is not
# queued behind A's replies), and QUIT's 221 is followed by the close.
cat >"$TMP/latency_client.py" <<'EOF'
import json, ssl, sys, time
from smtp_lines import conn, reply
port, ca = int(sys.argv[1]), sys.argv[2]
out = {}
t0 = time.monotonic()
a, fa = conn(port)
out["greet"] = (reply(fa), time.monotonic() - t0)
a.sendall(b"EHLO a.test\r\n")
t1 = time.monotonic()
b, fb = conn(port)
out["b_greet"] = (reply(fb), time.monotonic() - t1)
out["ehlo"] = (reply(fa), time.monotonic() - t1)
t2 = time.monotonic()
a.sendall(b"NOOP\r\n")
time.sleep(0.15)
a.sendall(b"NOOP\r\n")
out["noop1"] = (reply(fa), time.monotonic() - t2)
out["noop2"] = (reply(fa), time.monotonic() - t2)
t3 = time.monotonic()
a.sendall(b"QUIT\r\n")
out["quit"] = (reply(fa), time.monotonic() - t3)
out["eof"] = fa.read() == b""
t4 = time.monotonic()
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
c, fc = conn(port)
reply(fc)
c.sendall(b"EHLO c.test\r\n"); reply(fc)
c.sendall(b"STARTTLS\r\n"); code = reply(fc)
t = ctx.wrap_socket(c)
ft = t.makefile("rb")
t.sendall(b"EHLO c.test\r\n")
out["tls_ehlo"] = (reply(ft), time.monotonic() - t4, code, t.version())
print(json.dumps(out))
EOF
if start_sink latency --quiet --threads 1 --cert "$CERT" --key "$KEY" --latency 300; then
    OUT=$("$PY" "$TMP/latency_client.py" "$PORT" "$CA" 2>&1)
    R=$(echo "$OUT" | jget '[d["greet"][0] == 220 and d["greet"][1] >= 0.59,
        d["ehlo"][0] == 250 and d["ehlo"][1] >= 0.29,
        d["b_greet"][0] == 220 and 0.59 <= d["b_greet"][1] < 0.85,
        d["noop1"][0] == 250 and d["noop1"][1] >= 0.29,
        d["noop2"][0] == 250 and d["noop2"][1] >= 0.44,
        d["quit"][0] == 221 and d["quit"][1] >= 0.29 and d["eof"],
        d["tls_ehlo"][0] == 250 and d["tls_ehlo"][2] == 220 and d["tls_ehlo"][3] == "TLSv1.3" and d["tls_ehlo"][1] >= 1.75]' 2>&1)
    [ "$R" = "[True, True, True, True, True, True, True]" ] && pass latency_holds_every_send ||
        fail latency_holds_every_send "$R $OUT"
    stop_sink latency
else
    fail latency_holds_every_send "sink did not start: $(cat "$TMP/latency.err")"
fi

# --- 5. --abort-handshake -----------------------------------------------
cat >"$TMP/abort_client.py" <<'EOF'
import socket, ssl, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
f = s.makefile("rb")
def reply():
    out = []
    while True:
        l = f.readline().decode()
        out.append(l)
        if len(l) < 4 or l[3] != "-":
            return int(l[:3]), "".join(out)
reply()
s.sendall(b"EHLO c.test\r\n")
code, ehlo = reply()
s.sendall(b"STARTTLS\r\n")
st = reply()[0]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    ctx.wrap_socket(s, server_hostname="localhost")
    print("STARTTLS" in ehlo, st, "handshake-succeeded")
except Exception as e:
    print("STARTTLS" in ehlo, st, type(e).__name__)
EOF
if start_sink abort --abort-handshake; then
    R=$("$PY" "$TMP/abort_client.py" "$PORT" 2>&1)
    # SSLEOFError or SSLZeroReturnError (by Python version): the
    # connection ended mid-handshake with no alert (an alert is an
    # SSLError naming it; a reset is ConnectionResetError).
    case $R in
    "True 220 SSLEOFError" | "True 220 SSLZeroReturnError") pass abort_handshake_eof_no_alert ;;
    *) fail abort_handshake_eof_no_alert "$R" ;;
    esac
    wait_stat abort tls_failed 1 && wait_stat abort conns_open 0 && pass abort_handshake_counted ||
        fail abort_handshake_counted "$(cat "$TMP/abort.stats")"
    kill -USR1 "$SINKPID"
    for _ in $(seq 1 50); do
        grep -q "no TLS" "$TMP/abort.err" && break
        sleep 0.05
    done
    grep -q "no TLS, no ticket keys" "$TMP/abort.err" && kill -0 "$SINKPID" &&
        pass sigusr1_without_tls_harmless || fail sigusr1_without_tls_harmless "$(cat "$TMP/abort.err")"
    stop_sink abort
else
    fail abort_handshake_eof_no_alert "sink did not start: $(cat "$TMP/abort.err")"
fi

# --- 6. SIGUSR1: ticket keys rotated ------------------------------------
# Four TLS connections, each offering the previous one's session; the
# keys change before the third: it cannot resume, the fourth can again.
if start_sink rot --cert "$CERT" --key "$KEY" --threads 2; then
    OUT=$(client "{\"port\": $PORT, \"tls\": true, \"resume\": true, \"conns\": 4, \"ca\": \"$CA\",
                   \"rotate_before\": 2, \"sink_pid\": $SINKPID, \"sink_err\": \"$TMP/rot.err\"}")
    R=$(echo "$OUT" | jget '[r["resumed"] for r in d]' 2>&1)
    [ "$R" = "[False, True, False, True]" ] && pass sigusr1_rotation_forces_full_handshake ||
        fail sigusr1_rotation_forces_full_handshake "resumed $R; $(cat "$TMP/rot.err")"
    wait_stat rot tls_full 2 && wait_stat rot tls_resumed 2 && pass sigusr1_rotation_stats ||
        fail sigusr1_rotation_stats "$(cat "$TMP/rot.stats")"
    # Under load on both threads: rotations while handshakes run. Every
    # client finishes, every rotation is reported, the sink stops cleanly.
    LOAD=""
    for i in $(seq 1 6); do
        client "{\"port\": $PORT, \"tls\": true, \"resume\": true, \"conns\": 8, \"ca\": \"$CA\"}" \
            >"$TMP/load.$i" 2>&1 &
        LOAD="$LOAD $!"
        TERN_PIDS="$TERN_PIDS $!"
    done
    for _ in 1 2 3 4 5; do
        sleep 0.1
        kill -USR1 "$SINKPID"
    done
    BADLOAD=0
    for p in $LOAD; do
        wait "$p" || BADLOAD=$((BADLOAD + 1))
        tern_forget_pid "$p"
    done
    for _ in $(seq 1 50); do
        [ "$(grep -c 'ticket keys rotated' "$TMP/rot.err")" -ge 6 ] && break
        sleep 0.05
    done
    N250=$(cat "$TMP"/load.* | grep -o '354, 250' | wc -l)
    if [ "$BADLOAD" -eq 0 ] && [ "$N250" -eq 48 ] &&
        [ "$(grep -c 'ticket keys rotated' "$TMP/rot.err")" -eq 6 ]; then
        pass sigusr1_rotation_under_load
    else
        fail sigusr1_rotation_under_load "failed clients $BADLOAD, 250s $N250/48; $(tail -n 3 "$TMP/rot.err")"
    fi
    stop_sink rot
else
    fail sigusr1_rotation_forces_full_handshake "sink did not start: $(cat "$TMP/rot.err")"
fi

# --- 7. --track-tickets ------------------------------------------------
# Each connection offering the previous one's (fresh) ticket: none used
# twice. Then one session offered by three connections: TLS 1.3 tickets
# are single use, so the second and third offer count as reused. After a
# rotation the old ticket cannot be opened: rejected.
if start_sink tick --cert "$CERT" --key "$KEY" --track-tickets --threads 2; then
    OUT=$(client "{\"port\": $PORT, \"tls\": true, \"resume\": true, \"conns\": 3, \"ca\": \"$CA\"}")
    R=$(echo "$OUT" | jget '[r["resumed"] for r in d]' 2>&1)
    if [ "$R" = "[False, True, True]" ] && wait_stat tick tls_resumed 2 &&
        [ "$(stat_of tick tickets_reused)" = 0 ] && [ "$(stat_of tick tickets_rejected)" = 0 ] &&
        [ "$(stat_of tick tickets_issued)" -ge 3 ]; then
        pass track_tickets_fresh_not_reused
    else
        fail track_tickets_fresh_not_reused "resumed $R; $(tr '\n' ' ' <"$TMP/tick.stats")"
    fi
    client "{\"port\": $PORT, \"tls\": true, \"resume\": true, \"same_session\": true,
             \"conns\": 4, \"ca\": \"$CA\", \"rotate_before\": 3, \"sink_pid\": $SINKPID,
             \"sink_err\": \"$TMP/tick.err\"}" >/dev/null
    if wait_stat tick tickets_reused 1 && wait_stat tick tickets_rejected 1; then
        pass track_tickets_reused_and_rejected
    else
        fail track_tickets_reused_and_rejected "$(tr '\n' ' ' <"$TMP/tick.stats")"
    fi
    stop_sink tick
    tail -n 1 "$TMP/tick.out" | grep -q ' tickets_issued=[1-9][0-9]* tickets_reused=1 tickets_rejected=1$' &&
        pass track_tickets_summary || fail track_tickets_summary "$(tail -n 1 "$TMP/tick.out")"
else
    fail track_tickets_fresh_not_reused "sink did not start: $(cat "$TMP/tick.err")"
fi
timeout 5 "$SINK" --listen 127.0.0.1:0 --track-tickets >/dev/null 2>&1
[ $? -eq 2 ] && pass track_tickets_needs_tls || fail track_tickets_needs_tls "accepted without --cert"

# --- 8. conns_open and peak_conns ---------------------------------------
if start_sink open --quiet --threads 2; then
    cat >"$TMP/open_client.py" <<'EOF'
import socket, sys, time
port, stats = int(sys.argv[1]), sys.argv[2]
def stat(k):
    try:
        for l in open(stats):
            if l.startswith(k + "="):
                return int(l.split("=")[1])
    except OSError:
        pass
    return -1
def wait(k, v):
    for _ in range(100):
        if stat(k) == v:
            return True
        time.sleep(0.05)
    return False
socks = []
for _ in range(3):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.makefile("rb").readline()
    socks.append(s)
r = [wait("conns_open", 3)]
socks[0].sendall(b"QUIT\r\n")       # the sink answers and closes
r.append(wait("conns_open", 2))
for s in socks:
    s.close()
r.append(wait("conns_open", 0))
print(r)
EOF
    R=$("$PY" "$TMP/open_client.py" "$PORT" "$TMP/open.stats" 2>&1)
    [ "$R" = "[True, True, True]" ] && [ "$(stat_of open peak_conns)" = 3 ] &&
        pass conns_open_and_peak || fail conns_open_and_peak "$R; $(cat "$TMP/open.stats")"
    stop_sink open
else
    fail conns_open_and_peak "sink did not start: $(cat "$TMP/open.err")"
fi

exit "$TERN_FAILS"
