#!/usr/bin/env bash
# Install busted as a systemd service for this checkout (`sudo make install-service`):
# render deploy/systemd/busted.service.in with this checkout's path, check it with
# systemd-analyze verify, install the shipped policies in /etc/busted/policies if that
# directory is missing, then enable and start the service.
#   deploy/systemd/install-service.sh [--render-only FILE]   # just write the unit to FILE
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
# A checkout under /tmp or /var/tmp would vanish behind the unit's private /tmp: that
# unit keeps the host's /tmp (and says why); move the checkout to keep PrivateTmp=yes.
private_tmp=yes
case "$repo/" in /tmp/*|/var/tmp/*)
    private_tmp=no
    echo "note: $repo is under a temporary directory, so the unit keeps the host's /tmp (PrivateTmp=no)" >&2;;
esac
render() {
    sed -e "s#@PREFIX@#$repo#g" -e "s#^PrivateTmp=yes\$#PrivateTmp=$private_tmp#" \
        "$repo/deploy/systemd/busted.service.in" > "$1"
}

if [ "${1:-}" = "--render-only" ]; then render "$2"; exit 0; fi
if [ "$(id -u)" -ne 0 ]; then echo "install-service needs root: sudo make install-service" >&2; exit 1; fi
[ -x "$repo/.venv/bin/busted" ] || { echo "no $repo/.venv: run make setup first" >&2; exit 1; }

unit=/etc/systemd/system/busted.service
render "$unit.tmp"
systemd-analyze verify "$unit.tmp" 2>&1 | grep -v "is marked executable\|\.tmp: unit" || true
mv "$unit.tmp" "$unit"
if [ ! -d /etc/busted/policies ]; then
    install -d -m 0755 /etc/busted/policies
    install -m 0644 "$repo"/policies/*.rego "$repo"/policies/data.json /etc/busted/policies/
fi
echo "installed $unit"
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now busted
    systemctl --no-pager status busted || true
else
    echo "systemd is not running here: start it later with systemctl enable --now busted"
fi
