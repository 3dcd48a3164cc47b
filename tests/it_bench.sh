#!/bin/bash
# it_bench.sh - the benchmark works (no timing thresholds: figures are not
# checked, only that they are produced and that nothing was lost):
#  a. `bench/run all --quick --json F`: exits 0, prints the table (header
#     with machine and commit, a row per workload), progress on stderr,
#     valid JSON in which every workload's runs delivered every message and
#     the sink counted each one, and the machine's speed (x25519 us) was
#     timed around each run; --aof always is said in the report, the
#     injection's AOF is compacted before the drain; --rtt is said in the
#     report and the JSON, and no delivery beats the round trip; --tls-max
#     1.2 --resumption off: every handshake the sink saw was a full TLS 1.2
#     one, the report and the JSON say so; a paced run whose
#     injector fell behind is called out;
#     the listener workloads: tern-loadgen's N messages accepted by the
#     listener (with and without AUTH), every one at the sink with the
#     SHA-256 of the message sent, an accepted rate reported; with a new
#     connection per message (listener-auth-conn) one connection and one
#     AUTH each, all but the first few from the auth cache;
#  a3. report.py: a paced run behind its rate, a run bounded by
#     redis-server's one thread, and one during which the machine's speed
#     moved, are called out; the targets' verdict, met and missed, only for
#     workloads in their own shape and not on a quick run;
#  a4. --size: every workload's messages at that size; bad sizes and runs
#     too big for memory refused before anything starts;
#  a5. the peers installed here (Postfix, Exim): every message through
#     each to the sink, connections reused, TLS resumed, latency read,
#     nothing left;
#  a6. the peers' latency parsers on made-up logs;
#  b. tern-loadgen: its one result line, pipelined and not, many
#     recipients, STARTTLS verified against the test CA, a new connection
#     every K messages resuming TLS, exactly ceil(N / K) of them;
#  c. tern-loadgen against a sink that refuses every message: refused=N,
#     exit 1;
#  d. tern-crypto-cost prints its three figures, and exits 2 on bad input;
#     tern-byte-cost likewise its six;
#  e. bench/redis_cost.sh (tern-redis-cost on a private redis-server)
#     prints its six figures, and the tool exits 2 without an address;
#  f. bench/ab: two pairs run in alternating order, every message of each
#     run delivered, B's own options on B's runs, the summary's ratios; ab_report.py's ratios and counts
#     on made-up runs; what it refuses.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
tern_test_setup
tern_certs || exit 1
PY=/usr/bin/python3

# a. every workload, quick
if timeout 300 bench/run all --quick --json "$dir/bench.json" --out "$dir/bench" >"$dir/run.out" 2>"$dir/run.err"; then
    pass "bench run all --quick exits 0"
else
    fail "bench run all --quick" "exit $?: $(tail -5 "$dir/run.err" | paste -sd' ' -)"
fi
if grep -q '^tern delivery benchmark: .*commit ' "$dir/run.out" && grep -q '^machine: .* cores' "$dir/run.out"; then
    pass "table header names the machine, date and commit"
else
    fail "table header" "$(head -3 "$dir/run.out" | paste -sd' ' -)"
fi
missing=""
for w in sink sink-tail bulk large tail multi plaintext transactional listener listener-auth listener-auth-conn; do
    grep -q "^$w 1 " "$dir/run.out" || missing="$missing $w"
done
[ -z "$missing" ] && pass "a table row per workload" || fail "table rows" "missing:$missing"
grep -q 'remaining [0-9]* (ready' "$dir/run.err" && pass "progress on stderr" ||
    fail "progress" "no 'remaining' line on stderr"
if "$PY" - "$dir/bench.json" >"$dir/json.out" 2>&1 <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["machine"]["cores"] >= 1 and doc["commit"] and doc["date"], "machine/commit/date"
names = [w["name"] for w in doc["workloads"]]
assert names == ["sink", "sink-tail", "bulk", "large", "tail", "multi", "plaintext", "transactional",
                 "listener", "listener-auth", "listener-auth-conn"], names
