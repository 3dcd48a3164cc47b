#!/bin/sh
# install-deps.sh - install the Debian packages tern builds, runs and tests
# with. Idempotent: installs only what is missing. Needs root for apt-get.
set -eu

PKGS="build-essential make gcc clang libclang-rt-14-dev
android-libboringssl-dev liburing-dev libhiredis-dev libc-ares-dev
redis-server openssl ca-certificates python3 python3-aiosmtpd swaks libcrypt-dev
libnet-ssleay-perl libio-socket-ssl-perl nsd"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "install-deps: all packages present"
    exit 0
fi
echo "install-deps: missing:$missing"
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "install-deps: run as root (or install sudo) to install:$missing" >&2
        exit 1
    fi
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || echo "install-deps: apt-get update failed; trying the existing lists" >&2
# nsd (the DNS server tests/it_dns.sh starts on a private port) must not
# start a system daemon on port 53: a policy-rc.d that says no while
# apt-get runs, unless one is there already.
norc=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    norc=1
fi
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing || { [ -z "$norc" ] || $SUDO rm -f /usr/sbin/policy-rc.d; exit 1; }
[ -z "$norc" ] || $SUDO rm -f /usr/sbin/policy-rc.d
# The package's own redis service is not ours: tern starts private ones.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    echo "install-deps: note: a system redis-server is running; tern does not use it"
fi
echo "install-deps: done"
