"""Pods from a real HTTP API server speaking the Kubernetes pod-list shape, through the
official client (only the server is a stand-in: there is no cluster here)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from fake_kubeconfig import write_kubeconfig

from busted.config import MonitorConfig
from busted.kube import PodIndex
from busted.workers.identity_worker import IdentityStage

CID = "a" * 64


def _pod(name, ns, cid, owner=None, template_hash=None):
    meta = {"name": name, "namespace": ns, "labels": {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                    "uid": "u", "controller": True}]
    if template_hash:
        meta["labels"]["pod-template-hash"] = template_hash
    return {"metadata": meta, "spec": {"serviceAccountName": "agent-sa", "containers": []},
            "status": {"containerStatuses": [{"name": "c", "containerID": f"containerd://{cid}",
                                              "image": "i", "imageID": "", "ready": True,
                                              "restartCount": 0}]}}


@pytest.fixture
def api_server(tmp_path):
    seen = []

    class Api(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            body = json.dumps({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
                _pod("summarizer-7d9f8b6c5d-x2x9z", "agents", CID,
                     owner=("ReplicaSet", "summarizer-7d9f8b6c5d"), template_hash="7d9f8b6c5d"),
                _pod("indexer-0", "agents", "b" * 64, owner=("StatefulSet", "indexer")),
            ]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.server_port)
    yield kubeconfig, seen
    server.shutdown()


def test_pods_on_this_node_are_indexed_by_container(api_server):
    kubeconfig, seen = api_server
    index = PodIndex(kubeconfig, node_name="node-1")
    index.start()
    try:
        for _ in range(200):
            if index.refreshes:
                break
            threading.Event().wait(0.02)
        info = index.lookup(CID)
        assert (info.name, info.namespace, info.service_account, info.workload) == \
            ("summarizer-7d9f8b6c5d-x2x9z", "agents", "agent-sa", "summarizer")
        assert index.lookup(CID[:12]).name == info.name  # short ids match too
        assert index.lookup("b" * 64).workload == "indexer"
        assert "fieldSelector=spec.nodeName%3Dnode-1" in seen[0]
    finally:
        index.stop()


def test_identity_names_the_workload_for_every_replica(api_server):
    kubeconfig, _ = api_server
    stage = IdentityStage(MonitorConfig(kubeconfig=kubeconfig, node_name="node-1"))
    stage.setup()
    try:
        for _ in range(200):
            if stage.pods.refreshes:
                break
            threading.Event().wait(0.02)
        event = stage.process([{"content_class": "LLM_REQUEST", "pid": 9, "uid": 0, "container_id": CID,
                                "process_name": "python3", "agent_sdk": "openai-python",
                                "llm_provider": "OpenAI"}])[0]
    finally:
        stage.close()
    assert event["pod_name"] == "summarizer-7d9f8b6c5d-x2x9z"
    assert event["pod_namespace"] == "agents" and event["pod_service_account"] == "agent-sa"
    assert event["pod_workload"] == "summarizer"  # the Deployment, not its ReplicaSet
    assert "(pod agents/summarizer-7d9f8b6c5d-x2x9z)" in event["identity_narrative"]
    assert event["identity_confidence"] == 1.0