for w in doc["workloads"]:
    assert w["runs"], w["name"] + ": no runs"
    for r in w["runs"]:
        n = w["params"]["messages"]
        assert r["delivered"] == n, "%s: delivered %s of %s" % (w["name"], r["delivered"], n)
        assert r["sink_messages"] == n, "%s: the sink counted %s of %s" % (w["name"], r["sink_messages"], n)
        assert r["msgs_per_s"] > 0, w["name"] + ": no rate"
        # the machine's speed around every run, before and after
        assert r["cal_x25519_before"] > 0 and r["cal_x25519_after"] > 0 and r["cal_aes_us"] > 0, \
            w["name"] + ": no calibration"
        assert abs(r["cal_x25519_us"] - (r["cal_x25519_before"] + r["cal_x25519_after"]) / 2) < 0.1, \
            w["name"] + ": calibration mean"
        if r["kind"] == "tern":
            for k in ("steady_msgs_per_s", "engine_us_per_msg", "redis_us_per_msg", "sink_us_per_msg", "engine_rss_mib",
                      "p50_ms", "p99_ms", "max_ms", "hs_full", "hs_resumed", "tier_preferred"):
                assert k in r, "%s: no %s" % (w["name"], k)
            if not w["name"].startswith("listener"):   # bench/listener.sh records its own
                for k in ("site_grown", "site_deepened", "verify_cached", "slow_start_woken"):
                    assert k in r, "%s: no %s" % (w["name"], k)
            assert (r["tier_plaintext"] == n) == (w["name"] == "plaintext"), w["name"] + ": tier mix"
for w in doc["workloads"]:
    if w["name"].startswith("listener"):
        r, n = w["runs"][0], w["params"]["messages"]
        assert r["accepted"] == n and r["listener_messages"] == n, "%s: accepted %s of %s" % (w["name"], r["accepted"], n)
        assert r["listener_queue_failures"] == 0, w["name"] + ": queue failures"
        assert r["sink_records"] == n and r["sha_ok"] == n, "%s: %s of %s SHA-256 equal" % (w["name"], r["sha_ok"], n)
        assert r["accepted_msgs_per_s"] > 0, w["name"] + ": no accepted rate"
        assert (r["listener_auth_ok"] > 0) == w["name"].startswith("listener-auth"), w["name"] + ": AUTH"
        if w["name"] == "listener-auth-conn":
            assert r["listener_conns"] >= n and r["listener_auth_ok"] == n, "%s: %s connections, %s AUTHs for %s" % (
                w["name"], r["listener_conns"], r["listener_auth_ok"], n)
            # the first sessions (tern-loadgen's 20 at once) wait for one check
            assert 1 <= r["listener_auth_checks"] <= 20 and r["listener_auth_cached"] >= n - 20, \
                "%s: %s checks, %s from the cache" % (w["name"], r["listener_auth_checks"], r["listener_auth_cached"])
threads = {w["name"]: w["params"]["sink_threads"] for w in doc["workloads"]}
cores = min(doc["machine"]["cores"], 64)
assert threads["tail"] == threads["sink-tail"] == cores and threads["bulk"] == threads["large"] == 1, threads
assert doc["settings"]["sink_threads"] == "per workload", doc["settings"]["sink_threads"]
tail = [w for w in doc["workloads"] if w["name"] == "tail"][0]["runs"][0]
assert tail["conns"] == tail["delivered"], "tail: one message per connection"
assert tail["hs_resumed"] > 0, "tail: no resumed handshake"
assert tail["slow_start_woken"] > 0, "tail: no destination woken by a session"
EOF
then
    pass "JSON valid, every message delivered and counted by the sink"
else
    fail "JSON" "$(tail -3 "$dir/json.out" | paste -sd' ' -)"
fi

# a2. redis durability is an option and the report says which; the
#     injection's AOF is rewritten before the drain (redis logged a
#     rewrite), and the rewrites during the drain are counted
if timeout 120 bench/run bulk --quick --aof always --out "$dir/aof" >"$dir/aof.out" 2>"$dir/aof.err" &&
    grep -q '^redis: AOF always' "$dir/aof.out" && grep -q '^bulk 1 ' "$dir/aof.out"; then
    pass "bench run --aof always"
else
    fail "bench run --aof always" "$(tail -3 "$dir/aof.err" | paste -sd' ' -)"
fi
if grep -q '^redis AOF: appendfsync always; the injection.s AOF is rewritten (compacted) before each drain; rewrites during the drains: [0-9]' "$dir/aof.out" &&
    grep -q 'Background append only file rewriting started' "$dir/aof/work/bulk-1/redis.log" &&
    grep -q 'aof_rewrites=[0-9]' "$dir/aof/work/runs.kv"; then
    pass "bench --aof: AOF compacted before the drain, rewrites counted"
else
    fail "bench --aof compaction" "$(grep '^redis' "$dir/aof.out" | paste -sd' ' -)"
fi

# a2a. --redis-cluster: the queue in a cluster of two masters; every
#     message delivered, the report and the JSON say so, and the redis
#     column has the masters' CPU
if timeout 120 bench/run bulk --quick --redis-cluster 2 --json "$dir/cl.json" --out "$dir/cl" >"$dir/cl.out" 2>"$dir/cl.err" &&
    grep -q '^redis: Redis Cluster of 2 master(s) on loopback TCP' "$dir/cl.out" &&
    "$PY" - "$dir/cl.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
