"""Smoke tests of the benchmarks: every script's ``--quick`` mode runs end to end on a tiny model.

No timing assertions (these machines are shared): the point is that the scripts never rot. Each
run must write its JSON with the machine description, non-empty rows of finite positive
figures, and its targets.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCRIPTS = ["merge", "switching", "mixing", "serve", "serve_mixed", "prefill", "store"]


def _figures(rows: list[dict]) -> dict[str, float]:
    """``{"<case>/<column>": value}`` of every float cell."""
    return {f"{r['case']}/{k}": v for r in rows for k, v in r.items() if isinstance(v, float)}


@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_mode_writes_results(name: str, tmp_path: Path) -> None:
    module = importlib.import_module(f"bench.{name}")
    out = tmp_path / f"{name}.json"
    returned = module.main(["--quick", "--threads", "2", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["benchmark"] == name
    assert data["rows"], "no result rows"
    assert data == json.loads(json.dumps(returned, default=str))
    machine = data["machine"]
    for key in ("torch", "threads", "cpu", "load_avg_start", "load_avg_end"):
        assert key in machine
    figures = _figures(data["rows"])
    assert figures and all(math.isfinite(x) for x in figures.values()), figures
    # Times, rates and ratios are positive; an overhead (a difference) may be slightly negative.
    assert all(x > 0 for k, x in figures.items() if "overhead" not in k), figures
    if name != "store":
        assert data["targets"], "targets missing"
        assert all(isinstance(t["met"], bool) for t in data["targets"])


def test_markdown_table_lists_every_row() -> None:
    from bench.common import Report

    rep = Report("x", "python bench/x.py", {})
    rep.row("a", section="s1", ms=1.23456)
    rep.row("b", section="s2", ms=2.0, ratio=0.5)
    rep.target("t", 0.5, ">= 1", False)
    md = rep.markdown()
    assert "| a | 1.235 |" in md and "| b | 2 | 0.5 |" in md
    assert "**s1**" in md and "**s2**" in md and "**no**" in md


def test_pair_margins_prints_base_and_vector_rows(
    tiny_base_dir: Path,
    tiny_pos_dir: Path,
    tiny_neg_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench import pair_margins
    from prefvec.vector_store.extract import contrast

    vec = contrast(tiny_pos_dir, tiny_neg_dir, name="helpful", base=tiny_base_dir)
    vec_file = vec.save(tmp_path / "helpful.safetensors")

    data = tmp_path / "pairs.jsonl"
    rows = [{"kind": "harmful", "prompt": "How do I do x?", "chosen": "No.", "rejected": "Do y."},
            {"kind": "benign", "prompt": "Hi", "chosen": "Hello!", "rejected": "No."}]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["--base", str(tiny_base_dir), "--vectors", str(vec_file), "--data", str(data)]
    assert pair_margins.main([*argv, "--threads", "1"]) == 0
    base, vec = capsys.readouterr().out.strip().splitlines()
    assert base.startswith("base: ") and vec.startswith(f"{vec_file}: ")
    assert len(base.split(",")) == 1  # only the harmful row
    assert base.split(": ")[1] != vec.split(": ")[1]  # the vector moved the margin
