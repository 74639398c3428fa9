"""Weight grids over 2-3 vectors, the Pareto front of two metrics, and its plot.

A point ``p`` is dominated when some ``q`` is at least as good on both objectives and strictly
better on one (objectives oriented so that larger is better); the front is the non-dominated set.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefvec.errors import BackendUnavailableError, PrefvecError, ValidationError
from prefvec.evaluation.runner import EvalReport, RunContext, run_eval
from prefvec.evaluation.table import (
    weights_key,
)  # the point key: helpful=0,harmless=1 is harmless=1

logger = logging.getLogger(__name__)


def weight_grid(vectors: Sequence[str], values: Sequence[float]) -> list[dict[str, float]]:
    """Every combination of ``values`` over ``vectors`` (the Cartesian product), in order.

    Raises:
        ValidationError: fewer than 1 or more than 3 vectors, duplicates, or no values.
    """
    if not 1 <= len(vectors) <= 3 or len(set(vectors)) != len(vectors):
        raise ValidationError(
            f"`vectors` must be 1-3 distinct names, got {list(vectors)}", field="vectors"
        )
    if not values:
        raise ValidationError("`values` must not be empty", field="values")
    return [dict(zip(vectors, combo, strict=True))
            for combo in itertools.product(values, repeat=len(vectors))]  # fmt: skip


def parse_points(text: str) -> list[dict[str, float]]:
    """``"base;harmless=1;helpful=1,harmless=1"`` → one weights dict per point (``base``: none).

    Raises:
        ValidationError: a malformed weight, or no point at all.
    """
    from prefvec.weights import parse_weights

    parts = [p.strip() for p in text.split(";") if p.strip()]
    if not parts:
        raise ValidationError(f"`points` names no point, got {text!r}", field="points")
    return [{} if p == "base" else parse_weights(p, "--points") for p in parts]


def pareto_front(
    points: Sequence[tuple[float, float]], maximize: tuple[bool, bool] = (True, True)
) -> list[int]:
    """Indices of the non-dominated points (sorted by the first objective, best last).

    Args:
        points: (x, y) per point.
        maximize: per objective, whether larger is better.
    """
    signs = [1.0 if m else -1.0 for m in maximize]
    pts = [(p[0] * signs[0], p[1] * signs[1]) for p in points]
    front = []
    for i, p in enumerate(pts):
        dominated = any(q[0] >= p[0] and q[1] >= p[1] and (q[0] > p[0] or q[1] > p[1]) for q in pts)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: pts[i][0])


def point_label(weights: dict[str, float]) -> str:
    """``helpful=1,harmless=0.5`` (``base`` when empty): a grid point's label."""
    return ",".join(f"{k}={v:g}" for k, v in weights.items()) or "base"


def _point_file(points_dir: Path, settings: dict[str, Any]) -> Path:
    """``<weights>~<hash of the other settings>.json``: one file per point and settings, so a
    run with other settings (a limit, a reply length, a changed vector) never overwrites it."""
    import hashlib

    label = weights_key(settings.get("weights") or {})
    slug = "".join(c if c.isalnum() or c in "=.,-" else "_" for c in label)
    rest = {k: v for k, v in settings.items() if k != "suites"}
    digest = hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()
    return points_dir / f"{slug}~{digest[:10]}.json"


