"""The peer-made test data in ``tests/conformance/`` (see its README for where each file comes from)."""

from __future__ import annotations

import json
from pathlib import Path

CONFORMANCE = Path(__file__).resolve().parents[1] / "conformance"


def golden_vectors() -> list[dict]:
    """The Hessian 2 values encoded by the reference Java codec: ``{"name", "type", "value", "hex"}``."""
    return json.loads((CONFORMANCE / "hessian2_golden.json").read_text(encoding="utf-8"))
