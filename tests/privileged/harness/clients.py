"""The real clients, run in the client namespace: Python ``ssl``, httpx, the openai and
anthropic SDKs, curl, node, a Python DNS client and a plain-HTTP Ollama client.

Each call runs one client process to completion and returns a :class:`ClientResult`
with the pid and comm the monitor must report for it (Python and node clients print their
own; for curl the exec chain keeps ``Popen.pid``). A failed exchange raises
AssertionError carrying the client's stderr, so a broken harness is told apart from a
monitor that saw nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .namespace import ClientNamespace

SCRIPTS = Path(__file__).resolve().parent / "client_scripts"
PYCLIENT = SCRIPTS / "pyclient.py"
NODE_CLIENT = SCRIPTS / "node_client.js"
API_KEY = "sk-test-SECRET-a1b2c3d4e5f6a7b8c9d0"  # the key every client sends (see pyclient.py)


@dataclass
class ClientResult:
    argv: list[str]
    pid: int
    returncode: int
    stdout: str
    stderr: str
    result: dict = field(default_factory=dict)  # the client's JSON line

    @property
    def comm(self) -> str:
        return self.result.get("comm") or Path(self.argv[0]).name[:15]

    def answer(self) -> str:
        return self.result.get("answer") or self.result.get("body") or ""


class Clients:
    """Runs clients in ``namespace`` with ``python`` (the venv's, which has the SDKs)."""

    def __init__(self, namespace: ClientNamespace, python: str = sys.executable) -> None:
        self.ns = namespace
        self.python = python

    def run(self, argv: list[str], timeout: float = 60, env: dict[str, str] | None = None,
            check: bool = True) -> ClientResult:
        proc = self.ns.popen(argv, env=env, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"client timed out after {timeout:.0f}s: {argv}\n{err[-2000:]}") from None
        result: dict = {}
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                try:
                    result = json.loads(line)
                    break
                except ValueError:
                    pass
        res = ClientResult(list(argv), proc.pid, proc.returncode, out, err, result)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"client failed (exit {proc.returncode}): {' '.join(argv)}\n"
                f"stdout: {out[-1500:]}\nstderr: {err[-3000:]}"
            )
        if result.get("pid") not in (None, proc.pid):
            raise AssertionError(f"client pid {result['pid']} is not the spawned pid {proc.pid}: "
                                 "the namespace wrapper forked instead of exec'ing")
        return res

    # --- Python (OpenSSL through the ssl module: SSL_write_ex / SSL_read_ex) ---------
    def py(self, *args: str, **kwargs) -> ClientResult:
        return self.run([self.python, str(PYCLIENT), *args], **kwargs)

    def raw(self, url: str, body: bytes = b"", split: int = 1, headers: tuple[str, ...] = (),
            body_dir: Path | None = None, delay: float = 0.0, repeat: int = 1, method: str = "",
            **kwargs) -> ClientResult:
        args = [url, "--split", str(split), "--delay", str(delay), "--repeat", str(repeat),
                *_header_args(headers)]
        if method:
            args += ["--method", method]
        if body:
            args += ["--body-file", str(_body_file(body, body_dir))]
        return self.py("raw", *args, **kwargs)

    def httpx(self, url: str, body: bytes = b"", headers: tuple[str, ...] = (),
              body_dir: Path | None = None, **kwargs) -> ClientResult:
        args = [url, *_header_args(headers)]
        if body:
            args += ["--body-file", str(_body_file(body, body_dir))]
        return self.py("httpx", *args, **kwargs)

    def openai_argv(self, prompt: str, model: str = "gpt-4o-mini", stream: bool = False) -> list[str]:
        """The command line of the openai SDK client (for callers that start it themselves)."""
        return [self.python, str(PYCLIENT), "openai", "--model", model, "--prompt", prompt,
                *(["--stream"] if stream else [])]

    def openai(self, prompt: str, model: str = "gpt-4o-mini", stream: bool = False,
               **kwargs) -> ClientResult:
        return self.run(self.openai_argv(prompt, model, stream), **kwargs)

    def anthropic(self, prompt: str, model: str = "claude-3-5-haiku-latest", stream: bool = False,
                  **kwargs) -> ClientResult:
        return self.py("anthropic", "--model", model, "--prompt", prompt,
                       *(["--stream"] if stream else []), **kwargs)

    def download(self, url: str, **kwargs) -> ClientResult:
        return self.py("download", url, **kwargs)

    def dns(self, name: str, server: str, port: int = 53, **kwargs) -> ClientResult:
        return self.py("dns", name, "--server", server, "--port", str(port), **kwargs)

    def ollama(self, url: str, prompt: str, model: str = "llama3.2", stream: bool = True,
               **kwargs) -> ClientResult:
        return self.py("ollama", url, "--model", model, "--prompt", prompt,
                       *([] if stream else ["--no-stream"]), **kwargs)

    # --- curl (libcurl + OpenSSL: SSL_write / SSL_read) -------------------------------
    def curl(self, url: str, body: bytes = b"", headers: tuple[str, ...] = (),
             body_dir: Path | None = None, **kwargs) -> ClientResult:
        curl = shutil.which("curl")
        if curl is None:
            raise AssertionError("curl is missing: apt-get install -y curl")
        argv = [curl, "-sS", "--fail-with-body", "--http1.1", "--cacert", str(self.ns.ca_pem),
                "--max-time", "30"]
        for header in headers:
            argv += ["-H", header]
        if body:
            argv += ["--data-binary", f"@{_body_file(body, body_dir)}"]
        res = self.run([*argv, url], **kwargs)
        res.result = {"comm": "curl", "body": res.stdout}
        return res

    # --- node (OpenSSL embedded in the executable) -------------------------------------
    def node(self, url: str, body: bytes = b"", pieces: int = 1, headers: tuple[str, ...] = (),
             body_dir: Path | None = None, delay: float = 0.0, executable: str | None = None,
             **kwargs) -> ClientResult:
        node = executable or shutil.which("node") or shutil.which("nodejs")
        if node is None:
            raise AssertionError("node is missing: install nodejs (deploy/setup-host.sh)")
        args = [url, "--pieces", str(pieces), "--delay-ms", str(int(delay * 1000)),
                *_header_args(headers)]
        if body:
            args += ["--body-file", str(_body_file(body, body_dir))]
        return self.run([node, str(NODE_CLIENT), *args], **kwargs)


def _header_args(headers: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for header in headers:
        out += ["--header", header]
    return out


def _body_file(body: bytes, directory: Path | None) -> Path:
    import hashlib
    import tempfile

    directory = directory or Path(tempfile.gettempdir())
    path = directory / f"body-{hashlib.sha1(body).hexdigest()[:16]}.bin"
    if not path.exists():
        path.write_bytes(body)
        path.chmod(0o644)
    return path
