# lib.sh - shell helpers shared by the demo, the benchmark and the
# integration tests: private redis-server, the sink, a config file. Every
# process started here is recorded and stopped by tern_cleanup (by PID).
#
#   . scripts/lib.sh
#   tern_init DIR             working directory (created); sets TERN_DIR
#   tern_redis                starts redis on DIR/redis.sock; sets REDIS_ADDR
#   tern_redis_cluster N [ARGS]  starts an N-master Redis Cluster on loopback ports;
#                             sets REDIS_ADDR (the first), REDIS_CLUSTER_PORTS, REDIS_PID
#   tern_cluster_slot_owner SLOT, tern_cluster_migrate_slot SLOT PORT [PAUSE]
#                             which master serves a slot; move one, key by key
#   tern_cluster_restart I    start node I of the cluster again (same port and node)
#   tern_cluster_keys PATTERN keys matching PATTERN on all the masters
#   tern_cluster_add_replica I   a new node replicating master I
#   tern_sink NAME ARGS...    starts build/tern-sink; sets SINK_PORT, SINK_PID
#   tern_certs                test certificates into DIR/certs; sets CERTS
#   tern_cleanup              stops everything started (call from a trap)
#   tern_stop PID             SIGTERM one of them, wait; its exit status

TERN_BUILD=${TERN_BUILD:-build}
TERN_PIDS=""

tern_init() {
    TERN_DIR=$1
    mkdir -p "$TERN_DIR"
}

tern_cleanup() {
    local p
    # `|| true`: callers may run under set -e, and a process may be gone.
    for p in $TERN_PIDS; do
        kill "$p" 2>/dev/null || true
    done
    for p in $TERN_PIDS; do
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$p" 2>/dev/null || true
    done
    TERN_PIDS=""
}

# tern_forget_pid PID: a process we waited for leaves TERN_PIDS (its
# number may be reused; cleanup must not signal a stranger).
tern_forget_pid() {
    local p keep=""
    for p in $TERN_PIDS; do
        [ "$p" = "$1" ] || keep="$keep $p"
    done
    TERN_PIDS=$keep
}

# tern_bg LIMIT OUT ERR CMD...: CMD (a tern run) in the background under
# `timeout LIMIT`, its output to OUT and ERR; sets TERN_BG_PID (timeout's
# PID, which tern_stop signals) and adds it to TERN_PIDS. A stop's SIGTERM
# becomes a SIGKILL after TERN_KILL_AFTER seconds. --foreground: timeout
# relays a signal to tern alone. Without it, timeout also sends SIGCONT to
# its process group right after the signal, and under ASan a SIGCONT that
# lands while LeakSanitizer's exit check attaches to the process cancels
# the attach's SIGSTOP: the check's tracer then waits forever
# (asan/it_startup stalled so until the kill; /proc showed the tracer in
# wait4 with SIGCONT pending and tern running, never stopped).
TERN_KILL_AFTER=20
tern_bg() {
    local limit=$1 out=$2 err=$3
    shift 3
    timeout --foreground -k "$TERN_KILL_AFTER" "$limit" "$@" >"$out" 2>"$err" &
    TERN_BG_PID=$!
    TERN_PIDS="$TERN_PIDS $TERN_BG_PID"
}

# tern_stop PID: SIGTERM a process started in the background, wait for it
# and forget it; returns its exit status.
tern_stop() {
    kill -TERM "$1" 2>/dev/null
    wait "$1"
    local rc=$?
    tern_forget_pid "$1"
    return $rc
}

tern_wait_file() {   # file, tenths of a second
    local n=${2:-100}
    while [ ! -s "$1" ] && [ "$n" -gt 0 ]; do
        sleep 0.1
        n=$((n - 1))
    done
    [ -s "$1" ]
}

# tern_stat FILE KEY: KEY's value in a tern-sink --stats-file (empty if none).
tern_stat() { sed -n "s/^$2=//p" "$1" 2>/dev/null; }

