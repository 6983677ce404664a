"""Run a client as if it talked to the real providers, on loopback.

Each client runs in its own private mount namespace (``unshare --mount``, private
propagation, so nothing leaks to the host) where a hosts file naming the provider hosts
at the test server's loopback address is bind-mounted over ``/etc/hosts``. The client
therefore resolves ``api.openai.com`` itself, sends the real name in SNI and Host, and
verifies the server against the test CA it is told to trust (``SSL_CERT_FILE`` for
OpenSSL/Python/httpx, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, ``NODE_EXTRA_CA_CERTS``).

``unshare`` execs ``sh``, which mounts and then execs the client: the pid the caller sees
(``Popen.pid``) is the client's pid, which is what the monitor must report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

_MOUNT_THEN_EXEC = 'mount --bind "$0" /etc/hosts && exec "$@"'


class ClientNamespace:
    """Where clients run: a hosts file, the CA to trust, and a clean environment."""

    def __init__(self, directory: Path, address: str, hosts: Sequence[str], ca_pem: Path) -> None:
        for tool in ("unshare", "mount"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is missing (util-linux / mount packages)")
        self.address = address
        self.ca_pem = ca_pem
        self.hosts_file = directory / "hosts"
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost", f"{address} {' '.join(hosts)}"]
        self.hosts_file.write_text("\n".join(lines) + "\n")
        self.hosts_file.chmod(0o644)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A clean environment: no proxies, no provider settings from the caller's shell."""
        ca = str(self.ca_pem)
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "SSL_CERT_FILE": ca,
            "REQUESTS_CA_BUNDLE": ca,
            "CURL_CA_BUNDLE": ca,
            "NODE_EXTRA_CA_CERTS": ca,
            "NO_PROXY": "*",
            "no_proxy": "*",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        env.update(extra or {})
        return env

    def argv(self, argv: Sequence[str]) -> list[str]:
        return [
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", _MOUNT_THEN_EXEC, str(self.hosts_file), *argv,
        ]

    def popen(self, argv: Sequence[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        # No controlling terminal, whoever runs the tests (a CI job or a developer's
        # shell): what a service or agent looks like, and what --enforce holds.
        kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(self.argv(argv), env=self.env(env), **kwargs)