r = d["workloads"][0]["runs"][0]
assert d["settings"]["redis_cluster"] == 2, d["settings"]
assert int(r["delivered"]) == int(r["messages"]) and float(r["redis_us_per_msg"]) > 0, r
EOF
then
    pass "bench run --redis-cluster 2: delivered, said in the report and the JSON"
else
    fail "bench run --redis-cluster" "$(grep -E '^(redis|bulk)' "$dir/cl.out" | paste -sd' ' -) $(tail -3 "$dir/cl.err" | paste -sd' ' -)"
fi

# a2b. --rtt: the sink holds what it sends (tern-sink --latency), the report
#     and the JSON say so, and no message is delivered in less than one
#     round trip after its enqueue (a lower bound, not a timing threshold)
if timeout 120 bench/run bulk --quick --rtt 30 --json "$dir/rtt.json" --out "$dir/rtt" >"$dir/rtt.out" 2>"$dir/rtt.err" &&
    grep -q 'every exchange with the sink 30 ms round trip' "$dir/rtt.out" &&
    "$PY" - "$dir/rtt.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
r = d["workloads"][0]["runs"][0]
assert d["settings"]["rtt_ms"] == 30, d["settings"]
assert int(r["delivered"]) == int(r["messages"]) and float(r["p50_ms"]) >= 30, r
EOF
then
    pass "bench run --rtt: held sends, said in the report and the JSON"
else
    fail "bench run --rtt" "$(grep -E '^(redis|bulk)' "$dir/rtt.out" | paste -sd' ' -) $(tail -3 "$dir/rtt.err" | paste -sd' ' -)"
fi

# a2c. --tls-max 1.2 --resumption off: the sink speaks TLS 1.2 at most,
#     issues no tickets and keeps no session ids, tern offers no session;
#     every handshake full and TLS 1.2 by both counts, tern-loadgen's too
#     (sink-tail), and the report's TLS column says what was asked and
#     what was negotiated
if timeout 120 bench/run sink-tail tail --quick --messages 200 --tls-max 1.2 --resumption off --json "$dir/t12.json" \
        --out "$dir/t12" >"$dir/t12.out" 2>"$dir/t12.err" &&
    grep -q 'receiver up to TLS 1.2, resumption off; negotiated TLS 1.2 100%' "$dir/t12.out" &&
    "$PY" - "$dir/t12.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["workloads"][0]["runs"][0]
assert int(s["sink_hs_full"]) == 200 and int(s["sink_hs_resumed"]) == 0 and int(s["sink_tls12"]) == 200, s
r = d["workloads"][1]["runs"][0]
assert d["settings"]["tls_max"] == "1.2" and d["settings"]["resumption"] is False, d["settings"]
assert int(r["delivered"]) == 200 and int(r["hs_full"]) == int(r["conns"]) == 200, r
assert int(r["hs_resumed"]) == 0 and int(r["sink_hs_resumed"]) == 0, r
assert int(r["sink_tls12"]) == 200 and int(r["sink_tls13"]) == 0, r
# one chain check per worker, the rest from the cache (tls/verify_cache.h)
assert int(r["verify_cached"]) >= 200 - d["machine"]["cores"] - 2, r
EOF
then
    pass "bench run --tls-max 1.2 --resumption off: full TLS 1.2 handshakes (tern and tern-loadgen), said in the report and the JSON"
else
    fail "bench run --tls-max/--resumption" "$(grep -E '^(sink-tail|tail)' "$dir/t12.out" | paste -sd' ' -) $(tail -3 "$dir/t12.err" | paste -sd' ' -)"
fi

# a3. report.py on made-up run files: made_up_meta NAME AOF RUNS starts
#     $dir/NAME.meta (the workload lines follow), made_up_report NAME
#     reads it with $dir/NAME.runs into $dir/NAME.out
made_up_meta() { printf 'date=x\ncommit=x\ncores=2\naof=%s\nruns=%s\nquick=0\nsink_threads=1\n' "$2" "$3" >"$dir/$1.meta"; }
made_up_report() { $PY bench/report.py --meta "$dir/$1.meta" --runs "$dir/$1.runs" >"$dir/$1.out" 2>&1; }
# called_out NAME TEST YES NO: $dir/NAME.out has a line matching YES and
# none matching NO
called_out() {
    if grep -q "$3" "$dir/$1.out" && ! grep -q "$4" "$dir/$1.out"; then
        pass "report: $2 is called out"
    else
        fail "report: $2" "$(tail -4 "$dir/$1.out" | paste -sd' ' -)"
    fi
}

