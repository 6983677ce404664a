"""Shared helpers for the classifier unit tests: the fixture corpus and its manifest."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "classifier"


def load_manifest() -> list[dict]:
    return json.loads((CORPUS / "manifest.json").read_text())


def fixture_bytes(name: str) -> bytes:
    return (CORPUS / name).read_bytes()
