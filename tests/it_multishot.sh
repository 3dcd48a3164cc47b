#!/bin/bash
# it_multishot.sh - the delivery worker's multishot receives from its
# provided buffer ring (docs/config.md: recv_multishot, recv_buffers), real
# redis-server and the sink over STARTTLS:
#  a. a ring of 2 buffers shared by 8 connections (4 domains, 2 each): the
#     ring wraps hundreds of times and runs dry; every message delivered
#     exactly once and byte-identical, and every buffer is back in the ring
#     at exit (none leaked). A buffer handed back too early is caught in the
#     ASan pass (tests/run.sh): sanitizer builds overwrite each buffer as it
#     goes back (worker_bufs_put), so the replies read garbage and nothing
#     is delivered (tried: recycling before on_bytes fails every check here);
#  b. the same over plaintext (no STARTTLS) with a ring of 1 buffer;
#  c. recv_multishot = no: the single-shot path delivers the same way;
#  d. recv_buffers out of range is refused by check-config.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
tern_test_env

N=600
domains=m1.test,m2.test,m3.test,m4.test

# hashes FILE: the SHA-256 of every queued body, sorted (as it_deliver.sh).
hashes() {
    for p in $(seq 0 15); do
        rcli --scan --pattern "tern:{$p}:m:*" | while read -r k; do
            rcli --raw hget "$k" data | head -c -1 | sha256sum | cut -d' ' -f1
        done
    done | sort >"$1"
}

# run NAME SINK_ARGS -- CONFIG_LINES...: a fresh queue and sink, N messages,
# tern run --drain; checks delivery; leaves NAME.out.
run() {
    local name=$1
    shift
    local sargs=()
    while [ "$1" != -- ]; do sargs+=("$1"); shift; done
    shift
    rcli flushall >/dev/null
    tern_sink "$name" --quiet --record "$dir/$name.rec" "${sargs[@]}" || exit 1
    {
        echo "threads = 1"
        echo "route * = 127.0.0.1:$SINK_PORT"
        echo "ca_file = $CERTS/ca.pem"
        echo "max_connections = 2"
        printf '%s\n' "$@"
    } | tern_config "$dir/$name.conf"
    $TERN inject -c "$dir/$name.conf" --generate $N --domains $domains --size 3000 >/dev/null ||
        fail "${name}_inject" "inject failed"
    hashes "$dir/$name.queued"
    timeout 60 $TERN run -c "$dir/$name.conf" --drain >"$dir/$name.out" 2>"$dir/$name.err"
    local rc=$?
    [ $rc -eq 0 ] && pass "${name}_exit0" || { fail "${name}_exit0" "rc=$rc"; tail -n 5 "$dir/$name.err"; }
    local n dups
    n=$(wc -l <"$dir/$name.rec")
    dups=$(cut -f2,4 "$dir/$name.rec" | sort | uniq -d | wc -l)
    [ "$n" -eq $N ] && [ "$dups" -eq 0 ] && pass "${name}_exactly_once" ||
        fail "${name}_exactly_once" "sink got $n of $N, $dups duplicates"
    cut -f4 "$dir/$name.rec" | sort >"$dir/$name.got"
    cmp -s "$dir/$name.queued" "$dir/$name.got" && pass "${name}_bytes_identical" ||
        fail "${name}_bytes_identical" "received bodies differ from queued"
    grep -q "^summary delivered=$N deferred=0 failed=0 " "$dir/$name.out" && pass "${name}_summary" ||
        fail "${name}_summary" "$(grep summary "$dir/$name.out")"
    kill "$SINK_PID"
    wait "$SINK_PID" 2>/dev/null
    tern_forget_pid "$SINK_PID"
}

# ring NAME BUFS: the run used a ring of BUFS, filled more than 50 times
# its size (it wrapped), and gave every buffer back.
ring() {
    local line filled
    line=$(grep '^  receives:' "$dir/$1.out")
    echo "  $1: $line"
    filled=$(echo "$line" | sed -n 's/.*: \([0-9]*\) filled.*/\1/p')
    case $line in
    *"multishot, $2 ring buffers in all"*) pass "$1_multishot_used" ;;
    *) fail "$1_multishot_used" "$line" ;;
    esac
    [ -n "$filled" ] && [ "$filled" -gt $(($2 * 50)) ] && pass "$1_ring_wrapped" ||
        fail "$1_ring_wrapped" "$line"
    case $line in
    *" 0 not returned") pass "$1_no_buffer_leaked" ;;
    *) fail "$1_no_buffer_leaked" "$line" ;;
    esac
}

TLS=(--cert "$CERTS/server.pem" --key "$CERTS/server.key")
run tls2 "${TLS[@]}" -- "recv_buffers = 2"
ring tls2 2
run plain1 --no-starttls -- "recv_buffers = 1"
ring plain1 1
run single "${TLS[@]}" -- "recv_multishot = no"
grep -q '^  receives: single-shot$' "$dir/single.out" && pass single_shot_used ||
    fail single_shot_used "$(grep receives: "$dir/single.out")"

# --- d. bounds -------------------------------------------------------------
for v in 0 40000; do
    printf 'route * = 127.0.0.1:25\nrecv_buffers = %s\n' $v | tern_config "$dir/bad$v.conf"
    if $TERN check-config -c "$dir/bad$v.conf" >/dev/null 2>&1; then
        fail "recv_buffers_${v}_refused" "check-config accepted it"
    else
        pass "recv_buffers_${v}_refused"
    fi
done

[ "$TERN_FAILS" -eq 0 ]