# a3. a paced run whose injector fell behind its rate says so (one run at
#     its pace, one at 60% of it)
made_up_meta pace always 2
printf 'workload=transactional messages=0 size=4096 rcpts=1 destinations=100 msgs_per_conn=10000 tls=starttls rate=1000\n' >>"$dir/pace.meta"
printf 'kind=tern workload=transactional run=%s msgs_per_s=%s rate=1000 enqueue_rate=%s\n' 1 995 998 2 600 601 >"$dir/pace.runs"
made_up_report pace
called_out pace "a paced run that fell behind its rate" \
    '^  transactional run 2: the injector fell behind: it enqueued 601 msg/s of the 1000 asked' \
    'run 1: the injector fell behind'

# a3. a run whose redis-server thread was busier (in % of one core) than
#     the machine (in % of all cores) says the queue bounded it; one that
#     was not says nothing (made-up runs: 1 KiB with BDAT and with DATA)
made_up_meta rb off 1
printf 'workload=%s messages=100000 size=1024 rcpts=1 destinations=100 msgs_per_conn=10000 tls=starttls rate=\n' \
    bulk multi >>"$dir/rb.meta"
printf 'kind=tern workload=%s run=1 msgs_per_s=%s engine_us_per_msg=%s redis_us_per_msg=%s sink_us_per_msg=%s\n' \
    bulk 64506 6.9 14.9 3.4 multi 58404 11.7 13.7 6.7 >"$dir/rb.runs"
made_up_report rb
called_out rb "a run bounded by redis-server's one thread" \
    "^  bulk: redis-server's one thread was busy 96% of the run .*, the machine 81%: the queue" \
    "^  multi: redis-server"

# a3. a run during which the machine's speed moved by more than a quarter
#     (x25519 before and after) says so; one that moved less does not
made_up_meta speed off 2
printf 'workload=bulk messages=100 size=4096 rcpts=1 destinations=100 msgs_per_conn=10000 tls=starttls rate=\n' >>"$dir/speed.meta"
printf 'kind=tern workload=bulk run=%s msgs_per_s=1000 cal_x25519_us=%s cal_x25519_before=%s cal_x25519_after=%s\n' \
    1 70 66 74 2 100 70 130 >"$dir/speed.runs"
made_up_report speed
called_out speed "a run on a machine whose speed moved" \
    "^  bulk run 2: the machine's speed moved during the run (x25519 70.0 us before, 130.0 after)" \
    "^  bulk run 1: the machine's speed moved"

# a3. the targets: each workload run in its own shape is weighed against
#     the issue's targets (and a peer's rate), met or missed; a workload of
#     another size, and a quick run, get no verdict
made_up_meta tg off 1
printf 'workload=bulk messages=100000 size=4096 rcpts=1 destinations=100 msgs_per_conn=10000 tls=starttls rate=\n' >>"$dir/tg.meta"
printf 'workload=tail messages=20000 size=4096 rcpts=1 destinations=10000 msgs_per_conn=1 tls=starttls rate=\n' >>"$dir/tg.meta"
printf 'workload=large messages=10000 size=20000 rcpts=1 destinations=100 msgs_per_conn=10000 tls=starttls rate=\n' >>"$dir/tg.meta"
{
    printf 'kind=tern workload=bulk run=1 msgs_per_s=52000 engine_us_per_msg=10.5 cal_x25519_us=80\n'
    printf 'kind=peer peer=postfix workload=bulk msgs_per_s=400\n'
    printf 'kind=tern workload=tail run=1 msgs_per_s=4000 hs_full=2 hs_resumed=98\n'
    printf 'kind=tern workload=large run=1 msgs_per_s=12000\n'
} >"$dir/tg.runs"
if $PY bench/report.py --meta "$dir/tg.meta" --runs "$dir/tg.runs" --json "$dir/tg.json" >"$dir/tg.out" 2>&1 &&
    grep -q '^targets (issue 7, set for a 2-core machine; .*x25519 80 us' "$dir/tg.out" &&
    grep -q '^  bulk: 52,000 msg/s (at least 50,000): met; 10.5 engine us/msg (at most 10): missed; 130.0x postfix (at least 20x): met$' "$dir/tg.out" &&
    grep -q '^  tail: 4,000 msg/s (at least 5,000): missed; 98.0% resumed (at least 95%): met$' "$dir/tg.out" &&
    ! grep -q '^  large:' "$dir/tg.out" &&
    $PY -c 'import json, sys; t = json.load(open(sys.argv[1]))["targets"]; assert [(x["workload"], x["figure"], x["met"]) for x in t] == [("bulk", "msgs_per_s", True), ("bulk", "engine_us_per_msg", False), ("bulk", "ratio_postfix", True), ("tail", "msgs_per_s", False), ("tail", "resumed_pct", True)], t' "$dir/tg.json"; then
    pass "report: the targets, met and missed, in the table and the JSON"
