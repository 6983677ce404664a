"""The real OpenAI Codex CLI, run as a user would: ``codex exec --skip-git-repo-check PROMPT``.

The binaries are the pinned releases ``make setup`` installs (deploy/agents.txt) under
/var/cache/busted/agents/codex-VERSION: the static musl build that ``@openai/codex``'s
``bin/codex.js`` launches. Each run gets a fresh ``HOME``/``CODEX_HOME`` (no login, no
history), an API key in ``OPENAI_API_KEY``, and runs in the test namespace (the real
host names resolve to the fake API; ``SSL_CERT_FILE`` makes rustls trust the test CA).

By default Codex opens a WebSocket to ``wss://api.openai.com/v1/responses``;
``https=True`` points it at a provider entry with ``supports_websockets = false``, so the
same turn goes as ``POST /v1/responses`` answered with SSE.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .namespace import ClientNamespace

VERSIONS = ("0.148.0", "0.171.0")
AGENTS = Path("/var/cache/busted/agents")
_HTTPS_ONLY = """model_provider = "openai-https"

[model_providers.openai-https]
name = "OpenAI over HTTPS"
base_url = "https://api.openai.com/v1"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
supports_websockets = false
"""


def binary(version: str) -> Path:
    return AGENTS / f"codex-{version}/package/vendor/x86_64-unknown-linux-musl/bin/codex"


def missing(version: str) -> str | None:
    """Why this Codex cannot run here, or None."""
    path = binary(version)
    if not path.is_file():
        return (f"Codex {version} is not installed at {path}: run `make setup` "
                "(deploy/install-agents.sh installs the pinned agents)")
    return None


@dataclass
class CodexRun:
    pid: int
    returncode: int
    stdout: str
    stderr: str


class Codex:
    """One pinned Codex release, run in the test namespace."""

    def __init__(self, namespace: ClientNamespace, version: str, workdir: Path) -> None:
        self.namespace = namespace
        self.version = version
        self.workdir = workdir

    def start(self, prompt: str, https: bool = False) -> subprocess.Popen:
        home = Path(tempfile.mkdtemp(prefix=f"codex-{self.version}-", dir=self.workdir))
        (home / ".codex").mkdir()
        if https:
            (home / ".codex" / "config.toml").write_text(_HTTPS_ONLY)
        env = {"HOME": str(home), "CODEX_HOME": str(home / ".codex"),
               "OPENAI_API_KEY": "sk-test-codex-FAKEFAKEFAKEFAKE", "RUST_LOG": "error"}
        argv = [str(binary(self.version)), "exec", "--skip-git-repo-check", prompt]
        return self.namespace.popen(argv, env=env, cwd=str(home), stdin=subprocess.DEVNULL)

    def run(self, prompt: str, https: bool = False, timeout: float = 120.0) -> CodexRun:
        proc = self.start(prompt, https)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return CodexRun(proc.pid, proc.returncode, out.decode("utf-8", "replace"),
                        err.decode("utf-8", "replace"))


def request_model(body: bytes) -> str | None:
    """The model a Responses API request (or response.create message) names."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value.get("model") if isinstance(value, dict) else None
