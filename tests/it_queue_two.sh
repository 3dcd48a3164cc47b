#!/bin/bash
# it_queue_two.sh - two engine processes draining one queue, in one Redis
# and then in a Redis Cluster of three masters (each engine with its own
# links to every master):
#  a. every message is delivered exactly once (the sink records each
#     Message-ID once, no duplicates);
#  b. both engines delivered part of it;
#  c. the queue ends empty, and both exit 0 on SIGTERM.
set -u
cd "$(dirname "$0")/.."
. tests/queue_lib.sh
qsetup || exit 1
N=3000

# two_engines NAME: the checks above on whatever REDIS_ADDR names; the
# sink NAME, the checks' names suffixed with SUFFIX.
two_engines() {
    local s=$1 sfx=$2
    qsink "$s" --reply-delay 1 || exit 1
    qconf "$s" <<EOC
batch = 64
max_in_memory = 256
max_connections = 4
EOC
    qinject "$s" --generate $N --domains a.test,b.test,c.test,d.test --size 1k
    qstart "$s" one
    local p1=$QPID
    qstart "$s" two
    local p2=$QPID
    qwait_ids "$s" $N 450 || fail "two_engines_all_delivered$sfx" "$(qids "$s") of $N, $(qleft "$s") left"
    local ok1=0 ok2=0
    tern_stop "$p1" && ok1=1
    tern_stop "$p2" && ok2=1
    local lines ids d1 d2
    lines=$(qlines "$s")
    ids=$(qids "$s")
    [ "$ids" -eq $N ] && [ "$lines" -eq $N ] && pass "two_engines_each_message_once$sfx" ||
        fail "two_engines_each_message_once$sfx" "$lines deliveries, $ids distinct, $N queued"
    d1=$(sed -n 's/^summary delivered=\([0-9]*\).*/\1/p' "$dir/$s.one.run")
    d2=$(sed -n 's/^summary delivered=\([0-9]*\).*/\1/p' "$dir/$s.two.run")
    echo "info: $s: engine one delivered ${d1:-?}, engine two ${d2:-?}"
    [ "${d1:-0}" -gt 0 ] && [ "${d2:-0}" -gt 0 ] && [ $((d1 + d2)) -eq $N ] &&
        pass "two_engines_share_the_work$sfx" || fail "two_engines_share_the_work$sfx" "one=$d1 two=$d2"
    [ "$(qleft "$s")" = 0 ] && pass "two_engines_queue_empty$sfx" ||
        fail "two_engines_queue_empty$sfx" "$(qleft "$s") left"
    [ "$ok1" = 1 ] && [ "$ok2" = 1 ] && pass "two_engines_clean_exit$sfx" ||
        fail "two_engines_clean_exit$sfx" "$(tail -n 2 "$dir/$s.one.rerr") $(tail -n 2 "$dir/$s.two.rerr")"
}

two_engines s ""
tern_redis_cluster 3 || { fail two_engines_cluster "no cluster"; exit 1; }
two_engines c _cluster
[ "$TERN_FAILS" -eq 0 ]
