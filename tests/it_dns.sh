#!/bin/bash
# it_dns.sh - MX routing through DNS against a real DNS server (a private
# nsd on loopback serving a test zone); MX hosts are loopback addresses
# where sinks listen on one port (mx_port):
#  - MX preference order; equal preferences spread over the hosts;
#  - implicit MX (A of the domain, no MX); IPv6 and IPv4 both tried (an
#    AAAA nobody listens on, then the A);
#  - the first MX refuses connections: delivered through the second;
#  - null MX bounces at once with 5.1.10, NXDOMAIN with 5.1.2 (the DSNs
#    reach the sender's domain: tern.test, statically routed to a sink);
#  - SERVFAIL (a zone the server failed to load), REFUSED (a zone it does
#    not serve) and a DNS port that drops every query defer, nothing lost;
#  - answers are cached: 10 domains with the same MX host cost 10 MX and
#    2 address queries at the server, not 30; once expired (TTL capped at
#    1 s), they are asked again.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
tern_test_env
stat() { $TERN queue -c "$1" stats | awk -v k="$2" '$1==k{print $2}'; }
events() { for p in $(seq 0 15); do rcli xrange "tern:{$p}:events" - +; done; }

# Two sinks on the same port: mx-a at 127.0.0.2, mx-b at 127.0.0.3.
tern_sink a --record "$dir/a.rec" --quiet || exit 1
PORT=$SINK_PORT
kill "$SINK_PID"
"$TERN_BUILD/tern-sink" --listen 127.0.0.2:$PORT --record "$dir/a.rec" --quiet >"$dir/a.out" 2>"$dir/a.err" &
TERN_PIDS="$TERN_PIDS $!"
"$TERN_BUILD/tern-sink" --listen 127.0.0.3:$PORT --record "$dir/b.rec" --quiet >"$dir/b.out" 2>"$dir/b.err" &
TERN_PIDS="$TERN_PIDS $!"
sleep 0.3
touch "$dir/a.rec" "$dir/b.rec"

{
    echo '$TTL 300'
    echo '@ IN SOA ns.dns.test. admin.dns.test. 1 3600 600 86400 60'
    echo '@ IN NS ns.dns.test.'
    echo 'ns IN A 127.0.0.1'
    echo 'mx-a IN A 127.0.0.2'
    echo 'mx-b IN A 127.0.0.3'
    echo 'mx-dead IN A 127.0.0.4'
    echo 'mx-dual IN AAAA ::1'
    echo 'mx-dual IN A 127.0.0.2'
    echo 'order IN MX 20 mx-b.dns.test.'
    echo 'order IN MX 10 mx-a.dns.test.'
    for i in $(seq 1 20); do
        echo "eq$i IN MX 10 mx-a.dns.test."
        echo "eq$i IN MX 10 mx-b.dns.test."
    done
    echo 'implicit IN A 127.0.0.3'
    echo 'dual IN MX 10 mx-dual.dns.test.'
    echo 'refuse IN MX 10 mx-dead.dns.test.'
    echo 'refuse IN MX 20 mx-b.dns.test.'
    echo 'nullmx IN MX 0 .'
    for i in $(seq 1 10); do echo "c$i IN MX 10 mx-a.dns.test."; done
} >"$dir/dns.test.zone"
echo 'this is not a zone file' >"$dir/broken.zone"   # nsd answers SERVFAIL for it
tern_nsd dns.test "$dir/dns.test.zone" broken.test "$dir/broken.zone" || exit 1

conf() {   # file, dns servers
    tern_config "$1" <<EOC
threads = 1
tls = none
dns_servers = $2
mx_port = $PORT
dns_timeout = 300ms
dns_tries = 2
retry_base = 1h
route tern.test = 127.0.0.2:$PORT
EOC
}
conf "$dir/t.conf" "127.0.0.1:$DNS_PORT"
run() { timeout 60 $TERN run -c "$dir/t.conf" --drain -v >"$dir/$1.out" 2>"$dir/$1.err"; }
on() { awk -F'\t' -v r="$2" '$2 ~ r' "$dir/$1.rec" | wc -l; }

$TERN inject -c "$dir/t.conf" --generate 10 --domains order.dns.test --size 300 >/dev/null
eqd=$(seq -s, -f 'eq%g.dns.test' 1 20)
$TERN inject -c "$dir/t.conf" --generate 40 --domains "$eqd" --size 300 >/dev/null
$TERN inject -c "$dir/t.conf" --generate 5 --domains implicit.dns.test,dual.dns.test,refuse.dns.test \
    --size 300 >/dev/null
$TERN inject -c "$dir/t.conf" --generate 2 --domains nullmx.dns.test,nope.dns.test --size 300 >/dev/null
run main

[ "$(on a 'order\.dns\.test')" -eq 10 ] && [ "$(on b 'order\.dns\.test')" -eq 0 ] \
    && pass mx_preference_order || fail mx_preference_order "a=$(on a 'order') b=$(on b 'order')"
ea=$(on a '@eq'); eb=$(on b '@eq')
[ $((ea + eb)) -eq 40 ] && [ "$ea" -gt 0 ] && [ "$eb" -gt 0 ] \
    && pass mx_equal_preference_spread || fail mx_equal_preference_spread "a=$ea b=$eb"
[ "$(on b 'implicit\.dns\.test')" -ge 1 ] && pass implicit_mx || fail implicit_mx "$(on b implicit) at 127.0.0.3"
[ "$(on a 'dual\.dns\.test')" -ge 1 ] && grep -q 'connect to mx-dual.dns.test.*refused' "$dir/main.err" \
    && pass ipv6_then_ipv4 || fail ipv6_then_ipv4 "$(on a dual) delivered; $(grep -c mx-dual "$dir/main.err") log lines"