else
    fail "report: targets" "$(grep -A3 '^targets' "$dir/tg.out" | paste -sd' ' -)"
fi
sed -i 's/^quick=0$/quick=1/' "$dir/tg.meta"
$PY bench/report.py --meta "$dir/tg.meta" --runs "$dir/tg.runs" >"$dir/tg-quick.out" 2>&1 &&
    ! grep -q '^targets' "$dir/tg-quick.out" && pass "report: no target verdict on a quick run" ||
    fail "report: targets on a quick run" "$(grep -A3 '^targets' "$dir/tg-quick.out" | paste -sd' ' -)"

# a4. --size sets every workload's message size: the JSON's params and
#     the sink's byte count say so; sizes out of range, and runs whose
#     bodies would not fit in memory, are refused before anything starts
if timeout 120 bench/run bulk large --quick --size 20000 --json "$dir/size.json" --out "$dir/size" \
        >"$dir/size.out" 2>"$dir/size.err" &&
    "$PY" - "$dir/size.json" >"$dir/size.py" 2>&1 <<'EOF2'
import json, sys
doc = json.load(open(sys.argv[1]))
for w in doc["workloads"]:
    assert w["params"]["size"] == 20000, (w["name"], w["params"]["size"])
    for r in w["runs"]:
        n = w["params"]["messages"]
        assert r["delivered"] == n and r["sink_messages"] == n, w["name"]
EOF2
then
    pass "bench --size: every workload at that size, every message delivered"
else
    fail "bench --size" "$(tail -3 "$dir/size.err" "$dir/size.py" 2>/dev/null | paste -sd' ' -)"
fi
sink_bytes=$(sed -n 's/^bytes=//p' "$dir/size/work/large-1/sink.stats" 2>/dev/null)
n_large=$(sed -n 's/^messages=//p' "$dir/size/work/large-1/sink.stats" 2>/dev/null)
if [ -n "$sink_bytes" ] && [ -n "$n_large" ] && [ "$n_large" -gt 0 ] &&
    awk -v b="$sink_bytes" -v n="$n_large" 'BEGIN { exit !(b / n > 19000 && b / n < 21000) }'; then
    pass "bench --size: the sink received ~20,000 bytes a message"
else
    fail "bench --size bytes" "sink bytes=$sink_bytes messages=$n_large"
fi
bench/run bulk --size 63 >/dev/null 2>&1
rc1=$?
bench/run large --messages 100000000 --out "$dir/size-big" >/dev/null 2>"$dir/size-big.err"
rc2=$?
if [ $rc1 = 2 ] && [ $rc2 = 2 ] && grep -q 'do not fit in half the available memory' "$dir/size-big.err" &&
    [ ! -e "$dir/size-big/work/large-1" ]; then
    pass "bench --size: out of range and too much for memory refused up front"
else
    fail "bench --size limits" "exits $rc1 $rc2: $(head -2 "$dir/size-big.err" | paste -sd' ' -)"
fi

# a5. the peers (bench/peers/*.sh), each that is installed here: the same
#     workload through a private Postfix and a private Exim to the same
#     sink; every message arrives, connections are reused and TLS sessions
#     resumed, Postfix's drain is timed alone (filled on hold first), and
#     nothing of theirs is left running
peers=""
for p in postfix exim; do
    if why=$(. "bench/peers/$p.sh" && peer_available); then peers="$peers $p"; else echo "SKIP peer $p: $why"; fi
done
if [ -n "$peers" ]; then
    # the peers drop to their own users, which must reach the run's files:
    # not under $dir (mode 700)
    peerdir=$(mktemp -d /tmp/tern-peers.XXXXXX)
    chmod 755 "$peerdir"
    trap 'tern_cleanup; rm -rf "$dir" "$peerdir"' EXIT
    peer_args=()
    for p in $peers; do peer_args+=(--peer "$p"); done
    if timeout 300 bench/run bulk --quick "${peer_args[@]}" --json "$dir/peers.json" --out "$peerdir" \
        >"$dir/peers.out" 2>"$dir/peers.err" &&
        "$PY" - "$dir/peers.json" $peers >"$dir/peers.check" 2>&1 <<'EOF2'
import json, sys
doc, want = json.load(open(sys.argv[1])), sys.argv[2:]
w = doc["workloads"][0]
got = [r["peer"] for r in w["peer_runs"]]
assert got == want, "peer rows %s, want %s" % (got, want)
for r in w["peer_runs"]:
    n = r["messages"]
    assert r["delivered"] == n and r["sink_messages"] == n, "%s: delivered %s of %s" % (r["peer"], r["delivered"], n)
    assert r["msgs_per_s"] > 0 and r["engine_us_per_msg"] > 0, r["peer"] + ": no rate or CPU"
    conns = r["sink_hs_full"] + r["sink_hs_resumed"]
    assert 0 < conns < n, "%s: %s connections for %s messages" % (r["peer"], conns, n)
    assert r["sink_hs_resumed"] > 0, r["peer"] + ": no TLS session resumed"
    assert isinstance(r["p50_ms"], (int, float)) and r["max_ms"] >= r["p50_ms"], r["peer"] + ": no latency"
