#!/bin/bash
# it_matrix.sh - every TLS policy level against every kind of receiver, in
# one tern run: each (receiver, level) cell is its own domain, routed to its
# receiver and given its policy; one message per domain; then each cell's
# event (matched by its `domain` field) is checked for status, tier,
# protocol, verification and the reason of a deferral.
#
# Receivers: tern-sink with TLS 1.3 only, TLS 1.2 AEAD only, TLS 1.2 CBC
# only, TLS 1.0 only, no STARTTLS, STARTTLS answered 454, handshake aborted,
# certificates that fail verification in seven ways, a client certificate
# required; a STARTTLS-stripping proxy and a STARTTLS-injection proxy
# (tests/tls_proxy.py) in front of a valid sink; and an OpenSSL receiver
# (Python aiosmtpd). Levels: may, encrypt, fingerprint, verify, secure, plus
# a wrong pin, secure without a match name, secure for a domain the
# certificate's wildcard covers, and encrypt with min=1.0.
# Mandatory cells that must fail closed also prove the message never
# reached the receiver (its record) nor passed a proxy in plaintext (the
# proxy's DATA log). Ends with a receiver x level table of outcomes.
set -u
cd "$(dirname "$0")/.."
. scripts/lib.sh
tern_test_env

# The partitions tern_config's queue uses (the default).
PARTITIONS=16
# Bounds the whole delivery run; a hung cell must not hang the suite.
RUN_TIMEOUT=120
# How long a receiver may take to exit after SIGTERM, in tenths of a second.
STOP_GRACE_TENTHS=20
LEVELS="may encrypt fingerprint verify secure"

declare -A PORT REC PLOG    # per receiver: port, sink record, proxy log
RECV_PIDS=""

# pin_cert / pin_spki FILE: SHA-256 of the first certificate in FILE (DER),
# or of its SubjectPublicKeyInfo, as 64 hex digits.
pin_cert() { openssl x509 -in "$1" -outform DER | openssl dgst -sha256 -r | cut -c1-64; }
pin_spki() {
    openssl x509 -in "$1" -pubkey -noout | openssl pkey -pubin -outform DER \
        | openssl dgst -sha256 -r | cut -c1-64
}

receiver_sink() {   # name, sink args...
    local name=$1; shift
    REC[$name]=$dir/$name.rec
    : >"${REC[$name]}"
    tern_sink "$name" --record "${REC[$name]}" --quiet "$@" || return 1
    PORT[$name]=$SINK_PORT
    RECV_PIDS="$RECV_PIDS $SINK_PID"
}

# receiver_proxy NAME MODE: tls_proxy.py in MODE in front of a valid sink.
receiver_proxy() {
    local name=$1 mode=$2
    receiver_sink "$name-upstream" --cert "$CERTS/server.pem" --key "$CERTS/server.key" || return 1
    PLOG[$name]=$dir/$name.proxy.log
    : >"${PLOG[$name]}"
    /usr/bin/python3 tests/tls_proxy.py --listen-port-file "$dir/$name.port" \
        --upstream "127.0.0.1:$SINK_PORT" --mode "$mode" --log "${PLOG[$name]}" 2>"$dir/$name.err" &
    TERN_PIDS="$TERN_PIDS $!"
    RECV_PIDS="$RECV_PIDS $!"
    tern_wait_file "$dir/$name.port" 100 || return 1
    PORT[$name]=$(cat "$dir/$name.port")
    REC[$name]=${REC[$name-upstream]}
}

# receiver_openssl NAME: aiosmtpd with an OpenSSL context (TLS 1.2+).
receiver_openssl() {
    local name=$1
    REC[$name]=$dir/$name.rec
    : >"${REC[$name]}"
    /usr/bin/python3 tests/openssl_receiver.py "$dir/$name.port" "${REC[$name]}" "$CERTS/server.pem" \
        "$CERTS/server.key" 2>"$dir/$name.err" &
    TERN_PIDS="$TERN_PIDS $!"
    RECV_PIDS="$RECV_PIDS $!"
    tern_wait_file "$dir/$name.port" 100 || return 1
    PORT[$name]=$(cat "$dir/$name.port")
}