# tern_wait_stat FILE KEY MIN [TENTHS]: wait until the stats file shows KEY
# >= MIN (default 10 s). The sink rewrites the file about every 200 ms, and
# later on a loaded machine: a fixed sleep before reading it is a race.
tern_wait_stat() {
    local n=${4:-100} v
    while [ "$n" -gt 0 ]; do
        v=$(tern_stat "$1" "$2")
        [ -n "$v" ] && [ "$v" -ge "$3" ] && return 0
        sleep 0.1
        n=$((n - 1))
    done
    return 1
}

tern_redis() {
    local extra=${1:-}
    REDIS_SOCK=$TERN_DIR/redis.sock
    # shellcheck disable=SC2086
    redis-server --port 0 --unixsocket "$REDIS_SOCK" --unixsocketperm 700 \
        --dir "$TERN_DIR" --save '' --appendonly no --daemonize no \
        --logfile "$TERN_DIR/redis.log" $extra &
    REDIS_PID=$!
    TERN_PIDS="$TERN_PIDS $REDIS_PID"
    local n=100
    while [ "$n" -gt 0 ]; do
        redis-cli -s "$REDIS_SOCK" ping >/dev/null 2>&1 && break
        sleep 0.1
        n=$((n - 1))
    done
    REDIS_ADDR=unix:$REDIS_SOCK
    [ "$n" -gt 0 ] || { echo "redis-server did not start" >&2; return 1; }
}

# tern_cluster_node DIR PORT BUS: one cluster-enabled redis-server in
# DIR (node file, log) on 127.0.0.1:PORT, its cluster bus on BUS, with
# REDIS_CLUSTER_EXTRA added. No RDB, no AOF (unless those ARGS ask): a
# test's data dies with it; a short node timeout, so that a test that
# stops a node sees the cluster notice it soon. Sets TERN_NODE_PID (in
# TERN_PIDS).
tern_cluster_node() {
    # shellcheck disable=SC2086
    redis-server --port "$2" --cluster-port "$3" --bind 127.0.0.1 \
        --cluster-enabled yes --cluster-config-file "$1/nodes.conf" \
        --cluster-node-timeout 1000 --dir "$1" --save '' --appendonly no \
        --daemonize no --logfile "$1/redis.log" $REDIS_CLUSTER_EXTRA &
    TERN_NODE_PID=$!
    TERN_PIDS="$TERN_PIDS $!"
}

