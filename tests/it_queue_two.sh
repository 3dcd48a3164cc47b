#!/bin/bash
# it_queue_two.sh - two engine processes draining one queue:
#  a. every message is delivered exactly once (the sink records each
#     Message-ID once, no duplicates);
#  b. both engines delivered part of it;
#  c. the queue ends empty, and both exit 0 on SIGTERM.
set -u
cd "$(dirname "$0")/.."
. tests/queue_lib.sh
qsetup || exit 1
N=3000

qsink s --reply-delay 1 || exit 1
qconf s <<EOC
batch = 64
max_in_memory = 256
max_connections = 4
EOC
qinject s --generate $N --domains a.test,b.test,c.test,d.test --size 1k
qstart s one
P1=$QPID
qstart s two
P2=$QPID
qwait_ids s $N 450 || fail two_engines_all_delivered "$(qids s) of $N, $(qleft s) left"
tern_stop "$P1" && ok1=1 || ok1=0
tern_stop "$P2" && ok2=1 || ok2=0
lines=$(qlines s)
ids=$(qids s)
[ "$ids" -eq $N ] && [ "$lines" -eq $N ] && pass two_engines_each_message_once ||
    fail two_engines_each_message_once "$lines deliveries, $ids distinct, $N queued"
d1=$(sed -n 's/^summary delivered=\([0-9]*\).*/\1/p' "$dir/s.one.run")
d2=$(sed -n 's/^summary delivered=\([0-9]*\).*/\1/p' "$dir/s.two.run")
echo "info: engine one delivered ${d1:-?}, engine two ${d2:-?}"
[ "${d1:-0}" -gt 0 ] && [ "${d2:-0}" -gt 0 ] && [ $((d1 + d2)) -eq $N ] &&
    pass two_engines_share_the_work || fail two_engines_share_the_work "one=$d1 two=$d2"
[ "$(qleft s)" = 0 ] && pass two_engines_queue_empty || fail two_engines_queue_empty "$(qleft s) left"
[ "$ok1" = 1 ] && [ "$ok2" = 1 ] && pass two_engines_clean_exit ||
    fail two_engines_clean_exit "$(tail -n 2 "$dir/s.one.rerr") $(tail -n 2 "$dir/s.two.rerr")"
[ "$TERN_FAILS" -eq 0 ]
