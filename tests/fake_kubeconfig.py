"""A kubeconfig for the official client pointed at a test's local fake API server
(plain HTTP on loopback, a dummy token): shared by the pod-index tests."""

from __future__ import annotations

from pathlib import Path


def write_kubeconfig(path: Path, port: int) -> str:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: "http://127.0.0.1:{port}"}}
contexts:
- name: fake
  context: {{cluster: fake, user: u}}
current-context: fake
users:
- name: u
  user: {{token: not-a-real-token}}
""")
    return str(path)
