"""The pod index's list-then-watch against a local stand-in for the Kubernetes API server
(a real HTTP server speaking the pod list and the chunked watch stream), through the
official ``kubernetes`` client: ADDED, MODIFIED and DELETED events change the index as
they arrive, a 410 Gone expiry makes it list again and watch from the new version, and a
failing API server is retried with backoff. There is no cluster here; only the server is
a stand-in."""

from __future__ import annotations

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from fake_kubeconfig import write_kubeconfig
from polling import wait_for

from busted.kube import PodIndex

NODE = "node-1"
A, B, B2, C = "a" * 64, "b" * 64, "b2" * 32, "c" * 64
CLOSE = object()


def pod(name, cid, version, namespace="agents"):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": version,
                         "labels": {}},
            "spec": {"serviceAccountName": "sa", "nodeName": NODE, "containers": []},
            "status": {"containerStatuses": [] if cid is None else [
                {"name": "c", "containerID": f"containerd://{cid}", "image": "i", "imageID": "",
                 "ready": True, "restartCount": 0}]}}


class FakeApi:
    """Answers pod lists from ``lists`` (a dict, or an HTTP status to fail with) and
    streams each watch from a queue the test feeds (``CLOSE`` ends the stream)."""

    def __init__(self) -> None:
        self.lists: queue.Queue = queue.Queue()
        self.requests: list[tuple[str, dict]] = []  # ("list"|"watch", query)
        self.watches: queue.Queue = queue.Queue()  # one event queue per watch request
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                if query.get("watch", "").lower() == "true":
                    api.requests.append(("watch", query))
                    self._watch()
                else:
                    api.requests.append(("list", query))
                    self._list()

            def _list(self):
                answer = api.lists.get(timeout=30)
                if isinstance(answer, int):
                    self._send(answer, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "code": answer, "message": "unavailable"})
                    return
                self._send(200, answer)

            def _send(self, code, doc):
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _watch(self):
                events: queue.Queue = queue.Queue()
                api.watches.put(events)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while True:
                    event = events.get()
                    if event is CLOSE:
                        break
                    line = json.dumps(event).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                try:
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next_watch(self) -> queue.Queue:
        return self.watches.get(timeout=30)

    def last(self, kind: str) -> dict:
        return [q for k, q in self.requests if k == kind][-1]


@pytest.fixture
def api(tmp_path):
    fake = FakeApi()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.server.server_port)
    fake.kubeconfig = kubeconfig
    yield fake
    while not fake.watches.empty():  # let open streams end so the server can stop
        fake.watches.get().put(CLOSE)
    fake.server.shutdown()


def pod_list(version, *pods):
    return {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": version},
            "items": list(pods)}


def named(index: PodIndex, cid: str):
    info = index.lookup(cid)
    return info.name if info else None


def test_list_then_watch_follows_pods_and_relists_after_expiry(api):
    api.lists.put(pod_list("100", pod("old", A, "90")))
    index = PodIndex(api.kubeconfig, node_name=NODE)
    index.start()
    try:
        stream = api.next_watch()
        # The watch starts where the list ended, for this node's pods only.
        watch = api.last("watch")
        assert watch["resourceVersion"] == "100"
        assert watch["fieldSelector"] == f"spec.nodeName={NODE}"
        assert api.last("list")["fieldSelector"] == f"spec.nodeName={NODE}"
        assert named(index, A) == "old"

        # A pod scheduled a moment ago: named as soon as its container runs.
        stream.put({"type": "ADDED", "object": pod("new", None, "101")})
        stream.put({"type": "MODIFIED", "object": pod("new", B, "102")})
        wait_for(lambda: named(index, B) == "new", what="the new pod's container")
        # Its container restarts with a new id: the old id is forgotten.
        stream.put({"type": "MODIFIED", "object": pod("new", B2, "103")})
        wait_for(lambda: named(index, B2) == "new", what="the restarted container")
        assert index.lookup(B) is None
        stream.put({"type": "DELETED", "object": pod("old", A, "104")})
        wait_for(lambda: index.lookup(A) is None, what="the deleted pod to go")

        # The version expired: the server says 410 Gone; the index lists again (the first
        # try fails and is retried after a backoff) and watches from the new list.
        api.lists.put(503)
        api.lists.put(pod_list("200", pod("new", B2, "103"), pod("third", C, "150")))
        stream.put({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
            "reason": "Expired", "message": "too old resource version: 100 (190)"}})
        stream.put(CLOSE)
        second = api.next_watch()
        assert api.last("watch")["resourceVersion"] == "200"
        assert (index.relists_after_expiry, index.errors) == (1, 1)
        assert named(index, C) == "third" and named(index, B2) == "new"

        # The server ends a watch on time: it is resumed from the last version seen.
        second.put({"type": "ADDED", "object": pod("fourth", "d" * 64, "201")})
        wait_for(lambda: named(index, "d" * 64) == "fourth", what="the fourth pod")
        second.put(CLOSE)
        api.next_watch()
        assert api.last("watch")["resourceVersion"] == "201"
        assert index.refreshes == 2  # no list needed for that
    finally:
        index.stop()


def test_node_name_comes_from_the_downward_api(monkeypatch):
    monkeypatch.setenv("NODE_NAME", "worker-7")
    assert PodIndex().node_name == "worker-7"
    assert PodIndex(node_name="worker-8").node_name == "worker-8"