# Postfix is filled first (on hold) and its drain alone timed, as tern's
d = [p["describe"] for p in doc["peers"] if p.get("peer") == "postfix" and p.get("describe")]
assert "postfix" not in want or (d and "on hold; then released at once" in d[0]), d
EOF2
    then
        pass "bench --peer$(printf ' %s' $peers): every message through each, connections reused, TLS resumed"
    else
        fail "bench peers" "$(tail -q -n 3 "$dir/peers.err" "$dir/peers.check" 2>/dev/null | paste -sd' ' -)"
    fi
    left=$(pgrep -f "$peerdir/" | paste -sd' ' -)
    [ -z "$left" ] && ! ls -d /sys/fs/cgroup/cpuacct/tern-bench-* >/dev/null 2>&1 &&
        pass "bench peers: no process or cgroup of theirs left" || fail "bench peers left" "processes: $left"
fi

# a6. the peers' latency parsers on made-up logs (no peer needed): Exim's
#     QT= (1m2.5s is 62,500 ms) and Postfix's delay=
mkdir -p "$dir/exlog/log" "$dir/pflog/log"
printf '%s\n' "t 1 => a@b R=r T=t QT=0.25s DT=0.1s" "t 2 <= x@y S=1" "t 3 => c@d R=r T=t QT=1m2.5s DT=0s" \
    "t 4 => e@f R=r T=t QT=2s" >"$dir/exlog/log/mainlog"
printf '%s\n' "x: to=<a@b>, relay=r, delay=0.3, delays=0/0/0/0, dsn=2.0.0, status=sent (250)" \
    "x: to=<c@d>, relay=r, delay=1.5, delays=0/0/0/0, dsn=4.0.0, status=deferred (451)" >"$dir/pflog/log/maillog"
ex=$(. bench/exim.sh && EX_DIR=$dir/exlog && ex_latency)
pf=$(. bench/postfix.sh && PF_DIR=$dir/pflog && pf_latency)
[ "$ex" = "250 2000 62500" ] && [ "$pf" = "300 300 300" ] && pass "peer latency parsers (Exim QT=, Postfix delay=)" ||
    fail "peer latency parsers" "exim '$ex', postfix '$pf'"

# b. the load generator
tern_sink lg --cert "$CERTS/server.pem" --key "$CERTS/server.key" --quiet --stats-file "$dir/lg.stats"
LG=$TERN_BUILD/tern-loadgen
out=$(timeout 60 "$LG" --host 127.0.0.1 --port "$SINK_PORT" --messages 300 --conns 4 --starttls \
    --ca-file "$CERTS/ca.pem")
if [[ $out =~ ^sent=300\ refused=0\ seconds=[0-9.]+\ msgs_per_s=[0-9]+\ cpu_us_per_msg=[0-9.]+$ ]]; then
    pass "loadgen: STARTTLS, pipelined, one result line"
else
    fail "loadgen starttls" "$out"
fi
out=$(timeout 60 "$LG" --host 127.0.0.1 --port "$SINK_PORT" --messages 20 --conns 2 --rcpts 7 \
    --no-pipeline --starttls --size 20000 --from a@b.test --to-domain c.test)
[[ $out == "sent=20 refused=0 "* ]] && pass "loadgen: --no-pipeline, 7 recipients, 20 KB" ||
    fail "loadgen no-pipeline" "$out"
tern_wait_stat "$dir/lg.stats" messages 320
got=$(tern_stat "$dir/lg.stats" messages)
[ "$got" = 320 ] && pass "loadgen: the sink counted every message" || fail "loadgen count" "sink counted $got of 320"

tern_sink lgm --cert "$CERTS/server.pem" --key "$CERTS/server.key" --quiet --stats-file "$dir/lgm.stats"
out=$(timeout 60 "$LG" --host 127.0.0.1 --port "$SINK_PORT" --messages 30 --conns 3 --msgs-per-conn 2 \
    --starttls --ca-file "$CERTS/ca.pem")
# the count is final once it is reached (the sink counts at accept, and
# tern-loadgen has closed every connection): one more rewrite shows any
# connection too many
tern_wait_stat "$dir/lgm.stats" connections 15 && sleep 0.3
conns=$(tern_stat "$dir/lgm.stats" connections)
resumed=$(tern_stat "$dir/lgm.stats" tls_resumed)
if [[ $out == "sent=30 refused=0 "* ]] && [ "$conns" = 15 ] && [ "${resumed:-0}" -gt 0 ]; then
    pass "loadgen: --msgs-per-conn 2: 15 connections, TLS resumed"