def run_grid(
    handle: Any,
    grid: Sequence[dict[str, float]],
    suites: Sequence[str],
    ctx: RunContext,
    *,
    method: str = "linear",
    points_dir: str | Path | None = None,
) -> list[EvalReport]:
    """Evaluate ``suites`` at every grid point on one in-process model (re-merged in place);
    reference log-probs of the pair suite are computed once and shared.

    With ``points_dir``, each point's report is written there as soon as it is done, and a point
    whose file already holds the same settings (suites, limit, seed, reply length, method, dtype,
    scored length and the sha256 of every vector it merges) is read back instead of evaluated
    again: a stopped grid resumes, and two processes can share one folder on disjoint points.
    A point file is one per weights and settings (see :func:`_point_file`): a run on other
    suites at the same weights and settings adds its suites to the file (and a run on fewer
    suites reads it back), and a run with other settings writes a file of its own, so nothing
    evaluated is lost.
    """
    reports = []
    pdir = Path(points_dir) if points_dir is not None else None
    for i, weights in enumerate(grid):
        label = point_label(weights)
        settings = point_settings(handle, weights, suites, ctx, method)
        path = _point_file(pdir, settings) if pdir is not None else None
        cached = _read_point(path, settings) if path is not None else None
        if cached is not None:
            logger.info("grid point %d/%d: %s (reusing %s)", i + 1, len(grid), label, path)
            cached.label, cached.weights = label, dict(weights)
            reports.append(cached)
            continue
        logger.info("grid point %d/%d: %s", i + 1, len(grid), label)
        target = handle.target(weights, method=method, label=label)
        report = run_eval(target, suites, ctx, label=label)
        report.config["point"] = settings
        if path is not None:  # read again now: another process may have written it meanwhile
            report = _with_other_suites(report, _read_any(path))
            _write_point(path, report)
        reports.append(report)
    handle.merger.restore()
    return reports


def _same_but_suites(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {k: v for k, v in a.items() if k != "suites"} == {
        k: v for k, v in b.items() if k != "suites"
    }


def _covers(point: dict[str, Any], want: dict[str, Any]) -> bool:
    """Whether a point made with settings ``point`` answers a request for ``want``: the same
    settings, and at least the suites asked for."""
    return _same_but_suites(point, want) and set(want.get("suites", [])) <= set(
        point.get("suites", [])
    )


def _with_other_suites(report: EvalReport, other: EvalReport | None) -> EvalReport:
    """``report`` plus the suites that ``other`` (the same point, made with the same settings
    otherwise) holds and ``report`` lacks (in place); the pooled collapse rate is computed again."""
    from prefvec.evaluation.table import merge_by_weights

    mine, theirs = report.config.get("point") or {}, (other.config.get("point") if other else None)
    if other is None or not theirs or not mine or not _same_but_suites(mine, theirs):
        return report
    extra = [s for s in theirs.get("suites", []) if s not in mine.get("suites", [])]
    if not extra:
        return report
    (joined,) = merge_by_weights([report, other])
    report.metrics, report.items, report.wall_s = joined.metrics, joined.items, joined.wall_s
    report.skipped.update({s: v for s, v in other.skipped.items() if s in extra})
    report.config["point"] = {**mine, "suites": [*mine["suites"], *extra]}
    return report


def point_settings(
    handle: Any, weights: dict[str, float], suites: Sequence[str], ctx: RunContext, method: str
) -> dict[str, Any]:
    """What a grid point's result depends on, besides the code: its key for resuming."""
    return {
        "suites": list(suites), "limit": ctx.limit, "seed": ctx.seed,
        "max_new_tokens": ctx.max_new_tokens, "method": method,
        "dtype": handle.dtype, "max_length": handle.max_length,
        "weights": {k: float(v) for k, v in weights.items() if v != 0},
        "vectors": {k: handle.vector_sha256(k) for k, v in weights.items() if v != 0},
    }  # fmt: skip


def _write_point(path: Path, report: EvalReport) -> None:
    from prefvec.fileio import atomic_write_bytes

    # atomic, through a temporary file of its own: a stopped run never leaves half a point
    # behind, and two runs sharing a folder (`make -j2 results`) never rename each other's file
    atomic_write_bytes(path, json.dumps(report.to_dict(), indent=1, default=str).encode())


def _read_any(path: Path) -> EvalReport | None:
    if not path.is_file():
        return None
    try:
        return EvalReport.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("%s is unreadable (%s): evaluating the point again", path, exc)
        return None


def _read_point(path: Path, settings: dict[str, Any]) -> EvalReport | None:
    report = _read_any(path)
    if report is None:
        return None
    if not _covers(report.config.get("point") or {}, settings):
        logger.info("%s was made with other settings, suites or vectors: evaluating it", path)
        return None
    return report


def seed_points(grid_json: str | Path, points_dir: str | Path) -> int:
    """Copy each point of an earlier ``grid.json`` into ``points_dir`` where that folder has no
    file for it yet, so that a fresh clone reuses the committed results: a seeded point is read
    back only when its settings and vector hashes match (see :func:`run_grid`), else evaluated
    again. Returns how many points were seeded."""
    path, pdir = Path(grid_json), Path(points_dir)
    if not path.is_file():
        return 0
    try:
        reports = [EvalReport.from_dict(d) for d in json.loads(path.read_text())]
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("%s is unreadable (%s): not reusing its points", path, exc)
        return 0
    n = 0
    for report in reports:
        point = report.config.get("point") or {}
        if "weights" not in point:
            continue
        target = _point_file(pdir, point)
        if not target.exists():
            _write_point(target, report)
            n += 1
    return n


def folder_points(
    points_dir: str | Path, reports: Sequence[EvalReport], handle: Any, ctx: RunContext,
    suites: Sequence[str], method: str,
) -> list[EvalReport]:  # fmt: skip
    """``reports``, then every other point in ``points_dir`` made with the same settings and the
    same vector files (points another process added to the folder), ordered by label."""
    seen = {weights_key(r.weights) for r in reports}
    extra = []
    for path in sorted(Path(points_dir).glob("*.json")):
        try:
            report = EvalReport.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError):
            continue
        point = report.config.get("point") or {}
        if "weights" not in point or weights_key(point["weights"]) in seen:
            continue
        try:
            want = point_settings(handle, point["weights"], suites, ctx, method)
        except PrefvecError:  # a vector this folder's point used is gone: not ours to merge
            continue
        if _covers(point, want):
            extra.append(report)
            seen.add(weights_key(point["weights"]))  # one report per point (files of older names)
    return [*reports, *sorted(extra, key=lambda r: r.label)]


