#!/bin/bash
# it_shaping.sh - traffic shaping and egress addresses, seen by the sink
# (--per-client: per client address, the most connections open at once,
# the most messages and connections in one second):
#  - max_message_rate and max_connections per destination hold;
#  - max_connection_rate holds (one message per connection);
#  - max_message_rate_per_host holds for two destinations on one host;
#  - 421 "rate limited" makes the destination back off, then it recovers
#    and delivers the rest (the two messages answered 421 wait for their
#    retry); a 451 matching backoff_pattern backs off the same way;
#  - during a backoff the open connections drop to the halved limit (the
#    sink's conns_open), and climb back to max_connections after;
#  - repeated connection failures suspend the destination: mail deferred,
#    a bounded number of attempts, no busy loop;
#  - source_address pool: the sink sees both 127.0.0.2 and 127.0.0.3.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
tern_test_env
stat() { $TERN queue -c "$1" stats | awk -v k="$2" '$1==k{print $2}'; }
# client IP KEY: a per-client counter from the sink's last stats
client() { awk -v ip="$1" -v k="$2" '$1=="client" && $2==ip { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1]==k) print kv[2] } }' "$dir/$3.stats"; }

run_case() {   # name, messages, domains, config lines (stdin), sink args...
    local name=$1 n=$2 doms=$3; shift 3
    rcli flushall >/dev/null
    tern_sink "$name" --listen 127.0.0.1:0 --per-client --stats-file "$dir/$name.stats" --quiet "$@" || return 1
    { echo "threads = 1"; echo "tls = none"; echo "route * = 127.0.0.1:$SINK_PORT"; cat; } \
        | tern_config "$dir/$name.conf"
    $TERN inject -c "$dir/$name.conf" --generate "$n" --domains "$doms" --size 300 >/dev/null
    timeout 60 $TERN run -c "$dir/$name.conf" --drain >"$dir/$name.out" 2>"$dir/$name.err"
    kill "$SINK_PID"
    wait "$SINK_PID" 2>/dev/null
    tern_forget_pid "$SINK_PID"
}

run_case msgrate 15 rate.test --reply-delay 100 <<EOC
max_connections = 3
destination rate.test = max_message_rate=5/s
EOC
m=$(client 127.0.0.1 messages msgrate); r=$(client 127.0.0.1 max_messages_per_s msgrate)
p=$(client 127.0.0.1 peak_conns msgrate)
[ "$m" = 15 ] && [ "$r" -le 6 ] && [ "$p" -le 3 ] && pass message_rate_and_connections_hold \
    || fail message_rate_and_connections_hold "messages=$m max_per_s=$r peak_conns=$p (rate 5/s, 3 connections)"

run_case connrate 8 crate.test <<EOC
max_messages_per_connection = 1
max_connection_rate = 2/s
EOC
m=$(client 127.0.0.1 messages connrate); c=$(client 127.0.0.1 max_conns_per_s connrate)
[ "$m" = 8 ] && [ "$c" -le 3 ] && pass connection_rate_holds \
    || fail connection_rate_holds "messages=$m max_conns_per_s=$c (rate 2/s)"

run_case hostrate 16 one.test,two.test <<EOC
max_message_rate_per_host = 4/s
EOC
m=$(client 127.0.0.1 messages hostrate); r=$(client 127.0.0.1 max_messages_per_s hostrate)
[ "$m" = 16 ] && [ "$r" -le 5 ] && pass host_rate_shared_by_destinations \
    || fail host_rate_shared_by_destinations "messages=$m max_per_s=$r (4/s for the host)"

run_case backoff 10 slow.test --data-reply "421 4.7.0 rate limited" --reply-first 2 <<EOC
backoff_pause = 500ms
max_connections = 4
retry_base = 1h
EOC
m=$(client 127.0.0.1 messages backoff)
[ "$m" = 8 ] && grep -q 'slow.test: backing off.*421' "$dir/backoff.err" \
    && [ "$(stat "$dir/backoff.conf" scheduled)" = 2 ] \
    && pass backoff_421_then_recover \
    || fail backoff_421_then_recover "messages=$m; $(grep -c 'backing off' "$dir/backoff.err") backoffs"

run_case pattern 6 pat.test --data-reply "451 4.7.1 rate limit exceeded" --reply-first 2 <<EOC
backoff_pattern = "rate limit"
backoff_pause = 300ms
retry_base = 1h
EOC
[ "$(client 127.0.0.1 messages pattern)" = 4 ] && grep -q 'pat.test: backing off.*451' "$dir/pattern.err" \
    && [ "$(stat "$dir/pattern.conf" scheduled)" = 2 ] && pass backoff_pattern_reply \
    || fail backoff_pattern_reply "$(client 127.0.0.1 messages pattern) delivered; $(grep -c 'backing off' "$dir/pattern.err") backoffs"

