#!/bin/sh
# install-bench-deps.sh - install the peers the benchmark measures tern
# against. Idempotent. Needs root (or sudo) for apt-get.
#
# Postfix (postfix, smtp-source, postconf) is installed as a package. The
# package starts a system mail daemon on install; the benchmark runs its own
# private instance instead, so any system postfix is stopped again here and
# must not be left listening on port 25.
#
# Exim: Debian's exim4-daemon-light conflicts with postfix (both are the
# system's mail-transport-agent), so its package is downloaded and unpacked
# into EXIM_ROOT instead of installed (bench/exim.sh runs that binary with
# a private configuration; its setuid bit is removed: that copy gets no
# security updates, and the benchmark starts it as root), with the
# libraries it links installed as
# packages and the user it was built to run as (Debian-exim, a system user
# as the package would make). Exim failing to install is reported and
# leaves the exit status alone: only `bench/run --peer exim` needs it.
set -eu
export DEBIAN_FRONTEND=noninteractive

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

EXIM_ROOT=${TERN_EXIM_ROOT:-/opt/tern-bench/exim4}
EXIM_LIBS="libdb5.3 libgnutls-dane0 libgnutls30 libidn12 libidn2-0 libnsl2 libpcre2-8-0 libcrypt1"

install_exim() {
    if [ -x "$EXIM_ROOT/usr/sbin/exim4" ] && getent passwd Debian-exim >/dev/null; then
        $SUDO chmod u-s "$EXIM_ROOT/usr/sbin/exim4"
        echo "install-bench-deps: exim present ($EXIM_ROOT)"
        return 0
    fi
    # only the missing ones: apt-get install would upgrade those present
    missing=""
    for p in $EXIM_LIBS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        # shellcheck disable=SC2086  # a list of package names
        $SUDO apt-get install -y -qq --no-install-recommends $missing || return 1
    fi
    dl=$(mktemp -d)
    chmod 777 "$dl"   # apt-get download fetches as the _apt user
    (cd "$dl" && $SUDO apt-get download -qq exim4-daemon-light) || { rm -rf "$dl"; return 1; }
    $SUDO mkdir -p "$EXIM_ROOT"
    $SUDO dpkg-deb -x "$dl"/exim4-daemon-light_*.deb "$EXIM_ROOT" || { rm -rf "$dl"; return 1; }
    rm -rf "$dl"
    # The package's binary is setuid root; the benchmark starts it as root
    # and needs no setuid copy outside the package manager's care.
    $SUDO chmod u-s "$EXIM_ROOT/usr/sbin/exim4"
    if ! getent passwd Debian-exim >/dev/null; then
        if command -v adduser >/dev/null 2>&1; then
            $SUDO adduser --system --group --quiet --allow-bad-names --no-create-home \
                --home /nonexistent Debian-exim || return 1
        else
            $SUDO useradd --system --user-group --badname --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin Debian-exim || return 1
        fi
    fi
    "$EXIM_ROOT/usr/sbin/exim4" -C /dev/null -bV >/dev/null 2>&1 || return 1
    echo "install-bench-deps: exim unpacked into $EXIM_ROOT"
}

if dpkg-query -W -f='${Status}' postfix 2>/dev/null | grep -q "install ok installed" &&
    command -v smtp-source >/dev/null 2>&1; then
    echo "install-bench-deps: postfix present"
    stop_system_postfix
    install_exim || echo "install-bench-deps: exim not installed (bench/run --peer exim will skip)" >&2
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
# An if, not "&&": under set -e a false test as the trap's last command
# would make the whole script exit 1 when policy-rc.d was already there.
cleanup() { if [ "$own_policy" -eq 1 ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT
$SUDO apt-get update -qq || echo "install-bench-deps: apt-get update failed; trying the existing lists" >&2
$SUDO apt-get install -y -qq --no-install-recommends postfix
stop_system_postfix
command -v smtp-source >/dev/null 2>&1 || { echo "install-bench-deps: smtp-source missing after install" >&2; exit 1; }
echo "install-bench-deps: done ($(/usr/sbin/postconf -d -h mail_version 2>/dev/null || echo '?'))"
install_exim || echo "install-bench-deps: exim not installed (bench/run --peer exim will skip)" >&2
