#!/bin/bash
# it_queue_memory.sh - bounded memory: 20,000 queued 1 KiB messages drained
# by an engine with max_messages_in_memory = 100 (two workers, 50 each):
#  a. every message is delivered, once;
#  b. the engine never held more than the cap (its `queue
#     peak_in_memory=N` line: per-worker peaks summed);
#  c. the queue ends empty;
#  d. events_maxlen = 1000 caps each events stream (MAXLEN ~: about 1000,
#     never the 5000 outcomes a partition had).
# (bench/queue_cost.sh measures the same with 1,000,000 messages.)
set -u
cd "$(dirname "$0")/.."
. tests/queue_lib.sh
qsetup || exit 1
N=20000
CAP=100

qsink s --threads 2 || exit 1
QTHREADS=2 qconf s <<EOC
max_messages_in_memory = $CAP
max_connections = 8
events_maxlen = 1000
EOC
qinject s --generate $N --domains a.test,b.test,c.test,d.test --size 1k
qdrain s ||
    fail drain "tern run --drain: exit $?: $(tail -n 3 "$dir/s.rerr")"
ids=$(qids s)
[ "$ids" -eq $N ] && [ "$(qlines s)" -eq $N ] && pass memory_cap_all_delivered ||
    fail memory_cap_all_delivered "$(qlines s) deliveries, $ids distinct of $N"
peak=$(sed -n 's/^queue peak_in_memory=\([0-9]*\).*/\1/p' "$dir/s.run")
echo "info: peak_in_memory=$peak cap=$CAP"
[ -n "$peak" ] && [ "$peak" -gt 0 ] && [ "$peak" -le $CAP ] && pass memory_cap_never_exceeded ||
    fail memory_cap_never_exceeded "peak_in_memory=$peak, cap $CAP"
[ "$(qleft s)" = 0 ] && pass memory_cap_queue_empty || fail memory_cap_queue_empty "$(qleft s) left"
lens=$(for k in $(rcli --scan --pattern 'tern:*:events'); do rcli xlen "$k"; done | sort -n | paste -sd' ' -)
max=$(echo "$lens" | tr ' ' '\n' | tail -n 1)
[ -n "$max" ] && [ "$max" -ge 1000 ] && [ "$max" -le 1200 ] && pass events_maxlen_caps_streams ||
    fail events_maxlen_caps_streams "stream lengths: $lens"
[ "$TERN_FAILS" -eq 0 ]
