#!/bin/bash
# it_queue_memory.sh - bounded memory: 20,000 queued 1 KiB messages drained
# by an engine with max_messages_in_memory = 100 (two workers, 50 each):
#  a. every message is delivered, once;
#  b. the engine never held more than the cap (its `queue
#     peak_in_memory=N` line: per-worker peaks summed);
#  c. the queue ends empty;
#  d. events_maxlen = 1000 caps each events stream (MAXLEN ~: about 1000,
#     never the 5000 outcomes a partition had).
# Then the byte cap: 300 x 100 KiB and 3 x 1.5 MiB messages drained with
# max_bytes_in_memory = 2m (two workers, 1 MiB each):
#  e. every message is delivered, once, the bodies larger than a worker's
#     share too (each goes alone);
#  f. the body bytes held never passed the cap, except by those larger
#     bodies (`peak_bytes_in_memory`: per-worker peaks summed).
# Then the fetch window: 200 x 100 KiB and 2 x 3 MB drained by one worker
# whose byte cap would hold them all (max_bytes_in_memory = 256m):
#  g. every message is delivered, and the bodies were asked for a window
#     (FETCH_WINDOW_BYTES, 2 MiB) at a time, not 26 MB at once, which
#     Redis would have copied into replies before sending the first; a
#     body over the window was asked for alone (`peak_fetch_bytes`: the
#     most a worker had asked for and not received: one 3 MB body).
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

qsink b --threads 2 || exit 1
QTHREADS=2 qconf b <<EOC
max_bytes_in_memory = 2m
max_connections = 8
EOC
qinject b --generate 300 --domains a.test,b.test,c.test,d.test --size 100k
qinject b --generate 3 --domains a.test,b.test --size 1500k
qdrain b ||
    fail bytes_drain "tern run --drain: exit $?: $(tail -n 3 "$dir/b.rerr")"
ids=$(qids b)
[ "$ids" -eq 303 ] && [ "$(qlines b)" -eq 303 ] && pass bytes_cap_all_delivered ||
    fail bytes_cap_all_delivered "$(qlines b) deliveries, $ids distinct of 303"
bpeak=$(sed -n 's/^queue .*peak_bytes_in_memory=\([0-9]*\).*/\1/p' "$dir/b.run")
echo "info: peak_bytes_in_memory=$bpeak cap=2097152"
# Each worker holds at most its 1 MiB, or one 1.5 MiB body alone.
[ -n "$bpeak" ] && [ "$bpeak" -ge 102400 ] && [ "$bpeak" -le $((2 * 1536000)) ] &&
    pass bytes_cap_never_exceeded || fail bytes_cap_never_exceeded "peak_bytes_in_memory=$bpeak"
[ "$(qleft b)" = 0 ] && pass bytes_cap_queue_empty || fail bytes_cap_queue_empty "$(qleft b) left"

qsink f --threads 2 || exit 1
QTHREADS=1 qconf f <<EOC
max_bytes_in_memory = 256m
EOC
qinject f --generate 200 --domains a.test,b.test --size 100k
qinject f --generate 2 --domains a.test --size 3000k
qdrain f ||
    fail window_drain "tern run --drain: exit $?: $(tail -n 3 "$dir/f.rerr")"
fpeak=$(sed -n 's/^queue .*peak_fetch_bytes=\([0-9]*\).*/\1/p' "$dir/f.run")
echo "info: peak_fetch_bytes=$fpeak (window 2 MiB, bodies of 100 KiB and 3 MB)"
[ "$(qids f)" -eq 202 ] && [ -n "$fpeak" ] && [ "$fpeak" -ge 3000000 ] && [ "$fpeak" -le 3200000 ] &&
    pass fetch_window_bounds_redis_replies ||
    fail fetch_window_bounds_redis_replies "$(qids f) of 202 delivered; peak_fetch_bytes=$fpeak"
[ "$TERN_FAILS" -eq 0 ]