# --- cells -----------------------------------------------------------------
# cell ROW COL POLICY EXPECT [DOMAIN]: one domain (default ROW-COL.test)
# routed to ROW's receiver with POLICY. EXPECT is '|'-separated: the status
# first, then field=value (exact), field~text (contains, any case), and
# "nothing": the domain reached neither the receiver nor a proxy's DATA log.
CELLS=()
declare -A C_ROW C_COL C_DOM C_POL C_EXP OUTCOME
cell() {
    local name=$1_$2
    CELLS+=("$name")
    C_ROW[$name]=$1 C_COL[$name]=$2 C_POL[$name]=$3 C_EXP[$name]=$4
    C_DOM[$name]=${5:-$1-$2.test}
}
# row ROW PIN SUFFIX MAY ENCRYPT FINGERPRINT VERIFY SECURE: the five levels
# (fingerprint with PIN, secure with match=mx.test); SUFFIX is appended to
# every policy.
row() {
    local r=$1 pin=$2 sfx=$3
    cell "$r" may "may$sfx" "$4"
    cell "$r" encrypt "encrypt$sfx" "$5"
    cell "$r" fingerprint "fingerprint pin=$pin$sfx" "$6"
    cell "$r" verify "verify$sfx" "$7"
    cell "$r" secure "secure match=mx.test$sfx" "$8"
}

PIN=$(pin_cert "$CERTS/server.pem")
SPKI=$(pin_spki "$CERTS/server.pem")
BADPIN=$(printf '%064d' 0)

OK13="delivered|tier=preferred|tls=TLSv1.3"
row tls13 "$PIN" "" "$OK13|verified=yes" "$OK13" "$OK13" "$OK13|verified=yes" "$OK13|verified=yes"
cell tls13 fpbad "fingerprint pin=$BADPIN" "deferred|reply~fingerprint mismatch"
cell tls13 securenm "secure" "deferred|reply~hostname mismatch"
cell tls13 securewild "secure" "$OK13|verified=yes" tls13-securewild.wild.test

OK12="delivered|tier=preferred|tls=TLSv1.2"
row tls12aead "$SPKI" "" "$OK12|verified=yes" "$OK12" "$OK12" "$OK12|verified=yes" "$OK12|verified=yes"

CBC="delivered|tier=sufficient|tls=TLSv1.2"
row tls12cbc "$PIN" "" "$CBC" "$CBC" "$CBC" "$CBC|verified=yes" "$CBC|verified=yes"

V10="deferred|reply~version"
row tls10 "$PIN" "" "delivered|tier=legacy|tls=TLSv1" "$V10" "$V10" "$V10" "$V10"
cell tls10 encrypt10 "encrypt min=1.0" "delivered|tier=legacy|tls=TLSv1"

PLAIN="delivered|tier=plaintext"
# receiver:why mandatory levels refuse:what the may cell's verify field says
for r in "nostarttls:STARTTLS not offered:STARTTLS not offered" \
    "refused:STARTTLS refused:STARTTLS refused" "abort:handshake:TLS failed earlier" \
    "strip:STARTTLS not offered:STARTTLS not offered" "inject:injected:TLS failed earlier"; do
    IFS=: read -r name why vtext <<<"$r"
    closed="deferred|reply~$why|nothing"
    row "$name" "$PIN" "" "$PLAIN|verified=not checked|verify~$vtext" "$closed" "$closed" "$closed" "$closed"
done

