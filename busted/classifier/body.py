"""Body decoding for the classifier: undo Content-Encoding (gzip, deflate, and brotli /
zstd when their modules happen to be installed) with a cap on the output, so a
compression bomb cannot blow up the classify worker, and tolerate streams cut short
(a truncated capture still yields the bytes that were decodable).
"""

from __future__ import annotations

import zlib

MAX_DECODED = 1024 * 1024


def decode_content(body: bytes, encoding: str | None, limit: int = MAX_DECODED) -> bytes:
    """Return ``body`` with its content-encoding undone (best effort, never raises)."""
    if not body or not encoding:
        return body
    try:
        for coding in reversed([c.strip().lower() for c in encoding.split(",") if c.strip()]):
            body = _undo(body, coding, limit)
    except Exception:  # a corrupt or unsupported stream: keep what we have
        return body
    return body


def _undo(body: bytes, coding: str, limit: int) -> bytes:
    if coding in ("gzip", "x-gzip"):
        return _inflate(body, 16 + zlib.MAX_WBITS, limit)
    if coding == "deflate":
        # RFC says zlib-wrapped; some servers send raw deflate.
        try:
            return _inflate(body, zlib.MAX_WBITS, limit)
        except zlib.error:
            return _inflate(body, -zlib.MAX_WBITS, limit)
    if coding == "br":
        try:
            import brotli  # type: ignore[import-not-found]
        except ImportError:
            return body
        return brotli.decompress(body)[:limit]
    if coding == "zstd":
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            return body
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)[:limit]
    return body  # identity or unknown


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    decomp = zlib.decompressobj(wbits)
    out = decomp.decompress(body, limit)
    # Concatenated gzip members (rare, but legal): keep going while there is room.
    while decomp.unused_data and len(out) < limit and wbits > 16:
        rest = decomp.unused_data
        decomp = zlib.decompressobj(wbits)
        out += decomp.decompress(rest, limit - len(out))
    return out


def to_text(data: bytes, limit: int = MAX_DECODED) -> str:
    """Bytes as text for display and policies: UTF-8, invalid bytes replaced."""
    if len(data) > limit:
        data = data[:limit]
    return data.decode("utf-8", "replace")
