#!/bin/bash
# it_event_session.sh - an outcome event over TLS carries every field at
# once: the message's own (reply, esc, the three recipient lists, attempt,
# conn_msgs, warned) and its session's, which the engine encodes once per
# connection (mx, ip, domain, policy, tier, tls, cipher, group, verified,
# verify, resumed). The case with the most fields: one attempt through a
# STARTTLS receiver (tests/rcpt_peer.py) that delivers ok1, defers defer1
# and rejects reject1, for a message already older than delay_warning, so
# the deferral also sends the delay report and stores `warned`. (Events
# once had room for 32 field strings: this one needs 38, and the last ones,
# `warned` among them, were dropped, so the report went out again on every
# later deferral.)
set -u
cd "$(dirname "$0")/.."
. tests/queue_lib.sh
qsetup || exit 1
tern_certs || exit 1
PY=/usr/bin/python3
qrcpt_peer "$CERTS/server.pem" "$CERTS/server.key"
PORT=$SINK_PORT
tern_config "$dir/s.conf" <<EOC
threads = 1
partitions = 1
tls = encrypt
route * = 127.0.0.1:$PORT
retry_schedule = 1h
delay_warning = 1h
EOC
C=$dir/s.conf
S='tern:{0}'
now_ms() { echo $(($(date +%s%N) / 1000000)); }

printf 'Subject: session fields\r\n\r\nhello\r\n' |
    "$TERN" inject -c "$C" --from sender@s.test --to ok1@r.test,defer1@r.test,reject1@r.test >/dev/null ||
    fail inject "tern inject failed"
id=$(rcli lrange "$S:ready" 0 -1)
rcli hset "$S:m:$id" created $(($(now_ms) - 2 * 3600 * 1000)) >/dev/null
timeout "$QRUN_LIMIT" "$TERN" run -c "$C" --drain >"$dir/s.run" 2>"$dir/s.rerr" ||
    fail drain "exit $?: $(tail -n 3 "$dir/s.rerr")"

# The message's deferred event, as "name=value" lines.
$PY - "$REDIS_SOCK" "$id" >"$dir/ev.out" <<'EOF'
import sys
sys.path.insert(0, "tests")
from resp_client import Redis
cmd = Redis(sys.argv[1]).cmd
for eid, kv in cmd("XRANGE", "tern:{0}:events", "-", "+"):
    d = dict(zip(kv[::2], kv[1::2]))
    if d.get("id") == sys.argv[2] and d.get("status") == "deferred":
        print("nfields=%d" % len(kv))
        for k, v in d.items():
            print("%s=%s" % (k, v.replace("\n", ",")))
EOF
field() { sed -n "s/^$1=//p" "$dir/ev.out"; }

want="delivered=ok1@r.test deferred=defer1@r.test failed=reject1@r.test attempt=1 conn_msgs=1 warned=yes
mx=127.0.0.1:$PORT ip=127.0.0.1 domain=r.test policy=encrypt tier=preferred tls=TLSv1.3 resumed=no"
missing=""
for kv in $want; do grep -qxF "$kv" "$dir/ev.out" || missing="$missing $kv"; done
for k in reply esc cipher group verified verify; do [ -n "$(field $k)" ] || missing="$missing $k"; done
[ -z "$missing" ] && [ "$(field nfields)" = 42 ] && pass event_has_every_field ||
    fail event_has_every_field "missing:$missing; got: $(tr '\n' ' ' <"$dir/ev.out")"

# warned reached the message: a later deferral sends no second report.
[ "$(rcli hget "$S:m:$id" warned)" = yes ] && pass warned_stored ||
    fail warned_stored "warned=$(rcli hget "$S:m:$id" warned)"
"$TERN" queue -c "$C" retry >/dev/null
timeout "$QRUN_LIMIT" "$TERN" run -c "$C" --drain >>"$dir/s.run" 2>>"$dir/s.rerr" ||
    fail drain "exit $?: $(tail -n 3 "$dir/s.rerr")"
warn=$(grep -lF 'Action: delayed' "$dir"/mail/*.eml 2>/dev/null | wc -l)
[ "$warn" = 1 ] && [ "$(rcli hget "$S:m:$id" attempts)" = 2 ] && pass one_delay_report ||
    fail one_delay_report "$warn delay reports after 2 attempts ($(rcli hget "$S:m:$id" attempts))"
[ "$TERN_FAILS" -eq 0 ]
