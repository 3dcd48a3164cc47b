#!/bin/bash
# it_queue_bad.sh - malformed queue entries written with redis-cli are set
# aside with their reason, and the engine keeps delivering:
#  a. entries without a body or with one over max_message_size (found by
#     the take script), without a sender field, without recipients, with
#     a non-numeric count, a bad recipient address, a recipient outside
#     the entry's domain, a bad sender (found by the engine when it reads
#     the entry after the take) each end in <pfx>:{p}:bad with
#     bad_reason set, and leave ready and leased; so does a key that is not
#     a hash (found by the take script, which would otherwise fail on it
#     for the whole partition), its value left as it was;
#  b. a `bad` event is written for each;
#  c. the good messages queued around them are delivered and the engine
#     exits 0 (--drain);
#  d. `tern queue stats` counts them and `tern queue show` gives the
#     reason; `tern queue delete` removes one.
set -u
cd "$(dirname "$0")/.."
. tests/queue_lib.sh
qsetup || exit 1

qsink s || exit 1
qconf s <<EOC
partitions = 1
max_message_size = 1k
EOC
qinject s --generate 3 --domains a.test --size 200
now=$(($(date +%s) * 1000))
# bad ID REASON FIELD VALUE...: a hash and its id on ready.
bad() {
    local id=$1
    shift 2
    rcli hset "tern:{0}:m:$id" "$@" >/dev/null
    rcli rpush "tern:{0}:ready" "$id" >/dev/null
}
big=$(head -c 2000 /dev/zero | tr '\0' x)
bad nodata "missing field data" from s@x.test rcpts u@a.test domain a.test attempts 0 created $now
bad nofrom "missing field from" rcpts u@a.test domain a.test data hi attempts 0 created $now
bad norcpt "no recipients" from s@x.test rcpts "" domain a.test data hi attempts 0 created $now
bad big "oversized data" from s@x.test rcpts u@a.test domain a.test data "$big" attempts 0 created $now
bad num "bad number" from s@x.test rcpts u@a.test domain a.test data hi attempts many created $now
bad addr "bad recipient address" from s@x.test rcpts "u v@a.test" domain a.test data hi attempts 0 created $now
bad other "recipient not in the entry's domain" from s@x.test rcpts u@b.test domain a.test data hi attempts 0 created $now
bad sender "bad sender address" from "<s@x.test" rcpts u@a.test domain a.test data hi attempts 0 created $now
rcli set "tern:{0}:m:str" "not a message" >/dev/null
rcli rpush "tern:{0}:ready" str >/dev/null
qinject s --generate 3 --domains a.test --size 200

qdrain s &&
    pass bad_entries_engine_keeps_running ||
    fail bad_entries_engine_keeps_running "exit $?: $(tail -n 3 "$dir/s.rerr")"
[ "$(qids s)" -eq 6 ] && pass bad_entries_good_delivered ||
    fail bad_entries_good_delivered "$(qids s) of 6 delivered"

want() {   # id reason
    local got
    got=$(rcli hget "tern:{0}:m:$1" bad_reason)
    if [ "$got" = "$2" ] && [ "$(rcli sismember 'tern:{0}:bad' "$1")" = 1 ]; then
        pass "bad_entry_$1"
    else
        fail "bad_entry_$1" "bad_reason '$got', want '$2'; in bad set: $(rcli sismember 'tern:{0}:bad' "$1")"
    fi
}
want nodata "missing field data"
want nofrom "missing field from"
want norcpt "no recipients"
want big "oversized data"
want num "bad number"
want addr "bad recipient address"
want other "recipient not in the entry's domain"
want sender "bad sender address"
[ "$(rcli sismember 'tern:{0}:bad' str)" = 1 ] && [ "$(rcli get 'tern:{0}:m:str')" = "not a message" ] &&
    rcli xrange 'tern:{0}:events' - + | grep -qx 'not a hash' && pass bad_entry_not_a_hash ||
    fail bad_entry_not_a_hash "in bad set: $(rcli sismember 'tern:{0}:bad' str), value: $(rcli get 'tern:{0}:m:str')"
show_err=$("$TERN" queue -c "$dir/s.conf" show str 2>&1 >/dev/null)
echo "$show_err" | grep -q 'message str: WRONGTYPE' && pass bad_entry_not_a_hash_show ||
    fail bad_entry_not_a_hash_show "show said: $show_err"
[ "$(rcli scard 'tern:{0}:bad')" = 9 ] && [ "$(rcli llen 'tern:{0}:ready')" = 0 ] &&
    [ "$(rcli zcard 'tern:{0}:leased')" = 0 ] && pass bad_entries_out_of_the_way ||
    fail bad_entries_out_of_the_way "bad $(rcli scard 'tern:{0}:bad'), ready $(rcli llen 'tern:{0}:ready'), leased $(rcli zcard 'tern:{0}:leased')"
nev=$(rcli xrange 'tern:{0}:events' - + | grep -cx bad)
[ "$nev" = 9 ] && pass bad_entries_events || fail bad_entries_events "$nev bad events"
st=$("$TERN" queue -c "$dir/s.conf" stats)
sh=$("$TERN" queue -c "$dir/s.conf" show big)
[ "$(echo "$st" | awk '$1 == "bad" { print $2 }')" = 9 ] && echo "$sh" | grep -qx 'state bad' &&
    echo "$sh" | grep -qx 'bad_reason oversized data' && pass bad_entries_stats_and_show ||
    fail bad_entries_stats_and_show "$(echo "$st" | tr "\n" " ") / $(echo "$sh" | tr "\n" " ")"
"$TERN" queue -c "$dir/s.conf" delete big >/dev/null && [ "$(rcli scard 'tern:{0}:bad')" = 8 ] &&
    [ "$(rcli exists 'tern:{0}:m:big')" = 0 ] && pass bad_entry_deleted ||
    fail bad_entry_deleted "bad set $(rcli scard 'tern:{0}:bad')"
[ "$TERN_FAILS" -eq 0 ]
