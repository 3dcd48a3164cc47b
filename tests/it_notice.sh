#!/bin/bash
# it_notice.sh - ready notices: an idle engine takes mail as soon as it is
# queued, not at its next idle poll (set to 60 s here, so only a notice can
# bring the mail within the wait below):
#  a. mail queued into idle partitions is delivered, every message once;
#  b. the engine counted notices (`queue ... notices=N`);
#  c. after its notice connection is killed (CLIENT KILL TYPE pubsub) the
#     engine says so, reconnects, and mail queued afterwards is again
#     delivered without waiting for the poll;
#  d. `tern queue retry` (scheduled -> ready) notifies too;
#  e. mail queued while the notice connection is down (its notices reach
#     nobody, and every partition's last take came back empty) is taken as
#     soon as the subscription is back, not at the poll;
#  f. a take that empties ready is not followed by another: mail queued
#     one message at a time costs one take (one LPOP in Redis) each, not
#     two with the second empty.
set -u
cd "$(dirname "$0")/.."
. tests/queue_lib.sh
qsetup || exit 1

qsink s --threads 2 || exit 1
QTHREADS=2 qconf s <<EOC
idle_poll = 60s
EOC
qstart s
# Let every partition's first take come back empty: from then on only a
# notice (or the 60 s poll) brings a take.
sleep 1
qinject s --generate 20 --domains a.test,b.test,c.test
qwait_ids s 20 100 && pass notice_idle_engine_takes_at_once ||
    fail notice_idle_engine_takes_at_once "$(qids s) of 20 delivered in 10 s, $(qleft s) left"

rcli client kill type pubsub >/dev/null
n=0
until grep -q "ready notices lost" "$dir/s.rerr" || [ $n -ge 50 ]; do sleep 0.1; n=$((n + 1)); done
grep -q "ready notices lost" "$dir/s.rerr" && pass notice_loss_logged ||
    fail notice_loss_logged "$(tail -n 3 "$dir/s.rerr")"
# Resubscribed (1 s retry): wait until Redis sees a subscriber again.
n=0
until [ "$(rcli pubsub numsub "tern:{0}:ready" | tail -n 1)" = 1 ] || [ $n -ge 50 ]; do
    sleep 0.1; n=$((n + 1))
done
qinject s --generate 20 --domains d.test,e.test
qwait_ids s 40 100 && pass notice_after_reconnect ||
    fail notice_after_reconnect "$(qids s) of 40 delivered, $(qleft s) left"

# A deferred message made due by the operator: `tern queue retry` moves it
# to ready and notifies.
rcli hset "tern:{0}:m:late" from a@tern.test rcpts "x@f.test" domain f.test attempts 1 \
    created "$(date +%s000)" data "$(printf 'Message-ID: <late@tern.test>\r\n\r\nhi\r\n')" >/dev/null
rcli zadd "tern:{0}:sched" 9999999999999 late >/dev/null
"$TERN" queue -c "$dir/s.conf" retry >/dev/null 2>&1 ||
    fail notice_retry "tern queue retry failed"
qwait_ids s 41 100 && pass notice_after_retry ||
    fail notice_after_retry "$(qids s) of 41 delivered, $(qleft s) left"

rcli client kill type pubsub >/dev/null
n=0
until [ "$(rcli pubsub numsub "tern:{0}:ready" | tail -n 1)" = 0 ] || [ $n -ge 50 ]; do
    sleep 0.1; n=$((n + 1))
done
qinject s --generate 20 --domains g.test,h.test,i.test
qwait_ids s 61 100 && pass notice_mail_queued_while_unsubscribed ||
    fail notice_mail_queued_while_unsubscribed "$(qids s) of 61 delivered, $(qleft s) left"

sleep 0.3   # the resubscription's takes are over
rcli config resetstat >/dev/null
for k in 1 2 3 4 5; do
    qinject s --generate 1 --domains j.test
    qwait_ids s $((61 + k)) 100 || break
done
lpops=$(rcli info commandstats | tr -d '\r' | sed -n 's/^cmdstat_lpop:calls=\([0-9]*\),.*/\1/p')
[ "$(qids s)" -eq 66 ] && [ "${lpops:-0}" -eq 5 ] && pass notice_one_take_per_message ||
    fail notice_one_take_per_message "$(qids s) of 66 delivered; $lpops takes (LPOP) for 5 messages"

tern_stop "$QPID" || fail notice_clean_exit "$(tail -n 3 "$dir/s.rerr")"
notices=$(sed -n 's/^queue .*notices=\([0-9]*\).*/\1/p' "$dir/s.run")
echo "info: notices=$notices"
[ "${notices:-0}" -gt 0 ] && pass notice_counted || fail notice_counted "notices=$notices"
lines=$(qlines s)
[ "$lines" -eq 66 ] && pass notice_each_message_once || fail notice_each_message_once "$lines deliveries of 66"
[ "$TERN_FAILS" -eq 0 ]
