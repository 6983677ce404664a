#!/bin/sh
# The image's entry point: give group `busted` the host's group id when BUSTED_GID is set
# (so members of the host's group `busted` can run `busted ui` on the runtime directory
# the container shares), then run busted with the arguments given.
set -e
case "${BUSTED_GID:-}" in
    "") ;;
    *[!0-9]*) echo "busted-entrypoint: BUSTED_GID=$BUSTED_GID is not a number; ignored" >&2 ;;
    *) [ "$(getent group busted | cut -d: -f3)" = "$BUSTED_GID" ] || groupmod -g "$BUSTED_GID" busted ;;
esac
exec /opt/busted/.venv/bin/busted "$@"
