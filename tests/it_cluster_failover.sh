#!/usr/bin/env bash
# it_cluster_failover.sh - a master of the queue's Redis Cluster dies for
# good while the engine delivers, and its replica takes over its slots
# (the cluster's own failover). The workers cannot reconnect to the dead
# master; they read the slot map again, find the new master and go on.
#
#   failover_promoted        the replica became a master (the cluster's part)
#   failover_all             every message delivered
#   failover_empty           nothing left queued on the masters
#   failover_map_read        the engine read the map again and said so
set -u
cd "$(dirname "$0")/.."
. tests/queue_lib.sh
TERN_FAILS=0
tern_test_setup
tern_redis_cluster 3 "--cluster-require-full-coverage no" || { fail cluster_start "no cluster"; exit 1; }
tern_cluster_add_replica 3 || { fail cluster_replica "no replica"; exit 1; }
read -r -a PORTS <<<"$REDIS_CLUSTER_PORTS"
read -r -a PIDS <<<"$REDIS_PID"

# Each send 5 ms late, 4 connections: a few seconds of delivery. A short
# lease: acks the dead master took with it come back soon.
qcluster_workload s
# The replica has all of it before the master goes.
redis-cli -p "${PORTS[2]}" wait 1 5000 >/dev/null
qstart s
qwait_lines s 300 200
{ kill -9 "${PIDS[2]}"; wait "${PIDS[2]}"; } 2>/dev/null
tern_forget_pid "${PIDS[2]}"
n=150
until redis-cli -p "$TERN_REPLICA_PORT" info replication 2>/dev/null | grep -q '^role:master'; do
    n=$((n - 1))
    [ "$n" -gt 0 ] || break
    sleep 0.1
done
[ "$n" -gt 0 ] && pass failover_promoted || fail failover_promoted "the replica is still a replica"
REDIS_CLUSTER_PORTS="${PORTS[0]} ${PORTS[1]} $TERN_REPLICA_PORT"
qwait_cluster s 3000
tern_stop "$QPID" >/dev/null 2>&1
[ "$(qids s)" = 3000 ] && pass failover_all ||
    fail failover_all "ids $(qids s) of 3000: $(grep -v '^tern: note' "$dir/s.rerr" | tail -n 4)"
left=$(tern_cluster_keys 'tern:*:m:*')
[ "$left" = 0 ] && pass failover_empty || fail failover_empty "$left left"
grep -q 'slot map read again' "$dir/s.rerr" && grep -q 'cluster_maps=[1-9]' "$dir/s.run" &&
    pass failover_map_read || fail failover_map_read "$(grep -i cluster "$dir/s.rerr" | tail -n 3)"
echo "info: $(qlines s) deliveries for 3000 messages; $(grep -o 'redis_losses=[0-9]*' "$dir/s.run") $(grep -o 'cluster_maps=[0-9]*' "$dir/s.run")"
exit $((TERN_FAILS > 0))