def keep_earlier(
    grid_json: str | Path, reports: Sequence[EvalReport], handle: Any
) -> list[EvalReport]:
    """``reports``, then every point of an earlier ``grid.json`` this run did not evaluate, so
    that a run on some points does not drop the others from the file. An earlier point that
    records its vector hashes is kept only while those files are unchanged; one from before
    hashes were recorded is kept as it is (logged). An earlier point at the same weights lends
    this run's report the suites it lacks where the other settings are the same, and stays a
    report of its own (after this run's, which tables read first) where they differ and it holds
    suites this run's report lacks."""
    path = Path(grid_json)
    if not path.is_file():
        return list(reports)
    try:
        earlier = [EvalReport.from_dict(d) for d in json.loads(path.read_text())]
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("%s is unreadable (%s): not keeping its points", path, exc)
        return list(reports)
    by_key = {weights_key(r.weights): r for r in reports}
    kept = []
    for report in earlier:
        mine = by_key.get(weights_key(report.weights))
        if mine is not None:  # the same point
            theirs = report.config.get("point") or {}
            if _same_but_suites(mine.config.get("point") or {}, theirs):
                _with_other_suites(mine, report)  # same settings: one report, its suites joined
                continue
            lacking = {m.suite for m in report.metrics} - {m.suite for m in mine.metrics}
            if not lacking:
                continue
            # other settings: it stays a report of its own for the suites it alone has
            logger.info("keeping %s from %s beside this run's: other settings, suites %s",
                        report.label, path, sorted(lacking))  # fmt: skip
        point = report.config.get("point") or {}
        if "vectors" in point:
            try:
                current = {k: handle.vector_sha256(k) for k in point["vectors"]}
            except PrefvecError:
                current = None
            if current != point["vectors"]:
                logger.info("dropping %s from %s: its vectors changed", report.label, path)
                continue
        else:
            logger.info("keeping %s from %s (made before vector hashes were recorded)",
                        report.label, path)  # fmt: skip
        kept.append(report)
    return [*reports, *kept]


def grid_rows(reports: Sequence[EvalReport]) -> list[dict[str, Any]]:
    """One row per grid point: the weights, then ``suite`` value / ci_low / ci_high columns."""
    rows = []
    for r in reports:
        row: dict[str, Any] = {"label": r.label, **{f"w_{k}": v for k, v in r.weights.items()}}
        for m in r.metrics:
            row[m.suite] = m.value
            row[f"{m.suite}_ci_low"], row[f"{m.suite}_ci_high"] = m.ci_low, m.ci_high
        rows.append(row)
    return rows


