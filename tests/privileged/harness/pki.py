"""A throw-away certificate authority and one server certificate per host name.

Made with the ``openssl`` command line (the same tool an operator would use), in a
temporary directory, valid for two days. The clients are told to trust ``ca_pem``; the
real names (api.openai.com, ...) are in the certificates so SNI, Host and verification
are exactly what they are against the real services.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

OPENAI_HOST = "api.openai.com"
ANTHROPIC_HOST = "api.anthropic.com"
GEMINI_HOST = "generativelanguage.googleapis.com"
# A host whose traffic is not LLM traffic: its connections should get a "not interesting"
# verdict and stop being copied.
BORING_HOST = "downloads.example.com"
HOSTS = (OPENAI_HOST, ANTHROPIC_HOST, BORING_HOST, GEMINI_HOST)


class PKIError(RuntimeError):
    """openssl is missing or refused to make a certificate."""


@dataclass
class TestPKI:
    """Paths of the CA and of each host's certificate and key."""

    __test__ = False  # not a pytest test class despite its name

    directory: Path
    ca_pem: Path
    certs: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # host -> (cert, key)

    def server_context(self, host: str, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
        """A server-side context presenting ``host``'s certificate."""
        cert, key = self.certs[host]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        # HTTP/1.1 only: the clients (curl in particular) would otherwise pick h2, and
        # the fake server speaks HTTP/1.1.
        ctx.set_alpn_protocols(list(alpn))
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_pem))


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise PKIError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def make_pki(directory: Path, hosts: tuple[str, ...] = HOSTS) -> TestPKI:
    """Create a CA and a certificate per host under ``directory``."""
    if shutil.which("openssl") is None:
        raise PKIError("the openssl command is missing: apt-get install -y openssl")
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=Busted Test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=directory,
    )
    pki = TestPKI(directory=directory, ca_pem=directory / "ca.pem")
    for host in hosts:
        ext = directory / f"{host}.ext"
        ext.write_text(
            f"subjectAltName=DNS:{host}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
        )
        _openssl(
            "req", *ec, "-keyout", f"{host}.key", "-out", f"{host}.csr", "-subj", f"/CN={host}",
            cwd=directory,
        )
        _openssl(
            "x509", "-req", "-in", f"{host}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{host}.pem", "-days", "2", "-extfile", ext.name,
            cwd=directory,
        )
        pki.certs[host] = (directory / f"{host}.pem", directory / f"{host}.key")
    return pki
