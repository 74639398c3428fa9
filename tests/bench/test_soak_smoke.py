"""Smoke test of ``bench/soak.py --quick``: a short soak on a tiny model writes its figures and
meets its targets (no errors, flat memory, the server answers afterwards). Slow: it starts a
server process and keeps 16 streaming clients busy for a few seconds."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.mark.slow
def test_quick_soak(tmp_path: Path) -> None:
    from bench import soak

    out = tmp_path / "soak.json"
    soak.main(["--quick", "--threads", "2", "--duration", "4", "--out", str(out)])
    data = json.loads(out.read_text())
    load = next(r for r in data["rows"] if r["section"] == "load")
    assert load["completed"] > 0 and math.isfinite(load["p95_s"])
    memory = next(r for r in data["rows"] if r["section"] == "memory (MiB)")
    assert memory["start"] > 0 and memory["end"] > 0
    targets = {t["target"]: t["met"] for t in data["targets"]}
    assert targets["errors"] and targets["answers after the soak"], data
