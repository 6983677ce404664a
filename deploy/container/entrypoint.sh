#!/bin/sh
# The image's entry point: give group `busted` the host's group id when BUSTED_GID is set
# (so members of the host's group `busted` can run `busted ui` on the runtime directory
# the container shares), then run busted with the arguments given.
set -e
if [ -n "${BUSTED_GID:-}" ] && [ "$(getent group busted | cut -d: -f3)" != "$BUSTED_GID" ]; then
    groupmod -g "$BUSTED_GID" busted
fi
exec /opt/busted/.venv/bin/busted "$@"
