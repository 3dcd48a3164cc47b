#!/bin/bash
# it_sink.sh - integration test of build/tern-sink: plaintext, STARTTLS,
# session resumption, STARTTLS injection, BDAT, reply overrides, threads,
# record lines (SHA-256 of the data), stats file, SIGTERM summary.
#
# Prints PASS/FAIL lines; exits non-zero when anything failed.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SINK=${SINK:-$ROOT/build/tern-sink}
PY=/usr/bin/python3
TMP=$(mktemp -d)
PIDS=()
FAILS=0

cleanup() {
    for p in "${PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; FAILS=$((FAILS + 1)); }

if [ ! -x "$SINK" ]; then
    echo "FAIL it_sink_build: $SINK missing"
    exit 1
fi

if [ -x "$ROOT/scripts/gen-test-certs.sh" ] || [ -f "$ROOT/scripts/gen-test-certs.sh" ]; then
    sh "$ROOT/scripts/gen-test-certs.sh" "$TMP/certs" || { echo "FAIL it_sink_certs"; exit 1; }
    CERT=$TMP/certs/server.pem KEY=$TMP/certs/server.key CA=$TMP/certs/ca.pem
else
    mkdir -p "$TMP/certs"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$TMP/certs/server.key" -out "$TMP/certs/server.pem" 2>/dev/null
    CERT=$TMP/certs/server.pem KEY=$TMP/certs/server.key CA=$TMP/certs/server.pem
fi

# start_sink NAME ARGS...: starts a sink, sets PORT and SINKPID.
start_sink() {
    local name=$1
    shift
    rm -f "$TMP/$name.port"
    "$SINK" --listen 127.0.0.1:0 --port-file "$TMP/$name.port" \
        --stats-file "$TMP/$name.stats" --record "$TMP/$name.rec" "$@" \
        >"$TMP/$name.out" 2>"$TMP/$name.err" &
    SINKPID=$!
    PIDS+=("$SINKPID")
    for _ in $(seq 1 200); do
        [ -s "$TMP/$name.port" ] && break
        kill -0 "$SINKPID" 2>/dev/null || break
        sleep 0.05
    done
    PORT=$(cat "$TMP/$name.port" 2>/dev/null)
    [ -n "$PORT" ]
}

# stop_sink NAME: SIGTERM, wait, and check exit status 0 + summary line.
stop_sink() {
    local name=$1 rc
    kill -TERM "$SINKPID"
    wait "$SINKPID"
    rc=$?
    if [ "$rc" -ne 0 ]; then
        fail "${name}_sigterm" "exit status $rc; stderr: $(cat "$TMP/$name.err")"
    elif ! tail -n 1 "$TMP/$name.out" | grep -q '^tern-sink: messages=[0-9]* .*peak_conns=[0-9]*$'; then
        fail "${name}_sigterm" "no summary line: $(cat "$TMP/$name.out")"
    else
        pass "${name}_sigterm"
    fi
}

# The SMTP client: a small raw client so the test controls every byte
# (pipelining, injection, BDAT, TLS session reuse).
cat >"$TMP/client.py" <<'EOF'
import hashlib, socket, ssl, sys, json

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
            session = c.tls.session
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
    for i in $(seq 1 8); do
        client "{\"port\": $PORT, \"conns\": 3, \"msgs\": 2}" >"$TMP/par.$i" &
        PIDS+=($!)
    done
    wait "${PIDS[@]:1}" 2>/dev/null
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

[ "$FAILS" -eq 0 ]
