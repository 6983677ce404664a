#!/usr/bin/env bash
# Build the busted image (deploy/Dockerfile) from this checkout with podman (else docker):
# the local Debian base first (deploy/build-base-image.sh), then the image. Shared by
# tests/privileged/test_container.py and the README. Run as root.
#   deploy/build-image.sh [TAG]        # default busted:latest
# Extra arguments for the engine's build: BUSTED_BUILD_ARGS="--build-arg ...".
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-busted:latest}
if command -v podman >/dev/null; then engine=podman; else engine=docker; fi

bash "$repo/deploy/build-base-image.sh"
args=(--network host -f "$repo/deploy/Dockerfile" -t "$tag")
# pip inside the build trusts what the host trusts (a proxy's CA, a private index's).
ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$ca" ] && args+=(--secret "id=host_ca,src=$ca")
if [ "$engine" = podman ]; then
    args+=($(bash "$repo/deploy/container/podman-args.sh"))
fi
# shellcheck disable=SC2086 # BUSTED_BUILD_ARGS is split on purpose
$engine build "${args[@]}" ${BUSTED_BUILD_ARGS:-} "$repo"
