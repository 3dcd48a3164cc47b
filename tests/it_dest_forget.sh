#!/bin/bash
# it_dest_forget.sh - a worker forgets destinations it no longer needs
# (destination_forget, engine/worker_forget.c), against a plaintext sink
# and a private nsd: 300 domains (200 routed by MX records to one host
# that takes 8 connections at a time, so most wait on its wait list, 50 to
# an MX host each; 50 by a static route), two workers,
# destination_forget = 1s, one engine:
#  a. all 300 messages arrive; every destination is then forgotten (the
#     engine keeps running until its -v log says so for all 300);
#  b. mail for 100 of the same domains comes again: each destination is
#     made again and delivers, and is forgotten again;
#  c. the DNS answers outlived the destinations: the second round asked
#     the DNS server nothing;
#  d. the counters of every destination went out as dest-stats events
#     before it was forgotten (300 domains, 400 messages in all);
#  e. a destination whose connections fail (dead.test, a closed port) is
#     kept while its backoff (retry_base) runs;
#  f. the summary counts dests_forgotten=400 dests_live=1; every message
#     arrived exactly once, only dead.test's is left, the exit is clean;
#  g. MX hosts no destination uses any more are forgotten too
#     (worker_hosts.c): the 50 hosts of one domain each, which the second
#     round does not use, are all gone before the engine stops.
set -u
cd "$(dirname "$0")/.."
. tests/queue_lib.sh
qsetup || exit 1
NDNS=250
NOWN=50      # of the NDNS, those with an MX host of their own
NSTATIC=50

qsink f || exit 1
{
    echo '$TTL 300'
    echo '@ IN SOA ns.fz.test. admin.fz.test. 1 3600 600 86400 60'
    echo '@ IN NS ns.fz.test.'
    echo 'ns IN A 127.0.0.1'
    echo 'mx IN A 127.0.0.1'
    for i in $(seq 1 $((NDNS - NOWN))); do echo "d$i IN MX 10 mx.fz.test."; done
    for i in $(seq $((NDNS - NOWN + 1)) $NDNS); do
        echo "d$i IN MX 10 mx$i.fz.test."
        echo "mx$i IN A 127.0.0.1"
    done
} >"$dir/fz.test.zone"
tern_nsd fz.test "$dir/fz.test.zone" || exit 1

tern_config "$dir/f.conf" <<EOC
threads = 2
tls = none
dns_servers = 127.0.0.1:$DNS_PORT
mx_port = $SINK_PORT
route s.test = 127.0.0.1:$SINK_PORT
route dead.test = 127.0.0.1:1
max_connections_per_host = 8
retry_base = 1h
timeout idle = 200ms
destination_forget = 1s
EOC

# forgotten: destinations the running engine has forgotten so far
forgotten() { grep -c 'destination forgotten' "$dir/f.rerr" 2>/dev/null; true; }
wait_forgotten() {
    local n=300
    while [ "$(forgotten)" -lt "$1" ] && [ "$n" -gt 0 ]; do
        sleep 0.1
        n=$((n - 1))
    done
    [ "$(forgotten)" -ge "$1" ]
}
doms() { { seq -f "d%g.fz.test" 1 "$1"; seq -f "s%g.s.test" 1 "$2"; } | paste -sd,; }

qinject f --generate $((NDNS + NSTATIC)) --domains "$(doms $NDNS $NSTATIC)" --size 500
qinject f --generate 1 --domains dead.test --size 500
tern_bg "$QRUN_LIMIT" "$dir/f.run" "$dir/f.rerr" "$TERN" run -c "$dir/f.conf" -v
QPID=$TERN_BG_PID

N1=$((NDNS + NSTATIC))
qwait_lines f $N1 300
[ "$(qids f)" = $N1 ] || fail first_round_delivered "$(qids f) of $N1, $(qleft f) left"
wait_forgotten $N1 && pass all_destinations_forgotten ||
    fail all_destinations_forgotten "$(forgotten) of $N1 forgotten"
q1=$(tern_nsd_queries)

# The same domains again (50 DNS-routed, 50 static): made anew, delivered.
qinject f --generate 100 --domains "$(doms 50 50)" --size 500
N2=$((N1 + 100))
qwait_lines f $N2 300
[ "$(qids f)" = $N2 ] && pass forgotten_destinations_deliver_again ||
    fail forgotten_destinations_deliver_again "$(qids f) of $N2, $(qleft f) left"
q2=$(tern_nsd_queries)
wait_forgotten $N2 && pass made_again_and_forgotten_again ||
    fail made_again_and_forgotten_again "$(forgotten) of $N2 forgotten"
[ -n "$q1" ] && [ "$q1" = "$q2" ] && pass dns_answers_outlive_destinations ||
    fail dns_answers_outlive_destinations "queries $q1 after the first round, $q2 after the second"

# g. the 50 one-domain MX hosts are not used by the second round
own_forgotten() { grep -c 'MX host mx[0-9][0-9]*\.fz\.test:[0-9]* forgotten' "$dir/f.rerr" 2>/dev/null; true; }
n=300
while [ "$(own_forgotten)" -lt $NOWN ] && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
[ "$(own_forgotten)" = $NOWN ] && pass unused_mx_hosts_forgotten ||
    fail unused_mx_hosts_forgotten "$(own_forgotten) of $NOWN forgotten"

grep -q 'dead.test: destination forgotten' "$dir/f.rerr" &&
    fail backoff_keeps_destination "dead.test forgotten during its backoff" ||
    pass backoff_keeps_destination
tern_stop "$QPID" && ok=1 || ok=0

# dest-stats events: per domain, msgs summed over its events
rcli --scan --pattern '*:events' >"$dir/streams"
while read -r k; do rcli xrange "$k" - +; done <"$dir/streams" |
    awk '$0 == "status" { getline; st = $0 } $0 == "msgs" { getline; m = $0 }
         $0 == "domain" { getline; if (st == "dest-stats") { n[$0] += m } st = "" }
         END { for (d in n) { nd++; t += n[d] } print nd + 0, t + 0 }' >"$dir/stats.sum"
read -r sd sm <"$dir/stats.sum"
[ "$sd" = $((N1 + 1)) ] && [ "$sm" = $N2 ] && pass counters_written_before_forgetting ||
    fail counters_written_before_forgetting "dest-stats for $sd domains, $sm messages (want $((N1 + 1)), $N2)"

sum=$(grep '^summary ' "$dir/f.run")
hf=$(echo "$sum" | sed -n 's/.* hosts_forgotten=\([0-9]*\).*/\1/p')
echo "$sum" | grep -q " dests_forgotten=$N2 dests_live=1 " && [ "${hf:-0}" -ge $NOWN ] &&
    pass summary_counts_forgotten ||
    fail summary_counts_forgotten "${sum:-no summary} $(tail -n 2 "$dir/f.rerr")"
[ "$(qlines f)" = $N2 ] && [ "$(qids f)" = $N2 ] && [ "$(qleft f)" = 1 ] &&
    pass each_message_once || fail each_message_once "$(qlines f) deliveries, $(qids f) distinct, $(qleft f) left"
[ "$ok" = 1 ] && ! grep -q 'AddressSanitizer\|runtime error' "$dir/f.rerr" && pass clean_exit ||
    fail clean_exit "$(tail -n 3 "$dir/f.rerr")"
[ "$TERN_FAILS" -eq 0 ]
