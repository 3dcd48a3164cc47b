#!/usr/bin/env bash
# it_cluster_master_loss.sh - a master of the queue's Redis Cluster dies
# (SIGKILL) while the engine delivers, and comes back (its AOF, fsync
# always, holds what it acknowledged). The worker's link to it is lost and
# mended on its own; the partitions on the other masters go on meanwhile,
# and nothing is lost.
#
#   cluster_loss_others_go_on  deliveries continue while the master is down
#   cluster_loss_all           every message delivered once the master is back
#   cluster_loss_empty         nothing left queued on any master
#   cluster_loss_counted       the summary counts the loss and the reconnect
set -u
cd "$(dirname "$0")/.."
. tests/queue_lib.sh
TERN_FAILS=0
tern_test_setup
# Without full coverage the two other masters keep serving their slots
# while the third is down (else the whole cluster answers CLUSTERDOWN).
tern_redis_cluster 3 "--cluster-require-full-coverage no --appendonly yes --appendfsync always" ||
    { fail cluster_start "no cluster"; exit 1; }
read -r -a PIDS <<<"$REDIS_PID"

left_all() { tern_cluster_keys 'tern:*:m:*'; }

# Each send 5 ms late, 4 connections: a few seconds of delivery.
qcluster_workload s
qstart s
qwait_lines s 300 200
kill -9 "${PIDS[2]}" 2>/dev/null
wait "${PIDS[2]}" 2>/dev/null
tern_forget_pid "${PIDS[2]}"
before=$(qlines s)
sleep 1.5
during=$(qlines s)
[ "$during" -gt "$before" ] && pass cluster_loss_others_go_on ||
    fail cluster_loss_others_go_on "$before deliveries before, $during 1.5 s later"
tern_cluster_restart 3
# ids (not lines): messages whose acks the kill lost may come twice
qwait_cluster s 3000
tern_stop "$QPID" >/dev/null 2>&1
[ "$(qids s)" = 3000 ] && pass cluster_loss_all ||
    fail cluster_loss_all "ids $(qids s) of 3000: $(grep -v '^tern: note' "$dir/s.rerr" | tail -n 4)"
[ "$(left_all)" = 0 ] && pass cluster_loss_empty || fail cluster_loss_empty "$(left_all) left"
grep -q 'redis_losses=[1-9]' "$dir/s.run" && grep -q 'redis_reconnects=[1-9]' "$dir/s.run" &&
    pass cluster_loss_counted || fail cluster_loss_counted "$(grep '^queue' "$dir/s.run")"
echo "info: $(qlines s) deliveries for 3000 messages; $(grep -o 'redis_losses=[0-9]* redis_reconnects=[0-9]*' "$dir/s.run"); $(grep -o 'acks_resent=[0-9]*' "$dir/s.run")"
exit $((TERN_FAILS > 0))
