#!/usr/bin/env bash
# Install the agent binaries listed in deploy/agents.txt into a cache (default
# /var/cache/busted/agents), one directory per entry: NAME/package/... as npm packs it.
# Idempotent: an entry whose program is in place is left alone. The tests find them
# through tests/privileged/harness/agents.py. Needs npm and the npm registry.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${BUSTED_AGENT_CACHE:-/var/cache/busted/agents}
say() { printf '[agents] %s\n' "$*"; }
# a program is in place when executable; a .js program (run by node) needs only be a file
present() { [ -x "$1" ] || { [[ "$1" == *.js ]] && [ -f "$1" ]; }; }

mkdir -p "$cache"
chmod 0755 "$cache"
while read -r name spec program; do
    case "$name" in ''|'#'*) continue ;; esac
    dest="$cache/$name"
    if present "$dest/package/$program"; then
        continue
    fi
    say "fetching $spec"
    work=$(mktemp -d "$cache/.fetch.XXXXXX")
    # a failed or cut download must not leave a half package behind
    if ! (cd "$work" && npm pack --silent --no-fund --no-audit "$spec" >/dev/null); then
        rm -rf "$work"
        echo "setup: could not download $spec from the npm registry (needed by the agent tests)." >&2
        exit 1
    fi
    tar -xzf "$work"/*.tgz -C "$work"
    rm -f "$work"/*.tgz
    if ! present "$work/package/$program"; then
        rm -rf "$work"
        echo "setup: $spec does not hold $program; fix deploy/agents.txt." >&2
        exit 1
    fi
    rm -rf "$dest"
    chmod 0755 "$work"  # mktemp made it private; the cache is readable by all
    mv "$work" "$dest"
done < "$repo/deploy/agents.txt"
say "agents in $cache"
