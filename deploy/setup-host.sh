#!/usr/bin/env bash
# Prepare a Debian 12 host for busted: packages, kernel headers link, tracefs/bpffs
# mounts, the `busted` group and worker account, and the .venv at the repo root.
# Idempotent: every step checks before it acts. Run as root (make setup does).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv="$repo/.venv"
say() { printf '[setup] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup needs root: it installs Debian packages and mounts tracefs/bpffs." >&2
    echo "Run it as: sudo make setup" >&2
    exit 1
fi

# --- Debian packages -----------------------------------------------------------------
packages=(
    bpfcc-tools python3-bpfcc linux-headers-amd64   # bcc and headers it compiles against
    python3-venv python3-dev gcc make               # the venv and wheels that compile
    xvfb x11-apps imagemagick xdotool libgl1-mesa-dri  # GUI tests under Xvfb
    fonts-dejavu-core                               # the dashboard's font
    curl openssl iproute2 util-linux procps dnsutils   # test clients and namespaces
    nodejs                                          # a client that embeds OpenSSL
    rsyslog rsyslog-gnutls                          # a real syslog receiver (TCP, TLS) for the sink tests
    gnutls-bin wget                                 # gnutls-cli, wget (GnuTLS): TLS clients busted cannot read
    golang-go                                       # Go 1.19: test clients with crypto/tls
    systemd python3-seccomp                         # systemd-analyze; the unit's seccomp filter applied in tests/privileged/test_systemd_sandbox.py
    podman runc debootstrap podman-compose          # the container image and compose file, built and run by tests/privileged/test_container.py
    golang-github-containernetworking-plugin-dnsname  # compose services find each other by name (podman with CNI)
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- kernel headers: bcc wants /lib/modules/$(uname -r)/build --------------------------
# There are no headers for this kernel; Debian's generic ones work for what we compile.
kdir="/lib/modules/$(uname -r)"
if [ ! -e "$kdir/build" ]; then
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$hdr" ] && [ -n "$common" ]; then
        say "linking $kdir/build -> $hdr"
        mkdir -p "$kdir"
        ln -sfn "$hdr" "$kdir/build"
        ln -sfn "$common" "$kdir/source"
    else
        say "WARNING: no kernel headers under /usr/src; BPF programs will not compile"
    fi
fi

# --- pseudo file systems ---------------------------------------------------------------
mountpoint -q /sys/kernel/tracing || { say "mounting tracefs"; mount -t tracefs nodev /sys/kernel/tracing; }
mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug 2>/dev/null || true
mountpoint -q /sys/fs/bpf || { say "mounting bpffs"; mount -t bpf bpf /sys/fs/bpf; }
mountpoint -q /sys/kernel/security || mount -t securityfs none /sys/kernel/security 2>/dev/null || true

# --- accounts --------------------------------------------------------------------------
# Group `busted`: may read the published stream. User `busted`: the unprivileged
# account that payload-parsing workers switch to.
getent group busted >/dev/null || { say "creating group busted"; groupadd --system busted; }
getent passwd busted >/dev/null || {
    say "creating system user busted"
    useradd --system --gid busted --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin busted
}

# --- the virtualenv ----------------------------------------------------------------------
# Debian's python with system site-packages, so `import bcc` (python3-bpfcc) works.
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import bcc" 2>/dev/null; then
    say "creating $venv"
    rm -rf "$venv"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
stamp="$venv/.installed"
if [ ! -f "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ]; then
    say "installing busted (editable) with its extras into $venv"
    "$venv/bin/pip" install -q --upgrade pip setuptools wheel
    "$venv/bin/pip" install -q -e "$repo[ui,k8s,ml,metrics,test]"
    touch "$stamp"
fi
# --- real agent binaries for the tests (deploy/agents.txt) -------------------------------
bash "$repo/deploy/install-agents.sh"
say "ready"
