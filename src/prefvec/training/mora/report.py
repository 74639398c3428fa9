"""Before (original prompts) vs after (fused rewrites): what rewriting did to the reachable rewards.

Per set of reward profiles (:func:`region_metrics`):

* ``mean_best``: per dimension, the mean over prompts of the best value any rollout reached;
* ``joint_share``: share of prompts with a rollout scoring >= ``good`` on >= 2 dimensions at once;
* diversity: ``mean_spread`` (mean over prompts and dimensions of the per-prompt std) and
  ``mean_pairwise_distance`` (mean over prompts of the mean Euclidean distance between two
  rollouts' score vectors);
* the union reachable region (every rollout's score vector): the area of its convex hull when
  there are 2 dimensions, and its number of Pareto points.

``report.png`` (the ``plot`` extra) scatters the points before and after, the per-prompt best
points (the rollout with the best mean), and the hulls of the first two dimensions.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefvec.training.mora.profiles import pareto_indices

logger = logging.getLogger(__name__)
Point = tuple[float, float]


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def convex_hull(points: Sequence[Sequence[float]]) -> list[Point]:
    """Vertices of the 2-D convex hull, counter-clockwise (Andrew's monotone chain)."""
    pts = sorted({(float(p[0]), float(p[1])) for p in points})
    if len(pts) <= 2:
        return pts
    lower: list[Point] = []
    upper: list[Point] = []
    for p in pts:
        while len(lower) >= 2 and _cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and _cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def polygon_area(vertices: Sequence[Point]) -> float:
    """Shoelace area of a simple polygon (0 for fewer than 3 vertices)."""
    n = len(vertices)
    if n < 3:
        return 0.0
    s = sum(
        vertices[i][0] * vertices[(i + 1) % n][1] - vertices[(i + 1) % n][0] * vertices[i][1]
        for i in range(n)
    )
    return abs(s) / 2.0


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def mean_pairwise_distance(rows: Sequence[Sequence[float]]) -> float:
    """Mean Euclidean distance over unordered pairs of score vectors (0 for one sample)."""
    d = [math.dist(a, b) for a, b in itertools.combinations(rows, 2)]
    return sum(d) / len(d) if d else 0.0


def region_metrics(profiles: Sequence[dict[str, Any]], good: float) -> dict[str, Any]:
    """The metrics of the module docstring for one set of profiles."""
    if not profiles:
        return {"prompts": 0, "samples": 0}
    names = profiles[0]["dimensions"]
    points = [tuple(row) for p in profiles for row in p["scores"]]
    out: dict[str, Any] = {
        "prompts": len(profiles),
        "samples": len(points),
        "mean_best": {d: _mean([p["best"][d] for p in profiles]) for d in names},
        "joint_share": _mean(
            [float(any(sum(x >= good for x in row) >= 2 for row in p["scores"])) for p in profiles]
        ),
        "mean_spread": _mean([s for p in profiles for s in p["spread"].values()]),
        "mean_spread_per_dimension": {d: _mean([p["spread"][d] for p in profiles]) for d in names},
        "mean_pairwise_distance": _mean([mean_pairwise_distance(p["scores"]) for p in profiles]),
        "n_pareto": len({points[i] for i in pareto_indices(points)}),
        "distinct_points": len(set(points)),
    }
    if len(names) == 2:
        out["hull_area"] = polygon_area(convex_hull(points))
    return out


def build_report(
    before: Sequence[dict[str, Any]],
    after: Sequence[dict[str, Any]],
    good: float,
    parent_ids: Sequence[str] | None = None,
    **counts: Any,
) -> dict[str, Any]:
    """``report.json``: the metrics before and after, plus each stage's counts.

    With ``parent_ids`` (the original prompts whose rewrites were kept) it also reports
    ``before_parents``: the same metrics over just those prompts, the like-for-like "before" of
    the rewrites (``before`` covers every original prompt, mined or not).
    """
    dims = (before or after or [{"dimensions": []}])[0]["dimensions"]
    out = {
        "dimensions": dims,
        "good": good,
        "before": region_metrics(before, good),
        "after": region_metrics(after, good),
    }
    if parent_ids is not None:
        wanted = set(parent_ids)
        out["before_parents"] = region_metrics([p for p in before if p["id"] in wanted], good)
    return {**out, **counts}


def best_points(profiles: Sequence[dict[str, Any]]) -> list[list[float]]:
    """Per prompt, the score vector of its rollout with the best mean."""
    return [max(p["scores"], key=lambda r: sum(r) / len(r)) for p in profiles]


def plot_report(
    before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], path: Path
) -> Path | None:
    """Write the scatter to ``path``; ``None`` (with a warning) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("report.png skipped: matplotlib missing (pip install 'prefvec[plot]')")
        return None
    dims = (before or after or [{"dimensions": ["x", "y"]}])[0]["dimensions"]
    if len(dims) < 2:
        logger.warning("report.png skipped: fewer than 2 dimensions")
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharex=True, sharey=True)
    hull_before = convex_hull([r[:2] for p in before for r in p["scores"]])
    for ax, profs, title, color in (
        (axes[0], before, "before (original prompts)", "tab:blue"),
        (axes[1], after, "after (fused rewrites)", "tab:orange"),
    ):
        pts = [r[:2] for p in profs for r in p["scores"]]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=22, alpha=0.4, color=color, label="rollouts")
            best = [b[:2] for b in best_points(profs)]
            ax.scatter(
                *zip(*best, strict=True), s=30, marker="x", color="black", label="per-prompt best"
            )
            _draw_hull(ax, convex_hull(pts), color, "-", "hull")
        if profs is after:
            _draw_hull(ax, hull_before, "tab:blue", "--", "hull before")
        ax.set(title=title, xlabel=dims[0], ylabel=dims[1], xlim=(-0.05, 1.05), ylim=(-0.05, 1.05))
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _draw_hull(ax: Any, hull: list[Point], color: str, style: str, label: str) -> None:
    if len(hull) >= 2:
        xs, ys = zip(*([*hull, hull[0]]), strict=True)
        ax.plot(xs, ys, style, color=color, lw=1.2, label=label)
