#!/bin/bash
# it_queue_cluster.sh - the command-line side on a 3-master Redis Cluster
# (scripts/lib.sh tern_redis_cluster), routed natively by partition slot:
#  tern inject spreads a message's domain entries over partitions and so
#  over nodes; tern queue stats (text, --json, --totals) adds every
#  partition from its node; show, retry, delete and bounce act on messages
#  whose partition lives on a node other than the one in `redis =`;
#  tern inject --generate and tern-bench-inject pipeline to every node;
#  a partition's slot moved to another node (SETSLOT/MIGRATE by hand)
#  between runs changes nothing seen; tests/queue_cluster_probe.c moves a
#  slot under an open connection (ASK during the migration, MOVED after,
#  in routed and pipelined calls); a master down is reported, exit 1.
set -u
cd "$(dirname "$0")/.."
. tests/queue_lib.sh
PY=/usr/bin/python3

tern_test_setup
tern_redis_cluster 3 || { fail cluster "could not start a Redis Cluster"; exit 1; }
read -r P1 P2 P3 <<<"$REDIS_CLUSTER_PORTS"
tern_config "$dir/c.conf" <<EOC
partitions = 16
EOC
Q() { "$TERN" queue -c "$dir/c.conf" "$@"; }
stat_of() { awk -v k="$1" '$1 == k { print $2 }'; }
# keys_on PORT: the queue's message keys on that node.
keys_on() { redis-cli -p "$1" --scan --pattern 'tern:{*}:m:*'; }
# portof KEY: the port of the node serving KEY's slot (the others answer MOVED).
portof() {
    local p
    for p in $P1 $P2 $P3; do
        case $(redis-cli -p "$p" type "$1" 2>&1) in MOVED*) ;; *) echo "$p"; return ;; esac
    done
}

# --- inject: entries of one message land on several nodes ---------------------------
printf 'Subject: cluster\r\n\r\nhello\r\n' >"$dir/m.txt"
to=""
for i in $(seq 1 12); do to="$to${to:+,}u$i@d$i.test"; done
out=$("$TERN" inject -c "$dir/c.conf" --from s@sender.test --to "$to" "$dir/m.txt" 2>&1)
[ $? -eq 0 ] && echo "$out" | grep -q '(12 queue entries)' && pass inject_entries ||
    fail inject_entries "$out"
holding=0
for p in $P1 $P2 $P3; do
    [ "$(keys_on "$p" | wc -l)" -gt 0 ] && holding=$((holding + 1))
done
[ "$holding" -ge 2 ] && pass inject_spread_over_nodes || fail inject_spread_over_nodes "$holding node(s) hold messages"

st=$(Q stats)
[ "$(echo "$st" | stat_of ready)" = 12 ] && [ "$(echo "$st" | stat_of enqueued)" = 12 ] &&
    [ "$(echo "$st" | grep -c '^domain d[0-9]*.test ready=1 ')" = 12 ] && pass stats_totals_and_domains ||
    fail stats_totals_and_domains "$st"