else
    fail "loadgen msgs-per-conn" "$out; connections $conns, resumed $resumed"
fi
# 7 messages, 2 a connection: 4 connections, never a fifth that finds none
# left (each reserves its share when it opens)
out=$(timeout 60 "$LG" --host 127.0.0.1 --port "$SINK_PORT" --messages 7 --conns 3 --msgs-per-conn 2 \
    --starttls --ca-file "$CERTS/ca.pem")
tern_wait_stat "$dir/lgm.stats" connections 19 && sleep 0.3
conns=$(tern_stat "$dir/lgm.stats" connections)
[[ $out == "sent=7 refused=0 "* ]] && [ "$conns" = 19 ] &&
    pass "loadgen: --msgs-per-conn: no connection opens with no message left for it" ||
    fail "loadgen msgs-per-conn remainder" "$out; connections $((conns - 15)) for 7 messages"

# c. a refusing receiver
tern_sink refuse --no-starttls --data-reply "554 5.7.1 no thanks" --quiet
out=$(timeout 60 "$LG" --host 127.0.0.1 --port "$SINK_PORT" --messages 12 --conns 3 2>/dev/null)
rc=$?
[[ $out == "sent=0 refused=12 "* ]] && [ $rc = 1 ] && pass "loadgen: refusals counted, exit 1" ||
    fail "loadgen refused" "$out (exit $rc)"

# d. the key exchange's cost: three figures, each a positive number
out=$(timeout 60 "$TERN_BUILD/tern-crypto-cost" 50)
[[ $out =~ ^x25519_us=[0-9.]+\ p256_us=[0-9.]+\ aes128gcm_4k_us=[0-9.]+$ ]] && pass "crypto-cost: figures printed" ||
    fail "crypto-cost" "$out"
"$TERN_BUILD/tern-crypto-cost" 0 >/dev/null 2>&1
[ $? = 2 ] && pass "crypto-cost: bad iterations, exit 2" || fail "crypto-cost usage" "exit not 2"

# d. a body's cost per step: six figures, each a number (their sizes are
# the machine's, not checked)
out=$(timeout 60 "$TERN_BUILD/tern-byte-cost" 20)
num='[0-9]+\.[0-9]+'
[[ $out =~ ^memcpy_cold_us=$num\ memcpy_hot_us=$num\ seal_us=$num\ open_us=$num\ unix_us=$num\ tcp_us=$num$ ]] &&
    pass "byte-cost: figures printed" || fail "byte-cost" "$out"
"$TERN_BUILD/tern-byte-cost" 10 0 >/dev/null 2>&1
[ $? = 2 ] && pass "byte-cost: bad size, exit 2" || fail "byte-cost usage" "exit not 2"

# e. Redis's cost per step: six positive figures, the event's share is the difference,
# and an event's memory is in the hundreds of bytes (its fields alone are ~250)
out=$(timeout 120 bench/redis_cost.sh --messages 2000 --rounds 1 2>&1)
if [[ $out =~ ^take_us=([0-9.]+)\ hmget_us=([0-9.]+)\ ack_us=([0-9.]+)\ ack_no_event_us=([0-9.]+)\ event_us=(-?[0-9.]+)\ total_us=([0-9.]+)\ event_bytes=([0-9]+)$ ]] &&
    awk -v t="${BASH_REMATCH[1]}" -v h="${BASH_REMATCH[2]}" -v a="${BASH_REMATCH[3]}" -v b="${BASH_REMATCH[7]}" \
        'BEGIN { exit !(t > 0 && h > 0 && a > 0 && b >= 100 && b < 4096) }'; then
    pass "redis-cost: figures printed"
else
    fail "redis-cost" "$out"
fi
"$TERN_BUILD/tern-redis-cost" >/dev/null 2>&1
[ $? = 2 ] && pass "redis-cost: no address, exit 2" || fail "redis-cost usage" "exit not 2"

# f. bench/ab with the same build on both sides (no revision to build):
#    the order alternates, every run delivered everything, ratios are there
#    and B's own option (--b) reached B's runs only
if timeout 300 bench/ab "$TERN_BUILD" "$TERN_BUILD" --pairs 2 --json "$dir/ab.json" --out "$dir/ab" -- bulk --quick \
    --b --threads 1 >"$dir/ab.out" 2>"$dir/ab.err"; then
    pass "bench/ab: two pairs exit 0"
else
    fail "bench/ab" "exit $?: $(tail -3 "$dir/ab.err" | paste -sd' ' -)"
