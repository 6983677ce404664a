"""``busted classify``: classify captured payload files offline.

Each FILE holds the raw bytes of one capture (what ``SSL_write``/``SSL_read`` or a
plain socket saw); ``-`` reads standard input. One JSON object per file is printed on
its own line, with the event fields the classify worker would add. The exit status is
0 whenever every input could be read, whatever it contained.
"""

from __future__ import annotations

import json
import sys

import click

from busted.errors import UsageError
from busted.schema import FIELDS


@click.command(
    "classify",
    epilog="""\b
Examples:
  busted classify request.bin
  busted classify --sni api.anthropic.com capture.bin
  busted classify --direction read --dst 127.0.0.1:11434 reply.bin
  cat capture.bin | busted classify -
""",
)
@click.option(
    "--direction",
    type=click.Choice(["write", "read"]),
    default="write",
    show_default=True,
    help="write = bytes the local process sent; read = bytes it received.",
)
@click.option("--sni", metavar="HOST", default=None, help="TLS server name of the connection.")
@click.option("--dst", metavar="IP:PORT", default=None, help="Destination address of the connection.")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
def classify(direction: str, sni: str | None, dst: str | None, files: tuple[str, ...]) -> None:
    """Classify captured payload FILEs (raw bytes; - for stdin), one JSON line each."""
    from busted.classifier import classify as classify_bytes

    if dst is not None:
        _check_dst(dst)
    inputs = [(name, _read(name)) for name in files]  # read all first: a bad name fails early
    for _name, data in inputs:
        fields: dict = {"direction": direction, "bytes": len(data)}
        if sni:
            fields["sni"] = sni
        if dst:
            ip, _, port = dst.rpartition(":")
            fields["dst_ip"] = ip.strip("[]")
            fields["dst_port"] = int(port)
        fields.update(classify_bytes(data, direction=direction, sni=sni, dst=dst))
        # Schema order (content_class before the details, tls_payload last) reads best.
        ordered = {name: fields[name] for name in FIELDS if name in fields}
        ordered.update(fields)
        sys.stdout.write(json.dumps(ordered, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _check_dst(dst: str) -> None:
    ip, sep, port = dst.rpartition(":")
    if not sep or not ip or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise UsageError(f"--dst {dst!r} is not IP:PORT", "For example: --dst 127.0.0.1:11434")


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        with open(name, "rb") as handle:
            return handle.read()
    except FileNotFoundError as exc:
        raise UsageError(
            f"no such file: {name}", "Give the path of a file holding one capture, or - for stdin."
        ) from exc
    except IsADirectoryError as exc:
        raise UsageError(f"{name} is a directory, not a capture file") from exc
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from exc