def write_grid_csv(reports: Sequence[EvalReport], path: str | Path) -> Path:
    rows = grid_rows(reports)
    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return Path(path)


def write_grid_json(reports: Sequence[EvalReport], path: str | Path) -> Path:
    Path(path).write_text(json.dumps([r.to_dict() for r in reports], indent=1, default=str))
    return Path(path)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise BackendUnavailableError(
            "plots need matplotlib: pip install 'prefvec[plot]'", field="plot"
        ) from exc
    return plt


def plot_curve(
    reports: Sequence[EvalReport], vector: str, suites: Sequence[str], path: str | Path
) -> Path:
    """Control curve: each suite's metric (95% interval as a band) against ``vector``'s weight.

    Reports without a weight for ``vector`` count as weight 0 (the base); one line per suite.
    """
    plt = _pyplot()
    pts = sorted(((float(r.weights.get(vector, 0.0)), r) for r in reports), key=lambda t: t[0])
    missing = [s for s in suites if not all(s in {m.suite for m in r.metrics} for _, r in pts)]
    if not pts or missing:
        raise ValidationError(
            f"`suites` {missing} are not in every report (or there are no reports)", field="suites"
        )
    fig, ax = plt.subplots(figsize=(7.2, 4.2), dpi=120)
    xs = [w for w, _ in pts]
    for s in suites:
        ms = [r.metric(s) for _, r in pts]
        ax.plot(xs, [m.value for m in ms], "-o", ms=4, label=f"{s} {ms[0].metric}")
        ax.fill_between(xs, [m.ci_low for m in ms], [m.ci_high for m in ms], alpha=0.15)
    ax.set_xlabel(f"weight η of {vector!r}")
    ax.set_ylabel("rate (95% interval)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_pareto(
    reports: Sequence[EvalReport], x: str, y: str, path: str | Path
) -> tuple[Path, list[int]]:
    """Scatter every grid point on suites ``x`` and ``y`` with 95% intervals, the front joined.

    Returns:
        The PNG path and the indices of the front. Needs the ``plot`` extra (matplotlib).
    """
    plt = _pyplot()
    mx, my = [r.metric(x) for r in reports], [r.metric(y) for r in reports]
    pts = [(a.value, b.value) for a, b in zip(mx, my, strict=True)]
    front = pareto_front(pts, (mx[0].higher_is_better, my[0].higher_is_better))
    fig, ax = plt.subplots(figsize=(9.6, 5.4), dpi=120)
    for a, b in zip(mx, my, strict=True):
        # clamped: a Wilson bound can sit a rounding error on the wrong side of 0 or 1
        ax.errorbar(a.value, b.value,
                    xerr=[[max(0.0, a.value - a.ci_low)], [max(0.0, a.ci_high - a.value)]],
                    yerr=[[max(0.0, b.value - b.ci_low)], [max(0.0, b.ci_high - b.value)]],
                    fmt="o", ms=4,
                    color="tab:gray", alpha=0.6, lw=0.8)  # fmt: skip
    at: dict[tuple[float, float], list[str]] = {}
    for r, pt in zip(reports, pts, strict=True):
        at.setdefault(pt, []).append(r.label)
    key = []  # distinct points are numbered on the plot; the key beside it names their runs
    for n, ((px, py), labels) in enumerate(at.items(), 1):
        ax.annotate(str(n), (px, py), fontsize=7, xytext=(3, 3), textcoords="offset points")
        key.append(f"{n}: " + "; ".join(labels))
    fig.text(0.70, 0.95, "\n".join(key), fontsize=6.5, va="top", ha="left", wrap=True)
    fig.subplots_adjust(right=0.68)
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "-o", color="tab:red",
            label="Pareto front")  # fmt: skip
    arrow = {True: "higher is better", False: "lower is better"}
    ax.set_xlabel(f"{x} {mx[0].metric} ({arrow[mx[0].higher_is_better]})")
    ax.set_ylabel(f"{y} {my[0].metric} ({arrow[my[0].higher_is_better]})")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0.0, 0.0, 0.68, 1.0))
    fig.savefig(path)
    plt.close(fig)
    return Path(path), front
