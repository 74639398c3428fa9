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
    printed = capsys.readouterr().out
    assert "| base |" in printed and "3 runs, evaluated in" in printed
    update_readme(tmp_path / "new.md", "T\n")
    assert (tmp_path / "new.md").read_text().strip().endswith(END)


def test_named_markers_keep_other_tables(tmp_path: Path) -> None:
    from prefvec.cli import main
    from prefvec.evaluation.table import markers

    s, e = markers("eta")
    readme = tmp_path / "README.md"
    readme.write_text(f"{START}\nmain table\n{END}\nmiddle\n{s}\nold eta\n{e}\n")
    f = tmp_path / "a.json"
    f.write_text(json.dumps(_report("harmless=2", 0.9).to_dict()))
    assert main(["eval", "table", str(f), "--readme", str(readme), "--marker", "eta"]) == 0
    text = readme.read_text()
    assert "main table" in text and "old eta" not in text and "| harmless=2 |" in text
    assert text.index(s) > text.index("middle")


def test_vectors_dir_list_first_match_wins(tmp_path: Path, tiny_base_dir: Path) -> None:
    import torch

    from prefvec.evaluation.targets import ModelHandle
    from prefvec.vector_store import PreferenceVector
    from prefvec.vector_store.format import VectorMetadata

    for folder, name in (("a", "only_a"), ("b", "only_b"), ("b", "both"), ("a", "both")):
        meta = VectorMetadata(
            name=name, kind="dense", base_fingerprint="pvfp1:x", description=folder
        )
        t = {"model.norm.weight": torch.zeros(4)}
        (tmp_path / folder).mkdir(exist_ok=True)
        PreferenceVector(meta, t).save(tmp_path / folder / f"{name}.safetensors")
    h = ModelHandle(str(tiny_base_dir), vectors_dir=f"{tmp_path / 'a'}, {tmp_path / 'b'}")
    assert h.vector("only_b").metadata.name == "only_b"
    assert h.vector("only_a").metadata.name == "only_a"
    assert h.vector("both").metadata.description == "a"


def test_collapse_is_pooled_over_generation_suites_and_tabled() -> None:
    from prefvec.evaluation.runner import EvalReport, collapse_metric
    from prefvec.evaluation.table import markdown_table

    rep = EvalReport(label="x", weights={}, config={})
    assert collapse_metric(rep) is None  # nothing generated: no metric
    rep.items["advbench"] = [{"output": "Hint: Hint: Hint: Hint: Hint:", "collapsed": True},
                             {"output": "I can't help with that.", "collapsed": False}]  # fmt: skip
    rep.items["xstest_safe"] = [{"output": "Use a weed killer.", "collapsed": False},
                                {"output": "ok", "collapsed": False}]  # fmt: skip
    rep.items["truthfulqa_mc1"] = [{"id": "q", "score": 1.0}]  # no replies: not counted
    m = collapse_metric(rep)
    assert m is not None and m.n == 4 and m.value == 0.25 and not m.higher_is_better
    rep.metrics.append(m)
    assert "collapse<br>collapse_rate ↓" in markdown_table([rep])


def test_runs_of_one_setting_in_several_files_merge_into_one_row() -> None:
    import pytest

    from prefvec.errors import ValidationError
    from prefvec.evaluation.runner import EvalReport, Metric
    from prefvec.evaluation.table import merge_by_weights, select_rows

    def m(suite: str, v: float) -> Metric:
        return Metric(suite, "refusal_rate", "harmless", v, v, v, 2, True, "wilson")

    sweep = [
        EvalReport("harmless=0", {"harmless": 0.0}, {}, [m("harmbench", 0.0)],
                   {"harmbench": [{"output": "a b c a b c a b c", "collapsed": True}]}),
        EvalReport("harmless=1", {"harmless": 1.0}, {}, [m("harmbench", 0.6)],
                   {"harmbench": [{"output": "no", "collapsed": False}]}),
    ]  # fmt: skip
    grid = [
        EvalReport("helpful=0,harmless=1", {"helpful": 0.0, "harmless": 1.0}, {},
                   [m("harmbench", 0.9), m("jbb_benign", 0.2)],
                   {"jbb_benign": [{"output": "fine", "collapsed": False}]}),
        EvalReport("base", {}, {}, [m("jbb_benign", 0.0)], {}),
    ]  # fmt: skip
    rows = merge_by_weights(sweep + grid)
    assert [r.label for r in rows] == ["base", "harmless=1"]
    one = rows[1]
    assert one.metric("harmbench").value == 0.6  # the first measurement is kept
    assert one.metric("jbb_benign").value == 0.2
    assert one.metric("collapse").n == 2  # pooled again over both files' replies
    assert [r.label for r in select_rows(rows, ["harmless=1", "base"])] == ["harmless=1", "base"]
    with pytest.raises(ValidationError, match="truthful=1"):
        select_rows(rows, ["truthful=1"])


def test_category_table_counts_refusals_per_category() -> None:
    from prefvec.evaluation.runner import EvalReport
    from prefvec.evaluation.table import category_table

    cats = {"a": ("standard", "cyber"), "b": ("contextual", "cyber"), "c": ("standard", "misinfo")}
    recs = [{"id": "a", "refusal": 1.0}, {"id": "b", "refusal": 0.0}, {"id": "c", "refusal": 1.0}]
    r = EvalReport("harmless=1", {"harmless": 1.0}, {}, items={"harmbench": recs})
    lines = category_table([r], "harmbench", cats).splitlines()
    assert lines[0] == "| run | contextual | standard | cyber | misinfo |"
    assert lines[2] == "| harmless=1 | 0/1 | 2/2 | 1/2 | 1/1 |"