[ "$(on b 'refuse\.dns\.test')" -ge 1 ] && pass first_mx_refused_second_delivers \
    || fail first_mx_refused_second_delivers "$(on b refuse) at mx-b"
ev=$(events)
echo "$ev" | grep -q '^5.1.10 domain nullmx.dns.test accepts no mail' && pass null_mx_bounces_5_1_10 \
    || fail null_mx_bounces_5_1_10 "no 5.1.10 in events"
echo "$ev" | grep -q '^5.1.2 domain nope.dns.test does not exist' && pass nxdomain_bounces_5_1_2 \
    || fail nxdomain_bounces_5_1_2 "no 5.1.2 in events"
run dsn   # the bounces the first run enqueued
dsn=$(awk -F'\t' '$1=="<>" && $2=="generator@tern.test"' "$dir/a.rec" | wc -l)
[ "$dsn" -eq 2 ] && pass bounces_reach_sender || fail bounces_reach_sender "$dsn DSNs at the sender's sink"
[ "$(stat "$dir/t.conf" scheduled)" = 0 ] && [ "$(stat "$dir/t.conf" ready)" = 0 ] \
    && pass main_queue_empty || fail main_queue_empty "$($TERN queue -c "$dir/t.conf" stats | tr '\n' ' ')"

# Caching: 10 domains, one MX host: 10 MX queries and its A and AAAA.
rcli flushall >/dev/null
q0=$(tern_nsd_queries)
$TERN inject -c "$dir/t.conf" --generate 20 --domains "$(seq -s, -f 'c%g.dns.test' 1 10)" --size 300 >/dev/null
run cache
q=$(( $(tern_nsd_queries) - q0 ))
[ "$(on a '@c[0-9]+\.dns\.test')" -eq 20 ] && [ "$q" -eq 12 ] && grep -q 'cache_hit_rate=0.6' "$dir/cache.out" \
    && pass dns_answers_cached || fail dns_answers_cached "$q queries; $(grep '^dns' "$dir/cache.out")"

# TTL expiry: with the cache capped at 1 s, a destination whose answers
# expired (and whose connection closed) asks again.
rcli flushall >/dev/null
conf "$dir/ttl.conf" "127.0.0.1:$DNS_PORT"
printf 'dns_ttl_min = 1s\ndns_ttl_max = 1s\ntimeout idle = 100ms\n' >>"$dir/ttl.conf"
tern_bg 60 "$dir/ttl.out" "$dir/ttl.err" $TERN run -c "$dir/ttl.conf"
tpid=$TERN_BG_PID
q0=$(tern_nsd_queries)
$TERN inject -c "$dir/ttl.conf" --generate 1 --domains order.dns.test --size 300 >/dev/null
for _ in $(seq 100); do [ "$(stat "$dir/ttl.conf" delivered)" = 1 ] && break; sleep 0.1; done
q1=$(tern_nsd_queries)
sleep 2   # past the 1 s TTL and the 100 ms idle timeout
$TERN inject -c "$dir/ttl.conf" --generate 1 --domains order.dns.test --size 300 >/dev/null
for _ in $(seq 100); do [ "$(stat "$dir/ttl.conf" delivered)" = 2 ] && break; sleep 0.1; done
q2=$(tern_nsd_queries)
kill "$tpid"; wait "$tpid" 2>/dev/null; tern_forget_pid "$tpid"
[ "$(stat "$dir/ttl.conf" delivered)" = 2 ] && [ $((q1 - q0)) -ge 1 ] && [ $((q2 - q1)) -ge 1 ] \
    && pass ttl_expiry_asks_again \
    || fail ttl_expiry_asks_again "delivered $(stat "$dir/ttl.conf" delivered); queries $((q1 - q0)) then $((q2 - q1))"

# SERVFAIL (a zone that failed to load) and REFUSED (a zone this server
# does not serve): deferred, kept.
rcli flushall >/dev/null
$TERN inject -c "$dir/t.conf" --generate 4 --domains x.broken.test,other.example --size 300 >/dev/null
run refused
ev=$(events)
[ "$(stat "$dir/t.conf" scheduled)" = 4 ] && echo "$ev" | grep -q 'MX lookup for x.broken.test failed' \
    && echo "$ev" | grep -q 'MX lookup for other.example failed' \
    && pass servfail_and_refused_defer \
    || fail servfail_and_refused_defer "$($TERN queue -c "$dir/t.conf" stats | tr '\n' ' ')"

# A DNS server that never answers: timeouts defer.
/usr/bin/python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1])); import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(120)' "$dir/drop.port" &
TERN_PIDS="$TERN_PIDS $!"
tern_wait_file "$dir/drop.port" 50
rcli flushall >/dev/null
conf "$dir/t.conf" "127.0.0.1:$(cat "$dir/drop.port")"
$TERN inject -c "$dir/t.conf" --generate 3 --domains order.dns.test --size 300 >/dev/null
run timeout
[ "$(stat "$dir/t.conf" scheduled)" = 3 ] && grep -q 'timeouts=[1-9]' "$dir/timeout.out" \
    && pass timeout_defers || fail timeout_defers "$($TERN queue -c "$dir/t.conf" stats | tr '\n' ' '); $(grep '^dns' "$dir/timeout.out")"

[ "$TERN_FAILS" -eq 0 ]
