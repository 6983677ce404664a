"""Kubernetes awareness: which pod a container belongs to.

Capture names the container (its id, from the cgroup path); this module maps container
ids to pods by listing the pods scheduled on this node from the API server, with the
official ``kubernetes`` client, on a background thread every ``REFRESH_S``. Lookups are
dictionary reads and never wait for the network: a container seen before the first
listing simply gets its pod on a later event.

Enabled when busted runs inside a cluster (``KUBERNETES_SERVICE_HOST`` is set, the
DaemonSet case) or when ``--kubeconfig`` is given. The node is ``--node-name``, else
``$NODE_NAME`` (set it from the downward API), else the host name.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass

log = logging.getLogger("busted.kube")

REFRESH_S = 30.0


@dataclass(frozen=True)
class PodInfo:
    name: str
    namespace: str
    service_account: str
    workload: str  # the Deployment / StatefulSet / DaemonSet / Job, else the pod itself


def workload_of(pod) -> str:
    """Name the workload a pod is a replica of, from its owner references: every
    replica of one Deployment is the same agent."""
    owners = pod.metadata.owner_references or []
    owner = next((o for o in owners if o.controller), owners[0] if owners else None)
    if owner is None:
        return pod.metadata.name
    if owner.kind == "ReplicaSet":
        # A Deployment's ReplicaSet is "<deployment>-<pod-template-hash>".
        template_hash = (pod.metadata.labels or {}).get("pod-template-hash")
        if template_hash and owner.name.endswith("-" + template_hash):
            return owner.name[: -len(template_hash) - 1]
    return owner.name


def kubernetes_wanted(kubeconfig: str | None) -> bool:
    return bool(kubeconfig or os.environ.get("KUBERNETES_SERVICE_HOST"))


class PodIndex:
    """container id (64 hex) -> PodInfo for the pods on one node."""

    def __init__(self, kubeconfig: str | None = None, node_name: str | None = None,
                 refresh_s: float = REFRESH_S) -> None:
        self.kubeconfig = kubeconfig
        self.node_name = node_name or os.environ.get("NODE_NAME") or socket.gethostname()
        self.refresh_s = refresh_s
        self.pods: dict[str, PodInfo] = {}
        self.refreshes = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._api = None

    def start(self) -> None:
        from kubernetes import client, config

        if self.kubeconfig:
            config.load_kube_config(config_file=self.kubeconfig)
        else:
            config.load_incluster_config()
        self._api = client.CoreV1Api()
        self._thread = threading.Thread(target=self._run, name="kube-pods", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.refresh_s)

    def refresh(self) -> None:
        """List this node's pods once and swap the index in (one assignment: lookups
        from the worker thread never see a half-built map)."""
        try:
            pods = self._api.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self.node_name}", _request_timeout=10)
        except Exception as exc:  # noqa: BLE001 - API down or forbidden: keep the old index
            self.errors += 1
            if self.errors <= 3:
                log.warning("cannot list pods on node %s: %s", self.node_name, exc)
            return
        index: dict[str, PodInfo] = {}
        for pod in pods.items:
            info = PodInfo(pod.metadata.name, pod.metadata.namespace,
                           pod.spec.service_account_name or "", workload_of(pod))
            statuses = [*(pod.status.container_statuses or []),
                        *(pod.status.init_container_statuses or [])]
            for status in statuses:
                # "containerd://<id>", "docker://<id>", "cri-o://<id>"
                container_id = (status.container_id or "").rpartition("://")[2]
                if container_id:
                    index[container_id] = info
        self.pods = index
        self.refreshes += 1

    def lookup(self, container_id: str) -> PodInfo | None:
        if not container_id:
            return None
        info = self.pods.get(container_id)
        if info is None and len(container_id) < 64:  # a short id: match the prefix
            info = next((p for cid, p in self.pods.items() if cid.startswith(container_id)),
                        None)
        return info

    def stop(self) -> None:
        self._stop.set()
