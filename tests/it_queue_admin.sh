#!/bin/bash
# it_queue_admin.sh - `tern queue` subcommands on a queue of deferred mail
# (the sink answers 451 to every message, retry_base is an hour):
#  stats (text and --json: by state, by domain, oldest age), show, retry
#  --domain D, retry, delete, bounce (a DSN to the sender, then removed),
#  and the documented exit codes: 3 for an unknown id, 2 for bad usage,
#  1 with Redis down.
set -u
cd "$(dirname "$0")/.."
. tests/queue_lib.sh
qsetup || exit 1
PY=/usr/bin/python3

qsink s --data-reply "451 4.3.0 busy, later" || exit 1
qconf s <<EOC
partitions = 1
retry_base = 1h
EOC
Q() { "$TERN" queue -c "$dir/s.conf" "$@"; }
qinject s --generate 6 --domains a.test,b.test --size 300
qdrain s ||
    fail drain "exit $?: $(tail -n 3 "$dir/s.rerr")"

# --- stats ----------------------------------------------------------------------
st=$(Q stats)
val() { echo "$st" | awk -v k="$1" '$1 == k { print $2 }'; }
dom() { echo "$st" | awk -v d="$1" '$1 == "domain" && $2 == d { print $3, $4, $5, $6 }'; }
[ "$(val scheduled)" = 6 ] && [ "$(val ready)" = 0 ] && [ "$(val bad)" = 0 ] &&
    [ "$(val deferred)" = 6 ] && [ -n "$(val oldest_age_s)" ] && pass stats_by_state ||
    fail stats_by_state "$st"
[ "$(dom a.test)" = "ready=0 leased=0 scheduled=3 bad=0" ] &&
    [ "$(dom b.test)" = "ready=0 leased=0 scheduled=3 bad=0" ] && pass stats_by_domain ||
    fail stats_by_domain "$st"
j=$(Q stats --json | $PY -c 'import json,sys; d=json.load(sys.stdin); print(d["scheduled"], d["domains"]["a.test"]["scheduled"], d["oldest_age_s"] >= 0)')
[ "$j" = "6 3 True" ] && pass stats_json || fail stats_json "$j"
# --totals: the same state counts, no domains
t=$(Q stats --totals)
[ "$(awk '$1=="scheduled"{print $2}' <<<"$t")" = 6 ] && ! grep -q '^domain ' <<<"$t" && ! grep -q '^bad ' <<<"$t" &&
    [ "$(Q stats --totals --json | $PY -c 'import json,sys; d=json.load(sys.stdin); print(d["scheduled"], "domains" in d)')" = "6 False" ] &&
    pass stats_totals || fail stats_totals "$t"
Q stats --totals --bogus >/dev/null 2>&1
[ $? = 2 ] && pass stats_bad_option_usage || fail stats_bad_option_usage "exit not 2"

# --- show -----------------------------------------------------------------------------
id=$(rcli zrange 'tern:{0}:sched' 0 0)
sh=$(Q show "$id")
rc=$?
if [ $rc -eq 0 ] && echo "$sh" | grep -qx 'state scheduled' && echo "$sh" | grep -qx 'attempts 1' &&
    echo "$sh" | grep -q '^last 451 4.3.0 busy, later' && echo "$sh" | grep -q '^from <generator@tern.test>' &&
    echo "$sh" | grep -q '^next_attempt '; then
    pass show_message
else
    fail show_message "exit $rc: $sh"
fi
Q show 0000nosuchid >/dev/null 2>&1
rc=$?
[ $rc -eq 3 ] && pass show_unknown_exit_3 || fail show_unknown_exit_3 "exit $rc"

# --- retry ---------------------------------------------------------------------------
out=$(Q retry --domain a.test)
st=$(Q stats)
[ "$out" = "retried 3" ] && [ "$(dom a.test)" = "ready=3 leased=0 scheduled=0 bad=0" ] &&
    [ "$(dom b.test)" = "ready=0 leased=0 scheduled=3 bad=0" ] && pass retry_domain ||
    fail retry_domain "$out; $st"
out=$(Q retry)
st=$(Q stats)
[ "$out" = "retried 3" ] && [ "$(val ready)" = 6 ] && [ "$(val scheduled)" = 0 ] && pass retry_all ||
    fail retry_all "$out; $st"

# --- delete ---------------------------------------------------------------------------
ids=$(rcli lrange 'tern:{0}:ready' 0 -1)
d1=$(echo "$ids" | sed -n 1p)
d2=$(echo "$ids" | sed -n 2p)
b1=$(echo "$ids" | sed -n 3p)
out=$(Q delete "$d1" "$d2")
rc=$?
[ $rc -eq 0 ] && [ "$out" = "deleted 2" ] && [ "$(rcli exists "tern:{0}:m:$d1")" = 0 ] &&
    [ "$(rcli xrange 'tern:{0}:events' - + | grep -cx deleted)" = 2 ] && pass delete_messages ||
    fail delete_messages "exit $rc: $out"
# The deleted ids leave ready at once (the count is right), the rest keep their order.
st=$(Q stats)
[ "$(val ready)" = 4 ] && [ "$(rcli lrange 'tern:{0}:ready' 0 -1)" = "$(echo "$ids" | sed 1,2d)" ] &&
    pass delete_leaves_ready || fail delete_leaves_ready "$st"
Q delete "$d1" >/dev/null 2>&1
rc=$?
[ $rc -eq 3 ] && pass delete_unknown_exit_3 || fail delete_unknown_exit_3 "exit $rc"

# --- bounce -----------------------------------------------------------------------------
out=$(Q bounce "$b1")
rc=$?
st=$(Q stats)
dsn=$(rcli --scan --pattern 'tern:{0}:m:*' | while read -r k; do
    [ "$(rcli hget "$k" from)" = "" ] && rcli hget "$k" data; done)
if [ $rc -eq 0 ] && [ "$out" = "bounced 1" ] && [ "$(rcli exists "tern:{0}:m:$b1")" = 0 ] &&
    [ "$(dom tern.test)" = "ready=1 leased=0 scheduled=0 bad=0" ] &&
    echo "$dsn" | grep -q 'Action: failed' && echo "$dsn" | grep -q "$b1"; then
    pass bounce_message
else
    fail bounce_message "exit $rc: $out; $st"
fi

# --- usage and Redis down ----------------------------------------------------------------
Q frobnicate >/dev/null 2>&1
rc=$?
[ $rc -eq 2 ] && pass usage_exit_2 || fail usage_exit_2 "exit $rc"
kill -TERM "$REDIS_PID"
wait "$REDIS_PID" 2>/dev/null
tern_forget_pid "$REDIS_PID"
err=$(Q stats 2>&1)
rc=$?
[ $rc -eq 1 ] && echo "$err" | grep -q 'connect' && pass redis_down_exit_1 ||
    fail redis_down_exit_1 "exit $rc: $err"
[ "$TERN_FAILS" -eq 0 ]
