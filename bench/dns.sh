#!/bin/bash
# dns.sh - MX routing at scale: a private nsd serves a zone of D distinct
# destination domains whose MX records point to a few hosts (all on
# 127.0.0.1, where one sink listens on mx_port); tern delivers M messages
# per domain with --drain. Prints the DNS figures tern reports (lookups,
# queries sent, cache hit rate, answers, timeouts), the queries nsd
# counted, lookups and queries per second of the run, and delivery totals.
#
#   bench/dns.sh [--domains D] [--per-domain M] [--mx-hosts H] [--threads T]
#
# Defaults: 10000 domains, 1 message each, 4 MX hosts, 2 threads.
set -eu
cd "$(dirname "$0")/.."
export TERN_BUILD=${TERN_BUILD:-build}
. scripts/lib.sh

D=10000 M=1 H=4 T=2
while [ $# -gt 0 ]; do
    case $1 in
    --domains) D=$2; shift ;;
    --per-domain) M=$2; shift ;;
    --mx-hosts) H=$2; shift ;;
    --threads) T=$2; shift ;;
    *) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    shift
done

dir=$(mktemp -d /tmp/tern-dns-bench.XXXXXX)
trap 'tern_cleanup; rm -rf "$dir"' EXIT
tern_init "$dir"
tern_redis >/dev/null
tern_sink sink --quiet --threads 1 >/dev/null

{
    echo '$TTL 3600'
    echo '@ IN SOA ns.bench.test. admin.bench.test. 1 3600 600 86400 300'
    echo '@ IN NS ns.bench.test.'
    echo 'ns IN A 127.0.0.1'
    for h in $(seq 1 "$H"); do echo "mx$h IN A 127.0.0.1"; done
    awk -v d="$D" -v h="$H" 'BEGIN {
        for (i = 1; i <= d; i++) {
            a = (i % h) + 1; b = ((i + 1) % h) + 1
            printf "d%d IN MX 10 mx%d.bench.test.\nd%d IN MX 20 mx%d.bench.test.\n", i, a, i, b
        }
    }'
} >"$dir/bench.test.zone"
tern_nsd bench.test "$dir/bench.test.zone" >/dev/null

tern_config "$dir/t.conf" <<EOC
threads = $T
tls = none
dns_servers = 127.0.0.1:$DNS_PORT
mx_port = $SINK_PORT
max_connections = 2
EOC
# in chunks: one argument may not exceed 128 KiB
for lo in $(seq 1 2000 "$D"); do
    hi=$((lo + 1999 < D ? lo + 1999 : D))
    doms=$(seq -s, -f 'd%g.bench.test' "$lo" "$hi")
    $TERN_BUILD/tern inject -c "$dir/t.conf" --generate $(((hi - lo + 1) * M)) --domains "$doms" \
        --size 500 >/dev/null
done
q0=$(tern_nsd_queries)
t0=$(date +%s.%N)
$TERN_BUILD/tern run -c "$dir/t.conf" --drain >"$dir/run.out" 2>"$dir/run.err"
t1=$(date +%s.%N)
q=$(( $(tern_nsd_queries) - q0 ))
grep '^dns ' "$dir/run.out"
awk -v wall="$(echo "$t1 - $t0" | bc)" -v nsdq="$q" '
    /^dns / { for (i = 2; i <= NF; i++) { split($i, kv, "="); s[kv[1]] += kv[2] } }
    /^summary/ { sum = $0 }
    END {
        printf "domains=%s lookups=%d queries=%d nsd_queries=%d cache_hit_rate=%.3f wall_s=%.2f " \
               "lookups_per_s=%.0f queries_per_s=%.0f\n", '"$D"', s["lookups"], s["queries"], nsdq,
               s["lookups"] ? 1 - s["queries"] / s["lookups"] : 0, wall,
               s["lookups"] / wall, s["queries"] / wall
        print sum
    }' "$dir/run.out"
