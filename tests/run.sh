#!/bin/bash
# run.sh - the whole test suite: unit tests, integration tests (real
# redis-server, real TLS on loopback), a short fuzz run, and the unit and
# integration tests again under ASan+UBSan. Ends with "N passed, M failed".
#
# Every test program prints "PASS name" / "FAIL name" lines; a program that
# exits non-zero without printing a FAIL line counts as one failure.
#   TERN_FAST=1     skip the sanitizer pass and the fuzz run
#   TERN_FUZZ_SECS  seconds per fuzz target (default 6; TERN_TEST_JOBS targets at a time)
# The sanitizer pass skips it_bench (the benchmark harness's quick mode),
# it_shaping (25 s of waiting out rates whose code unit_shaping covers
# under the sanitizers too), it_postfix and it_exim (interop with Postfix
# and Exim: the SMTP and TLS paths they drive are the other scripts' too),
# to keep the suite well under 10 minutes on two cores.
#   TERN_TEST_JOBS  integration scripts (and fuzz targets) run at a time
#                   (default: the number of cores, at least 2). They spend most of their time waiting
#                   on sockets and child processes, and each takes its own
#                   free ports and temporary directories, so two run side by
#                   side without meeting; their results print in the usual
#                   order once all are done.
set -u
cd "$(dirname "$0")/.."
top=$PWD
passed=0
failed=0
test_jobs=${TERN_TEST_JOBS:-$(nproc)}
[ "$test_jobs" -ge 2 ] 2>/dev/null || test_jobs=2
failures=()
logdir=$(mktemp -d /tmp/tern-tests.XXXXXX)
trap 'rm -rf "$logdir"' EXIT

log_of() {   # label: its log file
    echo "$logdir/$(echo "$1" | tr '/ ' '__').log"
}

run_one() {   # label, command...
    local label=$1; shift
    local log
    log=$(log_of "$label")
    local t0=$SECONDS
    "$@" >"$log" 2>&1
    tally "$label" "$log" $? "$((SECONDS - t0)) s"
}

tally() {   # label, log, exit status, time taken
    local label=$1 log=$2 rc=$3 took=$4
    local p f
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "FAIL $label: exit status $rc" >>"$log"
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -gt 0 ]; then
        failures+=("$label")
        echo "--- $label: $p passed, $f failed ($took)"
        grep -v '^PASS ' "$log" | tail -n 40
    else
        echo "--- $label: $p passed ($took)"
    fi
}

# fuzz_one NAME BINARY: one libFuzzer run from a copy of its corpus; prints
# PASS/FAIL (runs in the background, one per core).
fuzz_one() {
    local name=$1 bin=$2
    local corpus=tests/fuzz/corpus/${name#fuzz_}
    local work
    work=$(mktemp -d "$logdir/corpus.XXXXXX")
    [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/ 2>/dev/null
    if "$bin" -max_total_time="$secs" -dict=tests/fuzz/smtp.dict "$work" >/dev/null 2>"$logdir/$name.err"; then
        echo "PASS $name ($secs s)"
    else
        tail -n 30 "$logdir/$name.err"
        echo "FAIL $name"
    fi
}

# run_bg LABEL COMMAND...: run_one's work in the background; collect_bg
# tallies the results in the order the jobs were started.
bg_labels=()
bg_pids=()
run_bg() {
    local label=$1; shift
    local log
    log=$(log_of "$label")
    bg_labels+=("$label")
    ( t0=$SECONDS; "$@" >"$log" 2>&1
      echo "$? $((SECONDS - t0))" >"$log.rc" ) &
    bg_pids+=($!)
    # Count only these jobs: the sanitizer build may be running beside them.
    while [ "$(bg_running)" -ge "$test_jobs" ]; do wait -n; done
}

bg_running() {
    local p n=0
    for p in "${bg_pids[@]}"; do kill -0 "$p" 2>/dev/null && n=$((n + 1)); done
    echo "$n"
}

collect_bg() {
    local label log rc took p
    for p in "${bg_pids[@]}"; do wait "$p"; done
    for label in "${bg_labels[@]}"; do
        log=$(log_of "$label")
        read -r rc took <"$log.rc"
        tally "$label" "$log" "$rc" "$took s"
    done
    bg_labels=()
    bg_pids=()
}

# The integration scripts, the longest first (so that the last to finish
# are short ones), the rest in name order.
scripts_longest_first() {
    local slow="tests/it_bench.sh tests/it_pool.sh tests/it_shaping.sh tests/it_multishot.sh tests/it_deliver.sh tests/it_sink.sh tests/it_queue_redis.sh tests/it_hostile.sh" t
    for t in $slow; do [ -f "$t" ] && echo "$t"; done
    for t in tests/it_*.sh; do
        case " $slow " in *" $t "*) ;; *) echo "$t" ;; esac
    done
}

suite() {   # build dir, label prefix
    local b=$1 pfx=$2
    for t in "$b"/tests/unit_*; do
        [ -x "$t" ] || continue
        run_one "$pfx$(basename "$t")" "$t"
    done
    local t
    for t in $(scripts_longest_first); do
        # skipped under the sanitizers: see the top of this file
        case "$pfx$(basename "$t")" in
            asan/it_bench.sh | asan/it_shaping.sh | asan/it_postfix.sh | asan/it_exim.sh) continue ;;
        esac
        run_bg "$pfx$(basename "$t" .sh)" env TERN_BUILD="$b" bash "$t"
    done
    collect_bg
}

# The fuzz and sanitizer builds compile (niced) while the first pass runs:
# its integration tests mostly wait on sockets.
if [ "${TERN_FAST:-0}" != 1 ]; then
    ( nice make -s fuzz >"$logdir/fuzz-build.log" 2>&1
      echo $? >"$logdir/fuzz-build.rc"
      nice make -s BUILD=build/asan SAN=1 all >"$logdir/asan-build.log" 2>&1
      echo $? >"$logdir/asan-build.rc" ) &
    builds=$!
fi

suite build ""

if [ "${TERN_FAST:-0}" != 1 ]; then
    secs=${TERN_FUZZ_SECS:-6}
    wait "$builds"
    if [ "$(cat "$logdir/fuzz-build.rc")" = 0 ]; then
        # The targets are CPU-bound and independent: TERN_TEST_JOBS at a time.
        for f in build/fuzz/fuzz_*; do
            run_bg "$(basename "$f")" fuzz_one "$(basename "$f")" "$f"
        done
        collect_bg
    else
        cat "$logdir/fuzz-build.log" | tail -n 20
        failed=$((failed + 1)); failures+=("fuzz build")
    fi
    if [ "$(cat "$logdir/asan-build.rc")" = 0 ]; then
        export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
        export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
        suite build/asan "asan/"
    else
        tail -n 30 "$logdir/asan-build.log"
        failed=$((failed + 1)); failures+=("asan build")
    fi
fi

if [ ${#failures[@]} -gt 0 ]; then
    echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed in $((SECONDS / 60))m$((SECONDS % 60))s"
[ "$failed" -eq 0 ]