# Concurrency during a backoff, as the sink counts it: 8 connections busy,
# one 421; while paused the connections over the halved limit leave as
# they finish (at most 4 open), and after the pause it climbs back to 8.
# The 250s of mail already in flight at the 421 do not undo the backoff.
rcli flushall >/dev/null
tern_sink conc --per-client --stats-file "$dir/conc.stats" --quiet --reply-delay 200 \
    --data-reply "421 4.7.0 too many connections" --reply-first 1 || exit 1
{ echo "threads = 1"; echo "tls = none"; echo "route * = 127.0.0.1:$SINK_PORT"
  echo "max_connections = 8"; echo "backoff_pause = 3s"; echo "retry_base = 1h"; } |
    tern_config "$dir/conc.conf"
$TERN inject -c "$dir/conc.conf" --generate 300 --domains conc.test --size 300 >/dev/null
tern_bg 60 "$dir/conc.out" "$dir/conc.err" $TERN run -c "$dir/conc.conf" --drain
CPID=$TERN_BG_PID
n=200
until grep -q 'conc.test: backing off.*at most 4 connections' "$dir/conc.err" || [ $n = 0 ]; do
    sleep 0.1; n=$((n - 1)); done
# Sampled from the sink's stats file (rewritten every 200 ms) while few
# messages are through: the pause, not the end of the run.
low="" n=100
while [ -z "$low" ] && [ $n -gt 0 ]; do
    o=$(client 127.0.0.1 conns_open conc); m=$(client 127.0.0.1 messages conc)
    [ "${o:-9}" -le 4 ] && [ "${m:-0}" -lt 100 ] && low=$o
    sleep 0.1; n=$((n - 1))
done
[ -n "$low" ] && pass backoff_lowers_concurrency ||
    fail backoff_lowers_concurrency "open $(client 127.0.0.1 conns_open conc) (max_connections 8, halved to 4)"
high="" n=300
while [ -z "$high" ] && [ $n -gt 0 ]; do
    [ "$(client 127.0.0.1 conns_open conc)" = 8 ] && high=8
    sleep 0.1; n=$((n - 1))
done
wait "$CPID"
tern_forget_pid "$CPID"
kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null; tern_forget_pid "$SINK_PID"
p=$(client 127.0.0.1 peak_conns conc); m=$(client 127.0.0.1 messages conc)
[ -n "$high" ] && [ "$p" = 8 ] && [ "$m" = 299 ] && pass backoff_concurrency_recovers ||
    fail backoff_concurrency_recovers "back to 8 open: ${high:-no}; peak $p; $m of 299 delivered"

# A destination nobody listens for: suspended after a few attempts.
rcli flushall >/dev/null
/usr/bin/python3 -c 'import socket, os, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0))
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1])); os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)' "$dir/closed.port" &
TERN_PIDS="$TERN_PIDS $!"
tern_wait_file "$dir/closed.port" 50
tern_config "$dir/dead.conf" <<EOC
threads = 1
tls = none
retry_base = 1h
max_connections = 2
route * = 127.0.0.1:$(cat "$dir/closed.port")
EOC
$TERN inject -c "$dir/dead.conf" --generate 20 --domains dead.test --size 300 >/dev/null
timeout 60 $TERN run -c "$dir/dead.conf" --drain >"$dir/dead.out" 2>"$dir/dead.err"
opened=$(awk '/connections:/ {print $2}' "$dir/dead.out")
[ "$(stat "$dir/dead.conf" scheduled)" = 20 ] && [ "$opened" -le 4 ] && pass failures_suspend_destination \
    || fail failures_suspend_destination "scheduled $(stat "$dir/dead.conf" scheduled), $opened connections"

run_case egress 10 egress.test <<EOC
max_messages_per_connection = 1
source_address = 127.0.0.2 127.0.0.3
EOC
a=$(client 127.0.0.2 messages egress); b=$(client 127.0.0.3 messages egress)
[ "${a:-0}" -ge 1 ] && [ "${b:-0}" -ge 1 ] && [ $((a + b)) -eq 10 ] && pass egress_pool_round_robin \
    || fail egress_pool_round_robin "127.0.0.2: ${a:-0}, 127.0.0.3: ${b:-0}"

[ "$TERN_FAILS" -eq 0 ]
