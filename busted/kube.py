"""Kubernetes awareness: which pod a container belongs to.

Capture names the container (its id, from the cgroup path); this module maps container
ids to pods. A background thread keeps an index of the pods scheduled on this node with
the official ``kubernetes`` client, the way controllers do: it lists the node's pods
(field selector ``spec.nodeName=<node>``), then watches from the list's
``resourceVersion``, so a pod that started a second ago is known as soon as its
container runs, without polling. When the watch expires (410 Gone: the server no longer
has that version) it lists again; on any other failure (API server down, connection
cut, forbidden) it waits with exponential backoff and lists again, since events may have
been missed meanwhile.

Lookups are dictionary reads and never wait for the network: the index is replaced
whole on every change (copy, edit, one assignment), so the worker thread never sees a
half-built map.

Enabled when busted runs inside a cluster (``KUBERNETES_SERVICE_HOST`` is set, the
DaemonSet case) or when ``--kubeconfig`` is given. The node is ``--node-name``, else
``$NODE_NAME`` (set it from the downward API, ``spec.nodeName``), else the host name.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("busted.kube")

WATCH_TIMEOUT_S = 300  # the server ends each watch after this; we resume from where it was
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
HTTP_GONE = 410


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


def container_ids(pod) -> list[str]:
    """The runtime ids of a pod's running or finished containers (init ones included)."""
    status = pod.status
    if status is None:
        return []
    statuses = [*(status.container_statuses or []), *(status.init_container_statuses or []),
                *(status.ephemeral_container_statuses or [])]
    # "containerd://<id>", "docker://<id>", "cri-o://<id>"
    return [cid for s in statuses if (cid := (s.container_id or "").rpartition("://")[2])]


def kubernetes_wanted(kubeconfig: str | None) -> bool:
    return bool(kubeconfig or os.environ.get("KUBERNETES_SERVICE_HOST"))


class PodIndex:
    """container id (64 hex) -> PodInfo for the pods on one node, kept by list + watch."""

    def __init__(self, kubeconfig: str | None = None, node_name: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.node_name = node_name or os.environ.get("NODE_NAME") or socket.gethostname()
        self.pods: dict[str, PodInfo] = {}  # container id -> pod
        self._containers: dict[tuple[str, str], list[str]] = {}  # (namespace, name) -> ids
        self.refreshes = 0  # full lists
        self.watch_events = 0
        self.relists_after_expiry = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch = None
        self._api = None

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        from kubernetes import client, config

        if self.kubeconfig:
            config.load_kube_config(config_file=self.kubeconfig)
        else:
            config.load_incluster_config()
        self._api = client.CoreV1Api()
        self._thread = threading.Thread(target=self._run, name="kube-pods", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.stop()  # shuts the streaming socket down, so the thread wakes up

    def _run(self) -> None:
        from kubernetes.client.rest import ApiException

        backoff = BACKOFF_FIRST_S
        while not self._stop.is_set():
            try:
                version = self.refresh()
                backoff = BACKOFF_FIRST_S
                self._follow(version)
            except ApiException as exc:
                if exc.status == HTTP_GONE:
                    # The version we watched from is too old: list again, at once.
                    self.relists_after_expiry += 1
                    log.info("pod watch on node %s expired; listing again", self.node_name)
                    continue
                backoff = self._failed(exc, backoff)
            except Exception as exc:  # noqa: BLE001 - network or decoding: keep the old index
                backoff = self._failed(exc, backoff)

    def _failed(self, exc: Exception, backoff: float) -> float:
        """Count and log a failure, wait out the backoff; returns the next one."""
        if self._stop.is_set():
            return backoff
        self.errors += 1
        if self.errors <= 3 or self.errors % 100 == 0:
            log.warning("pod index for node %s: %s; retrying in %.1f s",
                        self.node_name, exc, backoff)
        self._stop.wait(backoff * random.uniform(0.8, 1.2))
        return min(backoff * 2, BACKOFF_MAX_S)

    # -- list and watch -------------------------------------------------------------------

    def refresh(self) -> str:
        """List this node's pods and swap the index in; returns the list's resourceVersion."""
        pods = self._api.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={self.node_name}", _request_timeout=10)
        index: dict[str, PodInfo] = {}
        containers: dict[tuple[str, str], list[str]] = {}
        for pod in pods.items:
            info = _info(pod)
            ids = container_ids(pod)
            containers[(info.namespace, info.name)] = ids
            index.update(dict.fromkeys(ids, info))
        self.pods, self._containers = index, containers
        self.refreshes += 1
        return pods.metadata.resource_version

    def _follow(self, version: str) -> None:
        """Apply watch events from ``version`` on; returns when stopped, raises on failure
        (ApiException 410 when the version expired). A watch the server ends on time is
        resumed from the last version seen."""
        from kubernetes import watch

        while not self._stop.is_set():
            self._watch = watch.Watch()
            started = time.monotonic()
            events = 0
            for event in self._watch.stream(
                    self._api.list_pod_for_all_namespaces,
                    field_selector=f"spec.nodeName={self.node_name}",
                    resource_version=version, allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_TIMEOUT_S,
                    _request_timeout=(10, WATCH_TIMEOUT_S + 30)):
                events += 1
                self._apply(event["type"], event["object"])
                if self._stop.is_set():
                    return
            version = self._watch.resource_version or version
            if events == 0 and time.monotonic() - started < 1.0:
                # A watch that ends at once with nothing in it: do not spin on it.
                raise ConnectionError("the API server ended the pod watch at once")

    def _apply(self, kind: str, pod) -> None:
        if kind == "BOOKMARK":
            return
        self.watch_events += 1
        key = (pod.metadata.namespace, pod.metadata.name)
        index = dict(self.pods)
        for cid in self._containers.get(key, ()):
            index.pop(cid, None)
        containers = dict(self._containers)
        if kind == "DELETED":
            containers.pop(key, None)
        else:  # ADDED, MODIFIED
            info = _info(pod)
            ids = container_ids(pod)
            containers[key] = ids
            index.update(dict.fromkeys(ids, info))
        self.pods, self._containers = index, containers

    # -- lookups (the worker's thread) ----------------------------------------------------

    def lookup(self, container_id: str) -> PodInfo | None:
        if not container_id:
            return None
        pods = self.pods
        info = pods.get(container_id)
        if info is None and len(container_id) < 64:  # a short id: match the prefix
            info = next((p for cid, p in pods.items() if cid.startswith(container_id)), None)
        return info


def _info(pod) -> PodInfo:
    return PodInfo(pod.metadata.name, pod.metadata.namespace,
                   pod.spec.service_account_name or "", workload_of(pod))
