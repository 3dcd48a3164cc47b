#!/bin/bash
# it_queue_crash.sh - an engine killed with SIGKILL while thousands of
# messages are leased to it:
#  a. a fresh engine started afterwards delivers every message (the dead
#     engine's leases expire and return to ready; lease = 3s here);
#  b. duplicates (record lines minus distinct Message-IDs) are at most the
#     number of messages leased at the moment of the kill: only a message
#     in flight can be delivered twice;
#  c. the queue ends empty and the second engine exits 0.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
. tests/queue_lib.sh
tern_test_setup
tern_redis || exit 1
N=4000

qsink s --reply-delay 5 || exit 1
qconf s <<EOC
lease = 3s
batch = 256
max_in_memory = 3000
max_connections = 10
EOC
"$TERN" inject -c "$dir/s.conf" --generate $N --domains a.test,b.test --size 1k >/dev/null ||
    fail inject "tern inject failed"
qstart s first
# The engine itself, not the `timeout` wrapping it.
n=50
while [ -z "$(pgrep -P "$QPID")" ] && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
EPID=$(pgrep -P "$QPID")
n=150
while [ "$(qlines s)" -lt 300 ] && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
kill -KILL "$EPID"
wait "$QPID" 2>/dev/null
tern_forget_pid "$QPID"
inflight=$(qleased)
at_kill=$(qlines s)
echo "info: killed with $at_kill delivered, $inflight leased"
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
echo "info: $dups duplicates, $inflight in flight at the kill"
[ "$dups" -le "$inflight" ] && pass crash_duplicates_bounded ||
    fail crash_duplicates_bounded "$dups duplicates > $inflight in flight"
[ "$(qleft s)" = 0 ] && pass crash_queue_empty || fail crash_queue_empty "$(qleft s) left"
qstop "$SPID" && pass second_engine_clean_exit ||
    fail second_engine_clean_exit "$(tail -n 3 "$dir/s.second.rerr")"
[ "$TERN_FAILS" -eq 0 ]
