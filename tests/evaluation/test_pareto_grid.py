"""Pareto front on a hand-made point set; weight grids; a grid run on a tiny model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from prefvec.errors import ValidationError
from prefvec.evaluation.grid import pareto_front, run_grid, weight_grid, write_grid_csv
from prefvec.evaluation.runner import RunContext


def test_pareto_front_hand_made() -> None:
    pts = [(1, 5), (2, 4), (3, 3), (2, 2), (1, 1), (3, 1), (0, 5), (3, 3)]
    # maximise both: (1,5),(2,4),(3,3) and its duplicate are non-dominated;
    # (0,5) is dominated by (1,5)
    assert pareto_front(pts) == [0, 1, 2, 7]
    # maximise x, minimise y: (3,1) dominates everything with x <= 3 and y >= 1 except (1,1) ties y
    assert set(pareto_front(pts, (True, False))) == {5}
    assert set(pareto_front([(0, 0), (1, -1), (-1, 1)])) == {0, 1, 2}


def test_weight_grid_negatives() -> None:
    g = weight_grid(["a", "b"], [-1.0, 0.0, 1.0])
    assert len(g) == 9 and {"a": -1.0, "b": 1.0} in g
    assert len(weight_grid(["a", "b", "c"], [0.0, 1.0])) == 8
    with pytest.raises(ValidationError):
        weight_grid(["a", "b", "c", "d"], [1.0])
    with pytest.raises(ValidationError):
        weight_grid(["a", "a"], [1.0])


def test_run_grid_tiny(handle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = {k: v.clone() for k, v in handle.loaded.model.state_dict().items()}
    ctx = RunContext(limit=4, progress=False)
    reports = run_grid(handle, weight_grid(["helpful"], [-1.0, 0.0, 1.0]),
                       ["hhh_helpful", "hh_rlhf_pairs"], ctx)  # fmt: skip
    assert [r.label for r in reports] == ["helpful=-1", "helpful=0", "helpful=1"]
    # at weight 0 the policy is the reference: every pair ties -> exactly 1/2
    assert reports[1].metric("hh_rlhf_pairs").value == 0.5
    # +1 and -1 flip the sign of every implicit-reward margin: outcomes mirror each other
    plus = [r["outcome"] for r in reports[2].items["hh_rlhf_pairs"]]
    minus = [r["outcome"] for r in reports[0].items["hh_rlhf_pairs"]]
    assert plus != minus
    # merging changed the log-likelihoods, and the base is restored bit-exactly afterwards
    lp = [r.items["hhh_helpful"][0]["logprobs"] for r in reports]
    assert lp[0] != lp[1] != lp[2]
    for k, v in handle.loaded.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with open(write_grid_csv(reports, tmp_path / "g.csv")) as f:
        rows = list(csv.DictReader(f))
    assert rows[2]["w_helpful"] == "1.0" and float(rows[1]["hh_rlhf_pairs"]) == 0.5


def test_plot_pareto(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from prefvec.evaluation.grid import plot_pareto
    from prefvec.evaluation.runner import EvalReport, Metric

    def rep(label: str, x: float, y: float) -> EvalReport:
        a = Metric("advbench", "refusal_rate", "harmless", x, x - 0.1, x + 0.1, 10, True, "wilson")
        b = Metric("xstest_safe", "over_refusal_rate", "helpful", y, y - 0.1, y + 0.1, 10, False,
                   "wilson")  # fmt: skip
        return EvalReport(label, {}, {}, metrics=[a, b])

    reports = [rep("a", 0.2, 0.1), rep("b", 0.5, 0.3), rep("c", 0.4, 0.4), rep("d", 0.9, 0.8)]
    png, front = plot_pareto(reports, "advbench", "xstest_safe", tmp_path / "p.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert front == [0, 1, 3]  # c is dominated by b (less refusal of harm, more over-refusal)

    from prefvec.cli import main

    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps([r.to_dict() for r in [*reports, rep("a-twin", 0.2, 0.1)]]))
    out = tmp_path / "replot.png"
    assert main(["eval", "plot", str(grid), "--x", "advbench", "--y", "xstest_safe",
                 "--out", str(out)]) == 0  # fmt: skip
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_plot_curve_orders_by_weight_and_refuses_missing_suites(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")

    from prefvec.cli import main
    from prefvec.evaluation.grid import plot_curve
    from prefvec.evaluation.runner import EvalReport, Metric

    def rep(eta: float, v: float) -> EvalReport:
        m = Metric("harmbench", "refusal_rate", "harmless", v, v - 0.1, v + 0.1, 10, True, "wilson")
        return EvalReport(f"harmless={eta}", {"harmless": eta} if eta else {}, {}, metrics=[m])

    reports = [rep(1.0, 0.6), rep(0.0, 0.0), rep(-1.0, 0.0)]
    png = plot_curve(reports, "harmless", ["harmbench"], tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValidationError, match="xstest_safe"):
        plot_curve(reports, "harmless", ["harmbench", "xstest_safe"], tmp_path / "x.png")
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps([r.to_dict() for r in reports]))
    out = tmp_path / "cli.png"
    assert main(["eval", "curve", str(grid), "--vector", "harmless", "--suites", "harmbench",
                 "--out", str(out)]) == 0  # fmt: skip
    assert out.read_bytes()[:4] == b"\x89PNG"


def _count_evals(monkeypatch) -> list[str]:  # type: ignore[no-untyped-def]
    """The labels of the grid points run_grid evaluates (rather than reads back), in order."""
    import prefvec.evaluation.grid as grid_mod

    calls: list[str] = []
    real = grid_mod.run_eval

    def counting(target, suites, ctx, label=None):  # type: ignore[no-untyped-def]
        calls.append(label)
        return real(target, suites, ctx, label=label)

    monkeypatch.setattr(grid_mod, "run_eval", counting)
    return calls


def test_run_grid_resumes_from_points(handle, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from prefvec.evaluation.grid import folder_points

    ctx = RunContext(limit=3, progress=False)
    points = tmp_path / "points"
    first = run_grid(handle, [{"helpful": 1.0}], ["hhh_helpful"], ctx, points_dir=points)
    assert len(list(points.glob("helpful=1~*.json"))) == 1 and not list(points.glob("*.tmp"))
    # a second process adds another point to the same folder
    run_grid(handle, [{"helpful": -1.0}], ["hhh_helpful"], ctx, points_dir=points)

    calls = _count_evals(monkeypatch)
    again = run_grid(handle, [{"helpful": 1.0}, {}], ["hhh_helpful"], ctx, points_dir=points)
    assert calls == ["base"]  # helpful=1 was read back, not evaluated again
    assert again[0].to_dict() == first[0].to_dict()
    # other settings (here the item count) are not reused
    run_grid(handle, [{"helpful": 1.0}], ["hhh_helpful"], RunContext(limit=2, progress=False),
             points_dir=points)  # fmt: skip
    assert calls == ["base", "helpful=1"]
    # the folder's files gather every point made with the same settings, this run's first
    merged = folder_points(points, again, handle, ctx, ["hhh_helpful"], "linear")
    # (the limit-2 run wrote a file of its own beside the limit-3 one, which still matches)
    assert [r.label for r in merged] == ["helpful=1", "base", "helpful=-1"]
    merged = folder_points(points, again[1:], handle, RunContext(limit=2, progress=False),
                           ["hhh_helpful"], "linear")  # fmt: skip
    assert [r.label for r in merged] == ["base", "helpful=1"]
    # a second file of one point (a name from before files were keyed by settings) adds nothing
    (legacy,) = points.glob("helpful=-1~*.json")
    (points / "helpful=-1.json").write_text(legacy.read_text())
    merged = folder_points(points, again, handle, ctx, ["hhh_helpful"], "linear")
    assert [r.label for r in merged] == ["helpful=1", "base", "helpful=-1"]


def test_grid_points_key_on_non_zero_weights(handle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ctx = RunContext(limit=2, progress=False)
    points = tmp_path / "points"
    (first,) = run_grid(handle, [{"helpful": 0.0}], ["hhh_helpful"], ctx, points_dir=points)
    assert [p.name.split("~")[0] for p in points.glob("*.json")] == ["base"]
    (again,) = run_grid(handle, [{}], ["hhh_helpful"], ctx, points_dir=points)
    assert again.wall_s == first.wall_s  # read back, not evaluated again ...
    assert again.label == "base" and again.weights == {}  # ... under this run's label
    (mixed,) = run_grid(handle, [{"helpful": 1.0, "concise": 0.5}], ["hhh_helpful"], ctx,
                        points_dir=points)  # fmt: skip
    (swapped,) = run_grid(handle, [{"concise": 0.5, "helpful": 1.0}], ["hhh_helpful"], ctx,
                          points_dir=points)  # fmt: skip
    assert sorted(p.name.split("~")[0] for p in points.glob("*.json")) == [
        "base",
        "concise=0.5,helpful=1",
    ]
    assert swapped.label == "concise=0.5,helpful=1" and swapped.wall_s == mixed.wall_s


def test_grid_json_seeds_points_on_a_fresh_clone(handle, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A committed grid.json (no points folder, as on a fresh clone) is reused where its settings
    still match, and evaluated again where they do not."""

    from prefvec.evaluation.grid import seed_points, write_grid_json

    ctx = RunContext(limit=2, progress=False)
    made = run_grid(handle, [{"helpful": 1.0}, {}], ["hhh_helpful"], ctx)  # no points folder
    grid_json = write_grid_json(made, tmp_path / "grid.json")
    points = tmp_path / "points"
    assert seed_points(grid_json, points) == 2
    assert seed_points(grid_json, points) == 0  # files already there are left alone
    assert seed_points(tmp_path / "missing.json", points) == 0
    (tmp_path / "bad.json").write_text("{not json")
    assert seed_points(tmp_path / "bad.json", tmp_path / "p2") == 0

    calls = _count_evals(monkeypatch)
    again = run_grid(handle, [{"helpful": 1.0}, {}], ["hhh_helpful"], ctx, points_dir=points)
    assert calls == []
    assert [r.to_dict() for r in again] == [r.to_dict() for r in made]
    # a grid.json made with other settings is seeded but not trusted
    run_grid(handle, [{"helpful": 1.0}], ["hhh_helpful"], RunContext(limit=1, progress=False),
             points_dir=points)  # fmt: skip
    assert calls == ["helpful=1"]
    limits = [json.loads(f.read_text())["config"]["point"]["limit"]
              for f in points.glob("helpful=1~*.json")]  # fmt: skip
    assert sorted(limits) == [1, 2]  # a run with other settings keeps the other file


