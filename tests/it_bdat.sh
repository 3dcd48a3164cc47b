#!/bin/bash
# it_bdat.sh - BDAT (RFC 3030) against receivers that offer CHUNKING:
#  a. the exact commands (tests/chunking_peer.py, plaintext): one
#     "BDAT <n> LAST" per message, no DATA, n is the chunk's length, the
#     chunk has CRLF line ends, no dot-stuffing and no terminator; a
#     refused recipient is reported, the accepted one delivered; behind a
#     transaction whose every recipient was refused (the peer, like Exim,
#     stays in it after refusing its BDAT), the stacked ones start with
#     RSET and are taken once each, under their own sender;
#  b. tern-sink --chunking over STARTTLS: 500 messages, every one received
#     once and byte-identical to what was queued, transactions pipelined
#     (several in flight on a connection); with max_transactions_in_flight
#     = 1, none are;
#  c. the same sink dropping connections at random (greeting, MAIL,
#     mid-chunk, after the chunk): nothing lost, the only duplicates are
#     the after-chunk drops, the queue ends empty.
# Every tern run is under `timeout`; everything started is stopped by PID.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
tern_test_env
PY=/usr/bin/python3
TLS=(--cert "$CERTS/server.pem" --key "$CERTS/server.key")
RUN_LIMIT=30                # seconds, any one tern run

kv() { tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1; }
conf() {   # NAME PORT, extra lines on stdin
    {
        echo "threads = 1"
        echo "ca_file = $CERTS/ca.pem"
        echo "route * = localhost:$2"
        cat
    } | tern_config "$dir/$1.conf"
}
drain() { timeout "$RUN_LIMIT" "$TERN" run -c "$dir/$1.conf" --drain >"$dir/$1.run" 2>"$dir/$1.rerr"; }
summ() { grep '^summary ' "$dir/$1.run" | kv "$2"; }
queue_left() {
    "$TERN" queue -c "$dir/$1.conf" stats |
        awk '$1 == "ready" || $1 == "leased" || $1 == "scheduled" { n += $2 } END { print n + 0 }'
}
why() {
    echo "$(grep '^summary ' "$dir/$1.run" 2>/dev/null)|$(tail -n 3 "$dir/$1.rerr" 2>/dev/null | tr '\n' ' ')"
}
sink_stop() {
    kill -TERM "$SINK_PID" 2>/dev/null
    wait "$SINK_PID" 2>/dev/null
    tern_forget_pid "$SINK_PID"
}

# --- a. the commands on the wire ---------------------------------------------
rcli flushall >/dev/null
rm -f "$dir/peer.port" "$dir/peer.log"
$PY tests/chunking_peer.py "$dir/peer.port" "$dir/peer.log" 2>"$dir/peer.err" &
PEER_PID=$!
TERN_PIDS="$TERN_PIDS $PEER_PID"
if tern_wait_file "$dir/peer.port" 100; then
    conf wire "$(cat "$dir/peer.port")" <<EOC