# Messages on the second and third nodes, for the subcommands.
mapfile -t far < <(keys_on "$P2"; keys_on "$P3")
[ "${#far[@]}" -ge 4 ] || { fail far_messages "only ${#far[@]} messages off the first node"; exit 1; }
idof() { echo "${1##*:m:}"; }
partof() { local k=${1#*\{}; echo "${k%%\}*}"; }

# --- show -----------------------------------------------------------------------------
k=${far[0]}
id=$(idof "$k")
sh=$(Q show "$id")
rc=$?
[ $rc -eq 0 ] && echo "$sh" | grep -qx "partition $(partof "$k")" && echo "$sh" | grep -qx 'state ready' &&
    echo "$sh" | grep -q '^from <s@sender.test>' && pass show_far_message || fail show_far_message "exit $rc: $sh"

# --- retry: defer it by hand (no engine here), then retry -------------------------------
p=$(partof "$k")
port=$(portof "$k")
redis-cli -p "$port" lrem "tern:{$p}:ready" 1 "$id" >/dev/null
redis-cli -p "$port" zadd "tern:{$p}:sched" 99999999999999 "$id" >/dev/null
before=$(Q stats --totals | stat_of scheduled)
out=$(Q retry)
st=$(Q stats --totals)
[ "$before" = 1 ] && [ "$out" = "retried 1" ] && [ "$(echo "$st" | stat_of scheduled)" = 0 ] &&
    [ "$(echo "$st" | stat_of ready)" = 12 ] && pass retry_far_message || fail retry_far_message "$before; $out; $st"

# --- delete -------------------------------------------------------------------------------
k=${far[1]}
id=$(idof "$k")
out=$(Q delete "$id")
rc=$?
st=$(Q stats --totals)
[ $rc -eq 0 ] && [ "$out" = "deleted 1" ] && [ "$(redis-cli -p "$(portof "$k")" exists "$k")" = 0 ] &&
    [ "$(echo "$st" | stat_of ready)" = 11 ] && [ "$(echo "$st" | stat_of deleted)" = 1 ] &&
    pass delete_far_message || fail delete_far_message "exit $rc: $out; $st"

# --- bounce: the DSN goes to sender.test's partition, wherever that lives ---------------------
k=${far[2]}
id=$(idof "$k")
out=$(Q bounce "$id")
rc=$?
st=$(Q stats)
[ $rc -eq 0 ] && [ "$out" = "bounced 1" ] && [ "$(redis-cli -p "$(portof "$k")" exists "$k")" = 0 ] &&
    echo "$st" | grep -q '^domain sender.test ready=1 ' && [ "$(echo "$st" | stat_of ready)" = 11 ] &&
    pass bounce_far_message || fail bounce_far_message "exit $rc: $out; $st"

# --- generate and tern-bench-inject: pipelined to every node ------------------------------------
doms=""
for i in $(seq 1 10); do doms="$doms${doms:+,}g$i.test"; done
out=$("$TERN" inject -c "$dir/c.conf" --generate 3000 --domains "$doms" --size 300 2>&1)
[ $? -eq 0 ] && [ "$(Q stats --totals | stat_of ready)" = 3011 ] && pass generate_3000 ||
    fail generate_3000 "$out; $(Q stats --totals | tr '\n' ' ')"
out=$("$TERN_BUILD/tern-bench-inject" -c "$dir/c.conf" --messages 1000 --domains 20 --size 256 2>&1)
j=$(Q stats --json --totals | $PY -c 'import json,sys; d=json.load(sys.stdin); print(d["ready"], d["enqueued"])')
echo "$out" | grep -q '^enqueued=1000 ' && [ "$j" = "4011 4013" ] && pass bench_inject_1000 ||
    fail bench_inject_1000 "$out; $j"
n=0
for p in $P1 $P2 $P3; do
    n=$((n + $(redis-cli -p "$p" eval "return #redis.call('KEYS', 'tern:{*}:m:*')" 0)))
done
[ "$n" = 4011 ] && pass messages_on_nodes_sum || fail messages_on_nodes_sum "$n message keys"

# --- a partition's slot moved between two runs -------------------------------------------------
# move_slot SLOT FROM TO: what a resharding does for one slot.
move_slot() {
    local slot=$1 from=$2 to=$3 fid tid keys p
    fid=$(redis-cli -p "$from" cluster myid)
    tid=$(redis-cli -p "$to" cluster myid)
    redis-cli -p "$to" cluster setslot "$slot" importing "$fid" >/dev/null &&
        redis-cli -p "$from" cluster setslot "$slot" migrating "$tid" >/dev/null || return 1
    while keys=$(redis-cli -p "$from" cluster getkeysinslot "$slot" 100) && [ -n "$keys" ]; do
        # shellcheck disable=SC2086
        redis-cli -p "$from" migrate 127.0.0.1 "$to" "" 0 5000 keys $keys >/dev/null || return 1
    done
    redis-cli -p "$to" cluster setslot "$slot" node "$tid" >/dev/null || return 1
    for p in $P1 $P2 $P3; do
        [ "$p" = "$to" ] || redis-cli -p "$p" cluster setslot "$slot" node "$tid" >/dev/null || return 1
    done
}
k=${far[3]}
id=$(idof "$k")
from=$(portof "$k")
dest=$P1
[ "$from" = "$P1" ] && dest=$P2
before=$(Q stats --totals)
if move_slot "$(redis-cli -p "$P1" cluster keyslot "$k")" "$from" "$dest"; then
    sh=$(Q show "$id")
    [ "$(redis-cli -p "$dest" exists "$k")" = 1 ] && [ "$(portof "$k")" = "$dest" ] &&
        echo "$sh" | grep -qx 'state ready' && [ "$(Q stats --totals)" = "$before" ] &&
        pass slot_moved_between_runs || fail slot_moved_between_runs "$sh"
else
    fail slot_moved_between_runs "moving the slot failed"
fi

# --- ASK and MOVED under an open connection (C probe) -----------------------------------------------
"$TERN_BUILD/tests/queue_cluster_probe" "$REDIS_ADDR" >"$dir/probe.out" 2>&1
rc=$?
sed 's/^\(PASS\|FAIL\) /\1 probe_/' "$dir/probe.out"
[ $rc -eq 0 ] || grep -q '^FAIL' "$dir/probe.out" || fail probe "exit $rc"

# --- a master down: reported, exit 1 --------------------------------------------------------------
redis-cli -p "$P3" shutdown nosave >/dev/null 2>&1
err=$(Q stats 2>&1)
rc=$?
[ $rc -eq 1 ] && echo "$err" | grep -q "127.0.0.1:$P3" && pass node_down_exit_1 ||
    fail node_down_exit_1 "exit $rc: $err"
[ "$TERN_FAILS" -eq 0 ]