def test_keep_earlier_keeps_other_runs_points_while_their_vectors_match(
    handle, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A run on one point keeps the earlier grid.json's other points, drops those made with a
    vector file that has changed, and keeps those from before hashes were recorded."""
    from prefvec.evaluation.grid import keep_earlier, write_grid_json

    ctx = RunContext(limit=2, progress=False)
    points = tmp_path / "points"
    made = run_grid(handle, [{"helpful": 1.0}, {}, {"helpful": 0.5}, {"helpful": -1.0}],
                    ["hhh_helpful"], ctx, points_dir=points)  # fmt: skip
    made[2].config["point"]["vectors"]["helpful"] = "0" * 64  # made with another helpful file
    del made[3].config["point"]  # a point from before settings were recorded
    grid_json = write_grid_json(made, tmp_path / "grid.json")
    (again,) = run_grid(handle, [{}], ["hhh_helpful"], RunContext(limit=1, progress=False))
    kept = keep_earlier(grid_json, [again], handle)
    assert [r.label for r in kept] == ["base", "helpful=1", "helpful=-1"]
    assert kept[0] is again  # this run's base replaces the earlier one
    assert keep_earlier(tmp_path / "missing.json", [again], handle) == [again]
    (tmp_path / "bad.json").write_text("[{")
    assert keep_earlier(tmp_path / "bad.json", [again], handle) == [again]


def test_pair_suite_scores_the_base_once(handle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """At the base point the policy is the reference: its pairs are scored once, the reward
    margin is exactly 0 (every pair a tie, accuracy ½), and the cache serves later points."""
    from prefvec.evaluation.targets import InProcessTarget

    scored: list[int] = []
    real = InProcessTarget.logprobs

    def counting(self, requests):  # type: ignore[no-untyped-def]
        scored.append(len(requests))
        return real(self, requests)

    monkeypatch.setattr(InProcessTarget, "logprobs", counting)
    ctx = RunContext(limit=3, progress=False)
    base, plus = run_grid(handle, [{}, {"helpful": 1.0}], ["hh_rlhf_pairs"], ctx)
    n = base.metrics[0].n
    assert sum(scored) == 2 * n + 2 * n  # base once (as its own reference), then helpful=1
    assert base.metrics[0].value == 0.5
    assert plus.metrics[0].value != 0.5 or any(
        r["policy"] != r["reference"] for r in plus.items["hh_rlhf_pairs"]
    )


def test_points_of_other_suites_at_the_same_weights_are_kept(
    handle, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Two runs on one point with different suites into one folder: the point file and the
    grid.json hold both suites (the second run used to overwrite the first's file), and a run
    on either suite alone reads the point back."""
    from prefvec.evaluation.grid import keep_earlier, write_grid_json

    ctx = RunContext(limit=2, progress=False)
    points = tmp_path / "points"
    (mc,) = run_grid(handle, [{"helpful": 1.0}], ["hhh_helpful"], ctx, points_dir=points)
    mc_value = mc.metric("hhh_helpful").value
    grid_json = write_grid_json([mc], tmp_path / "grid.json")
    (both,) = run_grid(handle, [{"helpful": 1.0}], ["hh_rlhf_pairs"], ctx, points_dir=points)
    assert [m.suite for m in both.metrics] == ["hh_rlhf_pairs", "hhh_helpful"]
    assert both.metric("hhh_helpful").value == mc_value and set(both.items) == {
        "hh_rlhf_pairs", "hhh_helpful"}  # fmt: skip
    (saved_file,) = points.glob("helpful=1~*.json")
    saved = json.loads(saved_file.read_text())
    assert saved["config"]["point"]["suites"] == ["hh_rlhf_pairs", "hhh_helpful"]
    calls = _count_evals(monkeypatch)
    for suites in (["hhh_helpful"], ["hh_rlhf_pairs"], ["hhh_helpful", "hh_rlhf_pairs"]):
        run_grid(handle, [{"helpful": 1.0}], suites, ctx, points_dir=points)
    assert calls == []
    # other settings are not merged: a limit-1 run on hh_rlhf_pairs stands alone
    (alone,) = run_grid(handle, [{"helpful": 1.0}], ["hh_rlhf_pairs"],
                        RunContext(limit=1, progress=False), points_dir=points)  # fmt: skip
    assert calls == ["helpful=1"] and [m.suite for m in alone.metrics] == ["hh_rlhf_pairs"]
    assert len(list(points.glob("helpful=1~*.json"))) == 2  # neither file overwrote the other
    # ... and in grid.json the earlier point stays beside it for the suite it alone has
    from prefvec.evaluation.table import select_rows

    kept = keep_earlier(grid_json, [alone], handle)
    assert [r.config["point"]["limit"] for r in kept] == [1, 2]
    assert select_rows(kept, ["helpful=1"]) == [alone]
    # an earlier point with other settings and no suite of its own is replaced
    assert keep_earlier(grid_json, [mc_limit_1 := run_grid(handle, [{"helpful": 1.0}],
                        ["hhh_helpful"], RunContext(limit=1, progress=False))[0]], handle) == [
        mc_limit_1]  # fmt: skip
    # without a points folder, the earlier grid.json's other suite joins the same point
    (fresh,) = run_grid(handle, [{"helpful": 1.0}], ["hh_rlhf_pairs"], ctx)
    (kept,) = keep_earlier(grid_json, [fresh], handle)
    assert kept is fresh and kept.metric("hhh_helpful").value == mc_value


def test_joined_suites_pool_the_collapse_rate_again() -> None:
    from prefvec.evaluation.grid import _with_other_suites
    from prefvec.evaluation.runner import EvalReport, Metric

    def report(suite: str, flags: list[bool]) -> EvalReport:
        point = {"suites": [suite], "limit": 2, "weights": {"h": 1.0}}
        share = sum(flags) / len(flags)
        return EvalReport(
            label="h=1", weights={"h": 1.0}, config={"point": point}, wall_s=1.0,
            metrics=[Metric(suite, "refusal_rate", "harmless", 0.5, 0, 1, len(flags), True, "w"),
                     Metric("collapse", "collapse_rate", "fluency", share, 0, 1, len(flags),
                            False, "wilson")],
            items={suite: [{"id": str(i), "collapsed": f} for i, f in enumerate(flags)]},
        )  # fmt: skip

    joined = _with_other_suites(report("a", [True, False]), report("b", [False, False]))
    collapse = joined.metric("collapse")
    assert (collapse.value, collapse.n) == (0.25, 4)
    assert [m.suite for m in joined.metrics] == ["a", "b", "collapse"] and joined.wall_s == 2.0
    other = report("b", [True, True])
    other.config["point"]["limit"] = 3  # other settings: not joined
    assert [m.suite for m in _with_other_suites(report("a", [False]), other).metrics] == [
        "a", "collapse"]  # fmt: skip


def test_parse_points_one_dict_per_point() -> None:
    """`--points` (eval grid, bench/decline_probe.py): `base` is no vector, empty parts are
    skipped, a bad weight or no point at all is a ValidationError naming the flag."""
    from prefvec.evaluation.grid import parse_points

    assert parse_points("base; harmless=1 ;helpful=1,harmless=0.5;") == [
        {},
        {"harmless": 1.0},
        {"helpful": 1.0, "harmless": 0.5},
    ]
    with pytest.raises(ValidationError, match="`points` names no point"):
        parse_points(" ; ")
    with pytest.raises(ValidationError, match="--points"):
        parse_points("harmless=x")
