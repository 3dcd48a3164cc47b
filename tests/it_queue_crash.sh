#!/bin/bash
# it_queue_crash.sh - an engine killed with SIGKILL while thousands of
# messages are leased to it:
#  a. a fresh engine started afterwards delivers every message (the dead
#     engine's leases expire and return to ready; lease = 3s here);
#  b. duplicates (record lines minus distinct Message-IDs) are at most the
#     messages in doubt at the kill: those the sink had recorded (their
#     final dot arrived) while their queue entry was still in Redis (the
#     ack never came). Those are at most the messages leased at the kill;
#  c. the queue ends empty and the second engine exits 0.
set -u
cd "$(dirname "$0")/.."
. tests/queue_lib.sh
qsetup || exit 1
N=4000

qsink s --reply-delay 5 || exit 1
qconf s <<EOC
lease = 3s
batch = 256
max_in_memory = 3000
max_connections = 10
EOC
qinject s --generate $N --domains a.test,b.test --size 1k
qstart s first
# The engine itself, not the `timeout` wrapping it.
n=50
while [ -z "$(pgrep -P "$QPID")" ] && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
EPID=$(pgrep -P "$QPID")
qwait_lines s 300 150
kill -KILL "$EPID"
wait "$QPID" 2>/dev/null
tern_forget_pid "$QPID"
inflight=$(qleased)
sleep 0.5   # what the sink still had in its sockets gets recorded
at_kill=$(qlines s)
# In doubt: recorded by the sink, still queued in Redis.
cut -f9 "$dir/s.rec" | sed -n 's/^<\(.*\)@tern.test>$/\1/p' | sort -u >"$dir/recorded"
rcli --scan --pattern 'tern:*:m:*' | sed 's/.*:m://' | sort -u >"$dir/queued"
in_doubt=$(comm -12 "$dir/recorded" "$dir/queued" | wc -l)
echo "info: killed with $at_kill delivered, $inflight leased, $in_doubt in doubt"
[ "$inflight" -ge 1000 ] && pass thousands_in_flight_at_kill ||
    fail thousands_in_flight_at_kill "only $inflight leased"

qstart s second
SPID=$QPID
if qwait_ids s $N 450; then
    pass crash_nothing_lost
else
    fail crash_nothing_lost "$(qids s) of $N delivered, $(qleft s) left"
fi
dups=$(($(qlines s) - $(qids s)))
echo "info: $dups duplicates, $in_doubt in doubt, $inflight leased at the kill"
[ "$dups" -le "$in_doubt" ] && [ "$in_doubt" -le "$inflight" ] && pass crash_duplicates_bounded ||
    fail crash_duplicates_bounded "$dups duplicates, $in_doubt in doubt, $inflight leased"
[ "$(qleft s)" = 0 ] && pass crash_queue_empty || fail crash_queue_empty "$(qleft s) left"
tern_stop "$SPID" && pass second_engine_clean_exit ||
    fail second_engine_clean_exit "$(tail -n 3 "$dir/s.second.rerr")"
[ "$TERN_FAILS" -eq 0 ]
