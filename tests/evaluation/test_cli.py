"""`prefvec eval run / grid` end to end on the tiny model (JSON, CSV, PNG written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefvec.cli import main


def test_eval_run_and_grid(srv_base_dir: Path, store_dir: Path, tmp_path: Path) -> None:
    common = ["--base", str(srv_base_dir), "--store", str(store_dir), "--limit", "2",
              "--no-progress", "--suites", "hhh_helpful,truthfulqa_mc1"]  # fmt: skip
    assert main(["eval", "run", *common, "--weights", "helpful=0.5", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["weights"] == {"helpful": 0.5} and len(report["metrics"]) == 2
    assert (tmp_path / "eval.csv").read_text().startswith("label,weights,suite,metric")

    out = tmp_path / "grid"
    args = ["eval", "grid", *common, "--points", "base;helpful=1", "--out", str(out)]
    if pytest.importorskip("matplotlib", reason="plot extra") is not None:
        args += ["--x", "hhh_helpful", "--y", "truthfulqa_mc1"]
    assert main(args) == 0
    grid = json.loads((out / "grid.json").read_text())
    assert [g["label"] for g in grid] == ["base", "helpful=1"]
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    # a second process on another point into the same folder: grid.json gathers all three
    assert sorted(p.name.split("~")[0] for p in (out / "points").glob("*.json")) == [
        "base",
        "helpful=1",
    ]
    assert main(["eval", "grid", *common, "--points", "helpful=-1", "--out", str(out)]) == 0
    grid = json.loads((out / "grid.json").read_text())
    assert [g["label"] for g in grid] == ["helpful=-1", "base", "helpful=1"]


def test_eval_bad_suite_is_a_clean_error(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["eval", "run", "--suites", "nope", "--base", "/nonexistent"]) == 2
    assert "error" in capsys.readouterr().err