fi
if grep -q "engine threads 0 (one per core)" "$dir/ab/pair-1-a.out" && grep -q "engine threads 1;" "$dir/ab/pair-2-b.out"; then
    pass "bench/ab: --b options on B's runs only"
else
    fail "bench/ab --b" "$(grep -h 'engine threads' "$dir"/ab/pair-*.out | paste -sd' ' -)"
fi
order=$(sed -n 's/^bench\/ab: pair \([0-9]\), \([ab]\)$/\1\2/p' "$dir/ab.err" | paste -sd' ' -)
[ "$order" = "1a 1b 2b 2a" ] && pass "bench/ab: the order alternates" || fail "bench/ab order" "$order"
if "$PY" - "$dir/ab.json" "$dir/ab" >"$dir/ab.check" 2>&1 <<'EOF'
import glob, json, sys
doc = json.load(open(sys.argv[1]))
s = doc["summary"]["bulk"]
assert s["msgs_per_s"]["pairs"] == 2 and s["msgs_per_s"]["ratio_median"] > 0, s["msgs_per_s"]
assert 0 <= s["engine_us_per_msg"]["b_better"] <= 2, s["engine_us_per_msg"]
runs = glob.glob(sys.argv[2] + "/pair-*.json")
assert len(runs) == 4, runs
for f in runs:
    w = json.load(open(f))["workloads"][0]
    assert w["runs"][0]["delivered"] == w["params"]["messages"], f
EOF
then
    pass "bench/ab: JSON summary, every run delivered everything"
else
    fail "bench/ab JSON" "$(tail -3 "$dir/ab.check" | paste -sd' ' -)"
fi
# ab_report.py on made-up runs: B faster in two pairs of three, its engine
# cheaper in all three, cheaper against the sink in two; the medians and
# the ratios' medians are exact
mkdir -p "$dir/abfake"
i=0
for v in "1000 10.0 5.0" "1100 9.0 5.0" "1000 10.0 4.0" "900 9.5 4.75" "1000 10.0 5.0" "1050 8.0 4.0"; do
    i=$((i + 1))
    read -r rate eng sink <<<"$v"
    printf '{"workloads": [{"name": "bulk", "runs": [{"msgs_per_s": %s, "engine_us_per_msg": %s, "sink_us_per_msg": %s}]}]}\n' \
        "$rate" "$eng" "$sink" >"$dir/abfake/$i.json"
done
if "$PY" bench/ab_report.py --a x --b y --json "$dir/abfake/sum.json" a="$dir/abfake/1.json" b="$dir/abfake/2.json" \
    b="$dir/abfake/4.json" a="$dir/abfake/3.json" a="$dir/abfake/5.json" b="$dir/abfake/6.json" >"$dir/abfake/out" 2>&1 &&
    "$PY" - "$dir/abfake/sum.json" >>"$dir/abfake/out" 2>&1 <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]["bulk"]
assert abs(s["msgs_per_s"]["ratio_median"] - 1.05) < 1e-9 and s["msgs_per_s"]["b_better"] == 2, s["msgs_per_s"]
assert abs(s["engine_us_per_msg"]["ratio_median"] - 0.9) < 1e-9 and s["engine_us_per_msg"]["b_better"] == 3, s
assert s["msgs_per_s"]["a_median"] == 1000 and s["msgs_per_s"]["b_median"] == 1050, s["msgs_per_s"]
# eng/sink per run: A 2.0, 2.5, 2.0; B 1.8, 2.0, 2.0: ratios 0.9, 0.8, 1.0
e = s["engine_per_sink"]
assert abs(e["ratio_median"] - 0.9) < 1e-9 and e["b_better"] == 2 and e["pairs"] == 3, e
assert abs(e["a_median"] - 2.0) < 1e-9 and abs(e["b_median"] - 2.0) < 1e-9, e
EOF
then
    pass "ab_report: ratios, medians and counts of made-up pairs"
else
    fail "ab_report" "$(tail -3 "$dir/abfake/out" | paste -sd' ' -)"
fi
"$PY" bench/ab_report.py --a x --b y a="$dir/abfake/1.json" >/dev/null 2>&1 &&
    fail "ab_report: an unpaired run" "accepted" || pass "ab_report: an unpaired run refused"
bench/ab no-such-revision-or-dir -- bulk --quick >/dev/null 2>&1 &&
    fail "bench/ab: unknown A" "accepted" || pass "bench/ab: an unknown revision refused"
bench/ab "$TERN_BUILD" -- bulk --runs 2 >/dev/null 2>&1
[ $? = 2 ] && pass "bench/ab: --runs after -- refused (exit 2)" || fail "bench/ab --runs" "exit not 2"

exit $((TERN_FAILS > 0))
