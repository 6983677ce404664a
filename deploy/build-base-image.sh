#!/usr/bin/env bash
# Make the Debian bookworm base image locally, for hosts that reach Debian's package
# mirror but no image registry: debootstrap a minimal bookworm, then import it as
# busted-base:bookworm (podman, else docker). deploy/Dockerfile starts FROM it; where a
# registry is reachable, `--build-arg BASE=debian:bookworm-slim` skips this script.
# Used by tests/privileged/test_container.py and the README. Run as root.
#   deploy/build-base-image.sh            # builds busted-base:bookworm once
#   deploy/build-base-image.sh --force    # builds it again
set -euo pipefail

image=${BUSTED_BASE_IMAGE:-busted-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
say() { printf '[base-image] %s\n' "$*"; }

if command -v podman >/dev/null; then engine=podman
elif command -v docker >/dev/null; then engine=docker
else echo "neither podman nor docker is installed (apt-get install podman)" >&2; exit 1
fi
if [ "${1:-}" != "--force" ] && $engine image exists "$image" 2>/dev/null; then
    say "$image is there already ($engine)"; exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }

root=$(mktemp -d /var/tmp/busted-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
say "debootstrap --variant=minbase bookworm from $mirror"
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
# apt inside the image: the release, its updates and security fixes.
cat > "$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
EOF
# Smaller: no package lists or caches in the layer.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
say "importing as $image"
tar -C "$root" -c . | $engine import --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
say "done: $($engine image inspect --format '{{.Size}}' "$image") bytes"
