#!/usr/bin/env bash
# Print the podman options this host needs to run containers at all (used for `podman
# build` and `podman run` by deploy/build-image.sh and the tests):
# - crun refuses a hybrid cgroup layout (cgroup v1 controllers beside a cgroup2 mount,
#   "cgroups in hybrid mode not supported"): use runc there.
# - a host whose hard limits are below podman's defaults (RLIMIT_NOFILE 1048576) without
#   CAP_SYS_RESOURCE cannot raise them in the container ("setrlimit RLIMIT_NOFILE:
#   Operation not permitted"): ask for limits under the host's.
set -euo pipefail
out=()
if [ ! -e /sys/fs/cgroup/cgroup.controllers ] && command -v runc >/dev/null; then
    out+=(--runtime runc)
fi
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] || [ "$nofile" -ge 1048576 ] || out+=(--ulimit "nofile=8192:8192")
[ "$nproc" = unlimited ] || [ "$nproc" -ge 4194304 ] || out+=(--ulimit "nproc=8192:8192")
echo "${out[@]}"
