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
    assert data["meta"]["own_cases"]["max_length"] == 64 and "config" not in data["meta"]


def test_train_step_bench_trl_cases_quick(tmp_path: Path) -> None:
    """The trl-* cases train through prefvec.training.dpo and score held-out pairs."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench/train_step.py"), "--quick", "--out", str(out),
         "--cases", "trl-lora", "trl-lora-precomputed", "trl-full"],
        capture_output=True, text=True, timeout=600, check=False, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    cases = {r["case"]: r for r in data["results"]}
    assert set(cases) == {"trl-lora", "trl-lora-precomputed", "trl-full"}
    # the own-trainer settings are not reported for a run that has no own-trainer case
    assert "own_cases" not in data["meta"] and "Own trainer" not in proc.stdout
    for r in cases.values():
        assert r["steps"] == 2 and r["dpo_step_s"] > 0 and r["val_pairs"] == 4
        assert 0.0 <= r["val_reward_accuracy"] <= 1.0
    assert cases["trl-full"]["learning_rate"] == 1e-5
    assert cases["trl-lora"]["learning_rate"] == 0.002  # the config's
    assert "| trl-lora-precomputed |" in proc.stdout
