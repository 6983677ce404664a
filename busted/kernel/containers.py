"""Container ids from cgroup paths.

Runtimes name the container in the cgroup path: docker (``/docker/<64 hex>`` or
``docker-<64 hex>.scope``), containerd/CRI (``cri-containerd-<id>.scope``), CRI-O
(``crio-<id>.scope``), podman (``libpod-<id>.scope``), Kubernetes pods
(``/kubepods/.../pod<uid>/<64 hex>``). We return the 64-hex id (the same the runtime's
CLI shows, first 12 characters being the short form) or "" when the path names none.
"""

from __future__ import annotations

import re

_ID = re.compile(
    r"(?:^|/)(?:docker-|cri-containerd-|crio-|libpod-|containerd-)?([0-9a-f]{64})(?:\.scope)?(?=/|$)"
)


def container_id_from_cgroup_path(path: str) -> str:
    """The container id named by a cgroup path, or ""."""
    found = ""
    # The innermost (last) id wins: nested cgroups end with the container's own.
    for match in _ID.finditer(path):
        found = match.group(1)
    return found


def container_id_of_pid(pid: int, proc: str = "/proc") -> str:
    """Read /proc/<pid>/cgroup (v1 or v2) and return the container id, or ""."""
    try:
        with open(f"{proc}/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in lines:
        # "0::/system.slice/docker-<id>.scope" (v2) or "4:memory:/docker/<id>" (v1)
        path = line.split(":", 2)[-1]
        found = container_id_from_cgroup_path(path)
        if found:
            return found
    return ""