# tern_redis_cluster N [ARGS]: N redis-servers with cluster-enabled (each
# in its own directory DIR/cluster.I, bound to 127.0.0.1 on a free port,
# its cluster bus on another: cluster-port, since port+10000 may be taken
# or past 65535), ARGS added to each command line. They become N masters
# and no replicas: node I is given the I-th of N equal slot ranges
# (CLUSTER ADDSLOTSRANGE) and meets the first, which, unlike redis-cli
# --cluster create, works for any N >= 1. Waits, at most 10 s, until every
# node's CLUSTER INFO says cluster_state:ok. Sets REDIS_ADDR=127.0.0.1:P1,
# REDIS_CLUSTER_PORTS="P1 P2 ...", REDIS_CLUSTER_BUSES (their bus ports) and
# REDIS_PID (their PIDs, space
# separated). Every server is in TERN_PIDS.
tern_redis_cluster() {
    local n=$1 extra=${2:-} i d port bus first="" waited lo hi
    REDIS_CLUSTER_PORTS=""
    REDIS_CLUSTER_BUSES=""
    REDIS_CLUSTER_EXTRA=$extra
    REDIS_PID=""
    for i in $(seq 1 "$n"); do
        d=$TERN_DIR/cluster.$i
        mkdir -p "$d"
        port=$(tern_free_port)
        bus=$(tern_free_port)
        tern_cluster_node "$d" "$port" "$bus"
        REDIS_PID="$REDIS_PID $TERN_NODE_PID"
        REDIS_CLUSTER_PORTS="$REDIS_CLUSTER_PORTS $port"
        REDIS_CLUSTER_BUSES="$REDIS_CLUSTER_BUSES $bus"
    done
    REDIS_CLUSTER_PORTS=${REDIS_CLUSTER_PORTS# }
    REDIS_CLUSTER_BUSES=${REDIS_CLUSTER_BUSES# }
    REDIS_PID=${REDIS_PID# }
    i=0
    for port in $REDIS_CLUSTER_PORTS; do
        waited=100
        until redis-cli -p "$port" ping >/dev/null 2>&1; do
            waited=$((waited - 1))
            [ "$waited" -gt 0 ] || { echo "redis-server on port $port did not start" >&2; return 1; }
            sleep 0.1
        done
        lo=$((16384 * i / n))
        hi=$((16384 * (i + 1) / n - 1))
        redis-cli -p "$port" cluster addslotsrange "$lo" "$hi" >/dev/null ||
            { echo "Redis Cluster node $port: ADDSLOTSRANGE $lo $hi failed" >&2; return 1; }
        if [ -z "$first" ]; then
            first=$port
        else
            # the bus port too: it is not port + 10000 here
            redis-cli -p "$port" cluster meet 127.0.0.1 "$first" "${REDIS_CLUSTER_BUSES%% *}" >/dev/null ||
                { echo "Redis Cluster node $port: MEET failed" >&2; return 1; }
        fi
        i=$((i + 1))
    done
    for port in $REDIS_CLUSTER_PORTS; do
        waited=100
        until redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' &&
            [ "$(redis-cli -p "$port" cluster nodes 2>/dev/null | grep -c master)" = "$n" ]; do
            waited=$((waited - 1))
            [ "$waited" -gt 0 ] || { echo "Redis Cluster node $port: cluster_state not ok after 10 s" >&2; return 1; }
            sleep 0.1
        done
    done
    REDIS_ADDR=127.0.0.1:$first
}

# tern_cluster_add_replica I: a new node (DIR/cluster.rI, a free port and
# bus port, the cluster's ARGS) joins the cluster and replicates master I
# (1..N); waits, at most 10 s, until its replication link is up. Sets
# TERN_REPLICA_PORT and TERN_REPLICA_PID (in TERN_PIDS).
tern_cluster_add_replica() {
    local d=$TERN_DIR/cluster.r$1 port bus mport mid first waited=100
    mkdir -p "$d"
    port=$(tern_free_port)
    bus=$(tern_free_port)
    tern_cluster_node "$d" "$port" "$bus"
    TERN_REPLICA_PID=$TERN_NODE_PID
    TERN_REPLICA_PORT=$port
    until redis-cli -p "$port" ping >/dev/null 2>&1; do
        waited=$((waited - 1))
        [ "$waited" -gt 0 ] || { echo "replica on port $port did not start" >&2; return 1; }
        sleep 0.1
    done
    mport=$(echo "$REDIS_CLUSTER_PORTS" | cut -d' ' -f"$1")
    first=${REDIS_CLUSTER_PORTS%% *}
    mid=$(redis-cli -p "$mport" cluster myid)
    redis-cli -p "$port" cluster meet 127.0.0.1 "$first" "${REDIS_CLUSTER_BUSES%% *}" >/dev/null
    waited=100
    until redis-cli -p "$port" cluster replicate "$mid" 2>/dev/null | grep -q OK; do
        waited=$((waited - 1))   # the node must know the master first (gossip)
        [ "$waited" -gt 0 ] || { echo "replica $port: CLUSTER REPLICATE failed" >&2; return 1; }
        sleep 0.1
    done
    waited=100
    until redis-cli -p "$port" info replication 2>/dev/null | grep -q '^master_link_status:up'; do
        waited=$((waited - 1))
        [ "$waited" -gt 0 ] || { echo "replica $port: no replication link" >&2; return 1; }
        sleep 0.1
    done
}

# tern_cluster_keys PATTERN: how many keys match PATTERN on all the
# masters together; "unknown" while one of them does not answer (down,
# or still loading its AOF).
tern_cluster_keys() {
    local p n=0 c
    for p in $REDIS_CLUSTER_PORTS; do
        [ "$(redis-cli -p "$p" ping 2>/dev/null)" = PONG ] || { echo unknown; return; }
        c=$(redis-cli -p "$p" --scan --pattern "$1" 2>/dev/null | wc -l)
        n=$((n + c))
    done
    echo "$n"
}

# tern_cluster_restart I: node I (1..N) of tern_redis_cluster, stopped
# by the caller, started again: the same port, bus port, node file and
# directory (so the same node, serving its slots again, with its data if
# ARGS gave it an AOF). Sets TERN_CLUSTER_PID; it is in TERN_PIDS.
tern_cluster_restart() {
    local d=$TERN_DIR/cluster.$1 port bus
    port=$(echo "$REDIS_CLUSTER_PORTS" | cut -d' ' -f"$1")
    bus=$(echo "$REDIS_CLUSTER_BUSES" | cut -d' ' -f"$1")
    tern_cluster_node "$d" "$port" "$bus"
    TERN_CLUSTER_PID=$TERN_NODE_PID
}

# tern_cluster_slot_owner SLOT: the port of the master of the cluster
# (REDIS_CLUSTER_PORTS) serving SLOT, by what each master says of itself.
tern_cluster_slot_owner() {
    local p
    for p in $REDIS_CLUSTER_PORTS; do
        if redis-cli -p "$p" cluster nodes 2>/dev/null | awk -v s="$1" '/myself/ {
                for (i = 9; i <= NF; i++) { n = split($i, r, "-"); if (n == 1) r[2] = r[1];
                    if (s + 0 >= r[1] + 0 && s + 0 <= r[2] + 0) found = 1 } }
                END { exit !found }'; then
            echo "$p"
            return
        fi
    done
}

# tern_cluster_migrate_slot SLOT DST_PORT [PAUSE]: the steps redis-cli
# --cluster reshard takes for one slot: IMPORTING and MIGRATING, its keys
# MIGRATEd 50 at a time (PAUSE seconds between batches, so that a client
# can meet the half-moved slot: ASK for keys gone, TRYAGAIN for commands
# whose keys are split), then the slot given to DST on every master
# (MOVED from then on). Returns 1 when DST serves it already.
tern_cluster_migrate_slot() {
    local s=$1 dst=$2 pause=${3:-0} src sid did keys p
    src=$(tern_cluster_slot_owner "$s")
    [ -n "$src" ] && [ "$src" != "$dst" ] || return 1
    sid=$(redis-cli -p "$src" cluster myid)
    did=$(redis-cli -p "$dst" cluster myid)
    redis-cli -p "$dst" cluster setslot "$s" importing "$sid" >/dev/null
    redis-cli -p "$src" cluster setslot "$s" migrating "$did" >/dev/null
    while :; do
        keys=$(redis-cli -p "$src" cluster getkeysinslot "$s" 50)
        [ -n "$keys" ] || break
        # shellcheck disable=SC2086
        redis-cli -p "$src" migrate 127.0.0.1 "$dst" "" 0 5000 keys $keys >/dev/null
        [ "$pause" = 0 ] || sleep "$pause"
    done
    for p in $REDIS_CLUSTER_PORTS; do
        redis-cli -p "$p" cluster setslot "$s" node "$did" >/dev/null
    done
}

tern_certs() {
    CERTS=$TERN_DIR/certs
    [ -e "$CERTS/.complete" ] || scripts/gen-test-certs.sh "$CERTS" >/dev/null
}

tern_sink() {   # name, args...
    local name=$1; shift
    rm -f "$TERN_DIR/$name.port"
    "$TERN_BUILD/tern-sink" --listen 127.0.0.1:0 --port-file "$TERN_DIR/$name.port" "$@" \
        >"$TERN_DIR/$name.out" 2>"$TERN_DIR/$name.err" &
    SINK_PID=$!
    TERN_PIDS="$TERN_PIDS $SINK_PID"
    tern_wait_file "$TERN_DIR/$name.port" 100 || { echo "sink $name did not start" >&2; cat "$TERN_DIR/$name.err" >&2; return 1; }
    SINK_PORT=$(cat "$TERN_DIR/$name.port")
}

tern_config() {   # file, then extra "key = value" lines on stdin
    {
        echo "hostname = tern.test"
        echo "redis = $REDIS_ADDR"
        cat
    } >"$1"
}

# Test reporting: "PASS name" / "FAIL name: why"; TERN_FAILS counts failures.
TERN_FAILS=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; TERN_FAILS=$((TERN_FAILS + 1)); }

# tern_free_port: a free TCP port on 127.0.0.1, for a server the test starts.
tern_free_port() {
    python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

# rcli ARGS...: redis-cli on the private redis-server.
rcli() { redis-cli -s "$REDIS_SOCK" "$@"; }

# tern_test_env: tern_test_setup, then a private redis-server and the test
# certificates; exits the test if either cannot be had.
tern_test_env() {
    tern_test_setup
    tern_redis || exit 1
    tern_certs || exit 1
}

# tern_test_setup: a scratch directory as $dir, everything stopped and
# removed on exit, $TERN the binary under test.
tern_test_setup() {
    dir=$(mktemp -d /tmp/tern-it.XXXXXX)
    trap 'tern_cleanup; rm -rf "$dir"' EXIT
    tern_init "$dir"
    TERN=$TERN_BUILD/tern
}

# tern_nsd ZONE FILE [ZONE FILE]...: a private nsd (the DNS server of the
# MX routing tests) on a free loopback port serving the zone files, with
# a control socket for its query counters; sets DNS_PORT, NSD_CONF.
# Stopped by tern_cleanup like everything else.
tern_nsd() {
    command -v nsd >/dev/null || { echo "nsd is not installed: run scripts/install-deps.sh" >&2; return 1; }
    local d=$TERN_DIR/nsd
    mkdir -p "$d"
    DNS_PORT=$(/usr/bin/python3 -c 'import socket
for _ in range(50):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass')
    NSD_CONF=$d/nsd.conf
    {
        printf 'server:\n    ip-address: 127.0.0.1@%s\n    username: ""\n    chroot: ""\n' "$DNS_PORT"
        printf '    zonesdir: "%s"\n    pidfile: "%s/nsd.pid"\n    database: ""\n' "$d" "$d"
        printf '    xfrdfile: "%s/xfrd.state"\n    zonelistfile: "%s/zone.list"\n' "$d" "$d"
        printf '    xfrdir: "%s"\n    logfile: "%s/nsd.log"\n    server-count: 1\n' "$d" "$d"
        printf 'remote-control:\n    control-enable: yes\n    control-interface: %s/nsd.ctl\n' "$d"
        while [ $# -ge 2 ]; do
            cp "$2" "$d/$1.zone"
            printf 'zone:\n    name: %s\n    zonefile: %s.zone\n' "$1" "$1"
            shift 2
        done
    } >"$NSD_CONF"
    nsd -d -c "$NSD_CONF" >"$d/nsd.out" 2>&1 &
    TERN_PIDS="$TERN_PIDS $!"
    local n=100
    while [ "$n" -gt 0 ]; do
        nsd-control -c "$NSD_CONF" status >/dev/null 2>&1 && return 0
        sleep 0.1
        n=$((n - 1))
    done
    echo "nsd did not start: $(cat "$d/nsd.out" "$d/nsd.log" 2>/dev/null)" >&2
    return 1
}

# tern_nsd_queries: queries the private nsd has answered so far.
tern_nsd_queries() {
    nsd-control -c "$NSD_CONF" stats_noreset | awk -F= '$1=="num.queries"{print $2}'
}
