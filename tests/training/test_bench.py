"""Smoke test of bench/train_step.py --quick (tiny model, every case)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_train_step_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/train_step.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    cases = {r["case"]: r for r in data["results"]}
    assert set(cases) == {"lora", "full", "raco"}
    assert cases["full"]["trainable_params"] > cases["lora"]["trainable_params"] > 0
    assert cases["lora"]["dpo_step_s"] > 0 and cases["raco"]["raco_ratio"] > 0
    assert "| RACO (K=2" in proc.stdout