tls = none
EOC
    # Bare LF line ends, a line starting with ".", no final line end.
    printf 'Subject: bdat\n\n.dot line\nend' >"$dir/m1.eml"
    "$TERN" inject -c "$dir/wire.conf" --from a@src.test --to ok1@dst.test "$dir/m1.eml" >/dev/null
    "$TERN" inject -c "$dir/wire.conf" --from a@src.test --to ok2@dst.test,reject@dst.test "$dir/m1.eml" >/dev/null
    drain wire
    bdats=$(grep -c '^BDAT [0-9]* LAST$' "$dir/peer.log")
    datas=$(grep -c '^DATA' "$dir/peer.log")
    [ "$bdats" -ge 2 ] && [ "$datas" -eq 0 ] && pass bdat_used_not_data ||
        fail bdat_used_not_data "BDAT lines $bdats, DATA lines $datas; $(why wire)"
    # Both messages: "BDAT 33 LAST" and then exactly the message with CRLF
    # line ends, the leading dot kept as is, nothing appended (the peer
    # reads exactly n bytes, so a wrong n shows as a wrong chunk).
    want=$(printf 'Subject: bdat\r\n\r\n.dot line\r\nend\r\n' | od -An -tx1 | tr -d ' \n')
    sizes=$(grep -c '^BDAT 33 LAST$' "$dir/peer.log")
    chunks=$(grep -c "^CHUNK $want\$" "$dir/peer.log")
    [ "$sizes" -eq 2 ] && [ "$chunks" -eq 2 ] && pass bdat_chunk_exact ||
        fail bdat_chunk_exact "BDAT 33 $sizes times, exact chunk $chunks times; $(head -c 600 "$dir/peer.log")"
    # ok2 delivered beside the refused recipient, who gets a DSN (by BDAT too).
    [ "$(summ wire delivered)" = 2 ] && grep -q '^RCPT TO:<a@src.test>$' "$dir/peer.log" &&
        pass bdat_delivered_refusal_reported || fail bdat_delivered_refusal_reported "$(why wire)"
    # A message whose only recipient is refused, three behind it on the
    # same connection. Without the RSET the peer answered the second's MAIL
    # 503 and took its RCPT and chunk into the first transaction, under
    # f@src.test, and tern sent it again.
    cp "$dir/wire.conf" "$dir/stack.conf"
    "$TERN" inject -c "$dir/stack.conf" --from f@src.test --to reject@dst.test "$dir/m1.eml" >/dev/null
    for i in 5 6 7; do
        "$TERN" inject -c "$dir/stack.conf" --from a@src.test --to "ok$i@dst.test" "$dir/m1.eml" >/dev/null
    done
    drain stack
    ok=1
    for i in 5 6 7; do
        [ "$(grep -c "^ACCEPT <a@src.test> <ok$i@dst.test>\$" "$dir/peer.log")" = 1 ] || ok=0
    done
    [ "$ok" = 1 ] && ! grep -q '^ACCEPT <f@src.test>' "$dir/peer.log" &&
        [ "$(grep -c '^RSET$' "$dir/peer.log")" -ge 2 ] && [ "$(summ stack failed)" = 1 ] &&
        pass bdat_stacked_behind_refused_txn ||
        fail bdat_stacked_behind_refused_txn "$(grep -E '^(ACCEPT|RSET|MAIL)' "$dir/peer.log" | tail -12 | paste -sd' ' -); $(why stack)"
else
    fail bdat_used_not_data "chunking_peer did not start: $(cat "$dir/peer.err")"
fi
kill "$PEER_PID" 2>/dev/null
wait "$PEER_PID" 2>/dev/null
tern_forget_pid "$PEER_PID"

# --- b. tern-sink --chunking, STARTTLS, bytes identical ----------------------
rcli flushall >/dev/null
if tern_sink big "${TLS[@]}" --chunking --quiet --record "$dir/big.rec" --stats-file "$dir/big.stats"; then
    conf big "$SINK_PORT" </dev/null
    "$TERN" inject -c "$dir/big.conf" --generate 500 --domains b1.test,b2.test,b3.test --size 3000 >/dev/null
    for p in $(seq 0 15); do
        rcli --scan --pattern "tern:{$p}:m:*" | while read -r k; do
            rcli --raw hget "$k" data | head -c -1 | sha256sum | cut -d' ' -f1
        done
    done | sort >"$dir/queued.sha"
    drain big
    cut -f4 "$dir/big.rec" | sort >"$dir/got.sha"
    if [ "$(wc -l <"$dir/queued.sha")" -eq 500 ] && cmp -s "$dir/queued.sha" "$dir/got.sha"; then
        pass bdat_tls_bytes_identical
    else
        fail bdat_tls_bytes_identical "$(wc -l <"$dir/got.sha") received, $(wc -l <"$dir/queued.sha") queued; $(why big)"
    fi
    [ "$(summ big delivered)" = 500 ] && [ "$(queue_left big)" = 0 ] && pass bdat_tls_all_delivered ||
        fail bdat_tls_all_delivered "$(why big)"
    sink_stop
    # Transactions pipelined (max_transactions_in_flight, default 4): the
    # sink read messages whose commands came before the previous reply.
    piped=$(sed -n 's/^pipelined=//p' "$dir/big.stats")
    [ "${piped:-0}" -gt 0 ] && pass bdat_transactions_pipelined ||
        fail bdat_transactions_pipelined "sink counted pipelined=${piped:-none}"