for c in wrongname:"hostname mismatch" expired:"certificate has expired" notyet:"not yet valid" \
    selfsigned:"self signed" untrusted:"unable to get local issuer" \
    nointer:"unable to get local issuer" rsa1024:"weak key"; do
    name=${c%%:*} why=${c#*:}
    row "$name" "$(pin_cert "$CERTS/$name.pem")" "" "delivered|verified=no|verify~$why" \
        "delivered|verified=no|verify~$why" "delivered" "deferred|reply~$why" "deferred|reply~$why"
done
cell selfsigned fpbad "fingerprint pin=$BADPIN" "deferred|reply~fingerprint mismatch"

row clientcert "$PIN" "" "$OK13" "$OK13" "$OK13" "$OK13|verified=yes" "$OK13|verified=yes"
NOCC="deferred|reply~client certificate"
row noclientcert "$PIN" " client_cert=no" "delivered" "$NOCC" "$NOCC" "$NOCC" "$NOCC"

OKO="delivered|tls=TLSv1.3"
row openssl "$PIN" "" "$OKO" "$OKO" "$OKO" "$OKO|verified=yes" "$OKO|verified=yes"

# --- receivers -------------------------------------------------------------
VALID="--cert $CERTS/server.pem --key $CERTS/server.key"
started() {   # name, start command...
    "${@:2}" || fail "receiver_$1" "did not start: $(cat "$dir/$1.err" 2>/dev/null)"
}
# shellcheck disable=SC2086
{
    started tls13 receiver_sink tls13 $VALID --tls-min 1.3 --tls-max 1.3
    started tls12aead receiver_sink tls12aead $VALID --tls-min 1.2 --tls-max 1.2 \
        --ciphers ECDHE-ECDSA-AES128-GCM-SHA256
    started tls12cbc receiver_sink tls12cbc $VALID --tls-min 1.2 --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-SHA
    started tls10 receiver_sink tls10 $VALID --tls-min 1.0 --tls-max 1.0 --ciphers ECDHE-ECDSA-AES128-SHA
    started nostarttls receiver_sink nostarttls $VALID --no-starttls
    started refused receiver_sink refused $VALID --starttls-reply "454 4.7.0 TLS not available"
    started abort receiver_sink abort $VALID --abort-handshake
    for c in wrongname expired notyet selfsigned untrusted nointer rsa1024; do
        started "$c" receiver_sink "$c" --cert "$CERTS/$c.pem" --key "$CERTS/$c.key"
    done
    # Two receivers: tern remembers per host:port that TLS failed at may,
    # and the client_cert=no cells fail TLS there.
    for c in clientcert noclientcert; do
        started "$c" receiver_sink "$c" $VALID --require-client-cert "$CERTS/ca.pem"
    done
}
started strip receiver_proxy strip strip
started inject receiver_proxy inject inject
started openssl receiver_openssl openssl

# --- one run -----------------------------------------------------------------
routed=()
for n in "${CELLS[@]}"; do
    [ -n "${PORT[${C_ROW[$n]}]:-}" ] && routed+=("$n")
done
{
    echo "threads = 1"
    echo "ca_file = $CERTS/ca.pem"
    echo "client_cert = $CERTS/client.pem"
    echo "client_key = $CERTS/client.key"
    for n in "${routed[@]}"; do
        echo "route ${C_DOM[$n]} = localhost:${PORT[${C_ROW[$n]}]}"
        echo "policy ${C_DOM[$n]} = ${C_POL[$n]}"
    done
    echo "policy * = may"
} | tern_config "$dir/matrix.conf"
domains=$(for n in "${routed[@]}"; do echo "${C_DOM[$n]}"; done | paste -sd,)
$TERN inject -c "$dir/matrix.conf" --generate "${#routed[@]}" --domains "$domains" --size 500 \
    >"$dir/inject.out" 2>&1 || fail matrix_inject "$(cat "$dir/inject.out")"
timeout "$RUN_TIMEOUT" $TERN run -c "$dir/matrix.conf" --drain >"$dir/run.out" 2>"$dir/run.err"
rc=$?
[ $rc -eq 0 ] && pass matrix_run || fail matrix_run "rc=$rc: $(tail -n 3 "$dir/run.err")"
# Receivers stop before their records are read, so every write is done;
# one that outlives the grace period is left to tern_cleanup (SIGKILL).
stop_receivers() {
    local p
    for p in $RECV_PIDS; do
        kill "$p" 2>/dev/null
    done
    for p in $RECV_PIDS; do
        for _ in $(seq "$STOP_GRACE_TENTHS"); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$p" 2>/dev/null && echo "it_matrix: receiver $p ignored SIGTERM" >&2
    done
}
stop_receivers

# --- events ------------------------------------------------------------------
# One line per final event: domain, then TAB-separated field=value pairs.
# redis-cli prints XRANGE flat: an entry id, then field and value lines; an
# entry id can only stand where a field name would.
for p in $(seq 0 $((PARTITIONS - 1))); do
    rcli --raw xrange "tern:{$p}:events" - +
done | awk '
    function flush(  i) {
        if (n && f["status"] ~ /^(delivered|deferred|failed)$/) {
            printf "%s", f["domain"]
            for (i = 1; i <= n; i++)
                printf "\t%s=%s", key[i], val[i]
            print ""
        }
        n = 0
        split("", f)
    }
    k == "" && /^[0-9]+-[0-9]+$/ { flush(); next }
    k == "" { k = $0; next }
    { key[++n] = k; val[n] = $0; f[k] = $0; k = "" }
    END { flush() }' >"$dir/events.tsv"

field() {   # event line, field name
    printf '%s\n' "$1" | tr '\t' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# reached DOMAIN ROW: the domain is in the receiver's record or, behind a
# proxy, a DATA/BDAT for it passed the proxy in plaintext.
reached() {
    local re="@${1//./\\.}([>,[:space:]]|\$)"
    grep -qE "$re" "${REC[$2]}" && return 0
    [ -n "${PLOG[$2]:-}" ] && grep -qE "$re" "${PLOG[$2]}"
}

check_cell() {   # name
    local n=$1 d=${C_DOM[$1]} r=${C_ROW[$1]} ev why="" tok k want v toks
    if [ -z "${PORT[$r]:-}" ]; then
        OUTCOME[$n]="no receiver"
        fail "$n" "receiver $r did not start"
        return
    fi
    ev=$(awk -F'\t' -v d="$d" '$1 == d' "$dir/events.tsv" | tail -n 1)
    if [ -z "$ev" ]; then
        OUTCOME[$n]="no event"
        fail "$n" "no event for $d"
        return
    fi
    v=$(field "$ev" status)
    OUTCOME[$n]=$v
    [ "$v" = delivered ] && OUTCOME[$n]="$v/$(field "$ev" tier)"
    IFS='|' read -r -a toks <<<"${C_EXP[$n]}"
    for tok in "${toks[@]}"; do
        case $tok in
        nothing)
            reached "$d" "$r" && why="$why; the message reached the receiver" ;;
        *~*)
            k=${tok%%~*} want=${tok#*~}
            v=$(field "$ev" "$k")
            printf '%s' "$v" | grep -qiF -- "$want" || why="$why; $k \"$v\" lacks \"$want\"" ;;
        *=*)
            k=${tok%%=*} want=${tok#*=}
            v=$(field "$ev" "$k")
            [ "$v" = "$want" ] || why="$why; $k=$v, want $want" ;;
        *)
            v=$(field "$ev" status)
            [ "$v" = "$tok" ] || why="$why; status $v, want $tok ($(field "$ev" reply))" ;;
        esac
    done
    if [ -z "$why" ]; then
        pass "$n"
    else
        OUTCOME[$n]="${OUTCOME[$n]} (FAIL)"
        fail "$n" "${why#; } [policy ${C_POL[$n]}]"
    fi
}

for n in "${CELLS[@]}"; do
    check_cell "$n"
done

# --- table -------------------------------------------------------------------
echo
echo "| receiver | may | encrypt | fingerprint | verify | secure | other |"
echo "|---|---|---|---|---|---|---|"
rows=$(for n in "${CELLS[@]}"; do echo "${C_ROW[$n]}"; done | awk '!seen[$0]++')
for r in $rows; do
    line="| $r"
    for l in $LEVELS; do
        line="$line | ${OUTCOME[${r}_$l]:--}"
    done
    other=""
    for n in "${CELLS[@]}"; do
        [ "${C_ROW[$n]}" = "$r" ] && [[ " $LEVELS " != *" ${C_COL[$n]} "* ]] \
            && other="$other${other:+, }${C_COL[$n]}: ${OUTCOME[$n]}"
    done
    echo "$line | ${other:--} |"
done
exit $TERN_FAILS
