# lib.sh - shell helpers shared by the demo, the benchmark and the
# integration tests: private redis-server, the sink, a config file. Every
# process started here is recorded and stopped by tern_cleanup (by PID).
#
#   . scripts/lib.sh
#   tern_init DIR             working directory (created); sets TERN_DIR
#   tern_redis                starts redis on DIR/redis.sock; sets REDIS_ADDR
#   tern_sink NAME ARGS...    starts build/tern-sink; sets SINK_PORT, SINK_PID
#   tern_certs                test certificates into DIR/certs; sets CERTS
#   tern_cleanup              stops everything started (call from a trap)

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

tern_wait_file() {   # file, tenths of a second
    local n=${2:-100}
    while [ ! -s "$1" ] && [ "$n" -gt 0 ]; do
        sleep 0.1
        n=$((n - 1))
    done
    [ -s "$1" ]
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