else
    fail bdat_tls_bytes_identical "sink did not start"
fi

# --- b2. max_transactions_in_flight = 1: one at a time ------------------------
rcli flushall >/dev/null
if tern_sink one "${TLS[@]}" --chunking --quiet --stats-file "$dir/one.stats"; then
    conf one "$SINK_PORT" <<<"max_transactions_in_flight = 1"
    "$TERN" inject -c "$dir/one.conf" --generate 200 --domains b1.test --size 3000 >/dev/null
    drain one
    sink_stop
    piped=$(sed -n 's/^pipelined=//p' "$dir/one.stats")
    [ "$(summ one delivered)" = 200 ] && [ "${piped:-x}" = 0 ] && pass bdat_one_in_flight ||
        fail bdat_one_in_flight "delivered $(summ one delivered), sink counted pipelined=${piped:-none}; $(why one)"
else
    fail bdat_one_in_flight "sink did not start"
fi

# --- c. random drops: nothing lost --------------------------------------------
rcli flushall >/dev/null
if tern_sink drop "${TLS[@]}" --chunking --quiet --record "$dir/drop.rec" --drop-rate 0.15 --drop-seed 3; then
    conf drop "$SINK_PORT" <<EOC
max_messages_per_connection = 5
retry_base = 1s
retry_max = 2s
EOC
    "$TERN" inject -c "$dir/drop.conf" --generate 200 --domains x.test --size 800 >/dev/null
    tern_bg "$RUN_LIMIT" "$dir/drop.run" "$dir/drop.rerr" "$TERN" run -c "$dir/drop.conf"
    TERN_PID=$TERN_BG_PID
    n=250
    while [ "$n" -gt 0 ]; do
        got=$(awk -F'\t' 'NF == 9 { print $9 }' "$dir/drop.rec" 2>/dev/null | sort -u | wc -l)
        [ "$got" -ge 200 ] && [ "$(queue_left drop)" = 0 ] && break
        sleep 0.1
        n=$((n - 1))
    done
    kill -TERM "$TERN_PID" 2>/dev/null
    wait "$TERN_PID"
    tern_forget_pid "$TERN_PID"
    sink_stop
    s=$(tail -n 1 "$dir/drop.out")
    dots=$(echo "$s" | kv drops_dot)
    lines=$(wc -l <"$dir/drop.rec")
    uniq=$(cut -f9 "$dir/drop.rec" | sort -u | wc -l)
    accepted=$(awk -F'\t' 'NF == 9 { print $9 }' "$dir/drop.rec" | sort -u | wc -l)
    [ "$uniq" -eq 200 ] && [ "$accepted" -eq 200 ] && pass bdat_drops_nothing_lost ||
        fail bdat_drops_nothing_lost "unique ids $uniq, accepted $accepted of 200; $(why drop)"
    [ "$((lines - uniq))" -eq "${dots:-x}" ] && pass bdat_drops_duplicates_only_after_chunk ||
        fail bdat_drops_duplicates_only_after_chunk "$((lines - uniq)) duplicates, drops_dot=$dots"
    hit=$(echo "$s" | tr ' ' '\n' | awk -F= '/^drops_(greeting|mail|data|dot)=/ && $2 > 0 { n++ } END { print n + 0 }')
    [ "$hit" -ge 3 ] && pass bdat_drops_happened || fail bdat_drops_happened "$s"
    [ "$(queue_left drop)" = 0 ] && pass bdat_drops_queue_empty ||
        fail bdat_drops_queue_empty "$(queue_left drop) messages left"
else
    fail bdat_drops_nothing_lost "sink did not start"
fi

exit "$TERN_FAILS"
