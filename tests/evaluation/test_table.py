"""Results table: Markdown from reports, README marker replacement, CLI."""

from __future__ import annotations

import json
from pathlib import Path

from prefvec.evaluation.runner import EvalReport, Metric
from prefvec.evaluation.table import END, START, markdown_table, update_readme


def _report(label: str, adv: float) -> EvalReport:
    return EvalReport(label, {"harmless": 1.0}, {}, metrics=[
        Metric("advbench", "refusal_rate", "harmless", adv, adv - 0.05, adv + 0.05, 20, True,
               "wilson"),
        Metric("hhh_helpful", "accuracy", "helpful", 0.5, 0.3, 0.7, 20, True, "wilson"),
    ])  # fmt: skip


def test_markdown_table() -> None:
    md = markdown_table([_report("base", 0.25), _report("harmless=1", 0.75)])
    lines = md.splitlines()
    assert lines[0].startswith("| run | hhh_helpful") and "advbench<br>refusal_rate ↑" in lines[0]
    assert lines[3] == "| harmless=1 | 0.50 [0.30, 0.70] | 0.75 [0.70, 0.80] |"
    assert lines[-1] == "| *n* | 20 | 20 |"


def test_update_readme_and_cli(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from prefvec.cli import main

    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\nbefore\n{START}\nold\n{END}\nafter\n")
    f = tmp_path / "a.json"
    f.write_text(json.dumps(_report("base", 0.25).to_dict()))
    g = tmp_path / "grid.json"
    g.write_text(json.dumps([_report("h=1", 0.5).to_dict(), _report("h=2", 0.6).to_dict()]))
    assert main(["eval", "table", str(f), str(g), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and text.startswith("# T\n\nbefore\n") and text.endswith("after\n")
    assert "| h=2 | 0.50 [0.30, 0.70] | 0.60 [0.55, 0.65] |" in text
    assert "| base |" in capsys.readouterr().out
    update_readme(tmp_path / "new.md", "T\n")
    assert (tmp_path / "new.md").read_text().strip().endswith(END)
