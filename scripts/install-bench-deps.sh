#!/bin/sh
# install-bench-deps.sh - install Postfix, the peer bench/bench.sh measures
# tern against (postfix, smtp-source, postconf). Idempotent. The package
# starts a system mail daemon on install; the benchmark runs its own private
# instance instead, so any system postfix is stopped again here and must not
# be left listening on port 25. Needs root (or sudo) for apt-get.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "install-bench-deps: run as root (or install sudo)" >&2
        exit 1
    fi
else
    SUDO=
fi

# Stops the system instance (config in /etc/postfix) whatever started it.
stop_system_postfix() {
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl stop postfix 2>/dev/null || true
        $SUDO systemctl disable postfix 2>/dev/null || true
    fi
    if [ -x /usr/sbin/postfix ] && $SUDO /usr/sbin/postfix status >/dev/null 2>&1; then
        $SUDO /usr/sbin/postfix stop >/dev/null 2>&1 || true
    fi
}

if dpkg-query -W -f='${Status}' postfix 2>/dev/null | grep -q "install ok installed" &&
    command -v smtp-source >/dev/null 2>&1; then
    echo "install-bench-deps: postfix present"
    stop_system_postfix
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# "No configuration": the package leaves /etc/postfix/main.cf alone and does
# not ask questions; the benchmark writes its own main.cf elsewhere.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
# policy-rc.d refusing (exit 101) keeps invoke-rc.d from starting the daemon
# during the install where there is no systemd; removed again afterwards.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    own_policy=1
fi
cleanup() { [ "$own_policy" -eq 1 ] && $SUDO rm -f "$policy"; }
trap cleanup EXIT
$SUDO apt-get update -qq || echo "install-bench-deps: apt-get update failed; trying the existing lists" >&2
$SUDO apt-get install -y -qq --no-install-recommends postfix
stop_system_postfix
command -v smtp-source >/dev/null 2>&1 || { echo "install-bench-deps: smtp-source missing after install" >&2; exit 1; }
echo "install-bench-deps: done ($(/usr/sbin/postconf -d -h mail_version 2>/dev/null || echo '?'))"
