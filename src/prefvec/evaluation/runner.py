"""Run suites against a target, with intervals, and write JSON + CSV.

Every metric carries a 95% interval: Wilson for proportions (accuracy, refusal rates, pair
accuracy), a seeded percentile bootstrap for means (TruthfulQA MC2).
"""

from __future__ import annotations

import csv
import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefvec.errors import ValidationError
from prefvec.evaluation.data import eval_data_dir, subsample
from prefvec.evaluation.stats import bootstrap_mean_interval, wilson_interval
from prefvec.evaluation.suites import (
    COLLAPSE,
    Suite,
    expand_suites,
    mc2_score,
    mc_correct,
    pair_outcome,
)

logger = logging.getLogger(__name__)
CHUNK = 16  # requests per progress-bar step


@dataclass
class Metric:
    """One metric of one suite with its 95% interval."""

    suite: str
    metric: str
    dimension: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    higher_is_better: bool
    interval: str  # "wilson" | "bootstrap"


@dataclass
class EvalReport:
    """Everything one ``prefvec eval run`` produced."""

    label: str
    weights: dict[str, float]
    config: dict[str, Any]
    metrics: list[Metric] = field(default_factory=list)
    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0

    def metric(self, suite: str) -> Metric:
        for m in self.metrics:
            if m.suite == suite:
                return m
        raise KeyError(suite)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "weights": self.weights, "config": self.config,
            "metrics": [asdict(m) for m in self.metrics], "skipped": self.skipped,
            "wall_s": self.wall_s, "items": self.items,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalReport:
        return cls(
            label=d["label"], weights=d.get("weights", {}), config=d.get("config", {}),
            metrics=[Metric(**m) for m in d["metrics"]], items=d.get("items", {}),
            skipped=d.get("skipped", {}), wall_s=d.get("wall_s", 0.0),
        )  # fmt: skip

    def write(self, out_dir: str | Path, stem: str = "eval") -> tuple[Path, Path]:
        """Write ``<stem>.json`` (everything, per-item records included) and ``<stem>.csv``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        jpath, cpath = out / f"{stem}.json", out / f"{stem}.csv"
        jpath.write_text(json.dumps(self.to_dict(), indent=1, default=str))
        write_metrics_csv([self], cpath)
        return jpath, cpath


def write_metrics_csv(reports: Sequence[EvalReport], path: str | Path) -> Path:
    """One row per (report, metric): label, weights (JSON), metric fields."""
    cols = ["label", "weights", *Metric.__dataclass_fields__]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in reports:
            for m in r.metrics:
                w.writerow({"label": r.label, "weights": json.dumps(r.weights), **asdict(m)})
    return Path(path)


def proportion_metric(suite: Suite, outcomes: Sequence[float]) -> Metric:
    n = len(outcomes)
    s = float(sum(outcomes))
    lo, hi = wilson_interval(s, n)
    value = s / n if n else float("nan")
    return Metric(suite.name, suite.metric, suite.dimension, value, lo, hi, n,
                  suite.higher_is_better, "wilson")  # fmt: skip


def mean_metric(suite: Suite, values: Sequence[float], seed: int) -> Metric:
    n = len(values)
    lo, hi = bootstrap_mean_interval(values, seed=seed)
    value = sum(values) / n if n else float("nan")
    return Metric(suite.name, suite.metric, suite.dimension, value, lo, hi, n,
                  suite.higher_is_better, "bootstrap")  # fmt: skip


def _chunked(
    fn: Callable[[Sequence[Any]], list[Any]], requests: Sequence[Any], desc: str, progress: bool
) -> list[Any]:
    from tqdm.auto import tqdm

    out: list[Any] = []
    with tqdm(total=len(requests), desc=desc, disable=not progress, leave=False) as bar:
        for s in range(0, len(requests), CHUNK):
            out += fn(requests[s : s + CHUNK])
            bar.update(len(requests[s : s + CHUNK]))
    return out


# ------------------------------------------------------------------------------- suite runners


def run_mc(target: Any, suite: Suite, items: Sequence[Any], ctx: RunContext) -> tuple[Metric, list]:
    requests = [(it.prompt, c) for it in items for c in it.choices]
    lps = _chunked(target.logprobs, requests, suite.name, ctx.progress)
    records, values, k = [], [], 0
    for it in items:
        lp = lps[k : k + len(it.choices)]
        k += len(it.choices)
        v = mc2_score(lp, it.labels) if suite.kind == "mc2" else float(mc_correct(lp, it.labels))
        values.append(v)
        records.append({"id": it.id, "logprobs": lp, "score": v})
    if suite.kind == "mc2":
        return mean_metric(suite, values, ctx.seed), records
    return proportion_metric(suite, values), records


def run_generation(
    target: Any, suite: Suite, items: Sequence[Any], ctx: RunContext
) -> tuple[Metric, list]:
    prompts = [it.prompt for it in items]
    outs = _chunked(lambda p: target.generate(p, ctx.max_new_tokens), prompts, suite.name,
                    ctx.progress)  # fmt: skip
    flags = ctx.judge.score(prompts, outs)
    from prefvec.scoring.text import is_collapsed

    records = [{"id": it.id, "output": o, "refusal": f, "collapsed": is_collapsed(o)}
               for it, o, f in zip(items, outs, flags, strict=True)]  # fmt: skip
    return proportion_metric(suite, flags), records


def _from_parent(
    suite: Suite, items: Sequence[Any], report: EvalReport, seed: int
) -> tuple[Metric, list] | None:
    """Score ``suite`` from the records of its parent suite in this run (``subset_of``), when
    every one of its items was scored there; else ``None`` (score it on its own)."""
    parent = report.items.get(suite.subset_of or "")
    if not parent:
        return None
    by_id = {r["id"]: r for r in parent}
    if not all(it.id in by_id for it in items):
        return None
    records = [by_id[it.id] for it in items]
    values = [float(r["score"]) for r in records]
    if suite.kind == "mc2":
        return mean_metric(suite, values, seed), records
    return proportion_metric(suite, values), records


def collapse_metric(report: EvalReport) -> Metric | None:
    """Share of all generated replies of a run that collapsed into repetition (``collapse``).

    Pooled over the run's generation suites; ``None`` when the run generated nothing.
    """
    flags = [float(r["collapsed"]) for recs in report.items.values() for r in recs
             if "collapsed" in r]  # fmt: skip
    if not flags:
        return None
    lo, hi = wilson_interval(sum(flags), len(flags))
    return Metric(COLLAPSE, "collapse_rate", "fluency", sum(flags) / len(flags), lo, hi,
                  len(flags), False, "wilson")  # fmt: skip


def run_pairs(
    target: Any, suite: Suite, items: Sequence[Any], ctx: RunContext
) -> tuple[Metric, list]:
    requests = [(it.messages, y) for it in items for y in (it.chosen, it.rejected)]
    keys = [(suite.name, it.id, j) for it in items for j in (0, 1)]
    missing = [i for i, k in enumerate(keys) if k not in ctx.reference_cache]
    if missing:
        with target.reference() as ref:
            got = _chunked(ref.logprobs, [requests[i] for i in missing], f"{suite.name} (ref)",
                           ctx.progress)  # fmt: skip
        ctx.reference_cache.update({keys[i]: v for i, v in zip(missing, got, strict=True)})
    reference = [ctx.reference_cache[k] for k in keys]
    # the base model is its own reference: scored once, not twice
    policy = (reference if getattr(target, "is_reference", False)
              else _chunked(target.logprobs, requests, suite.name, ctx.progress))  # fmt: skip
    records, outcomes = [], []
    for i, it in enumerate(items):
        o = pair_outcome(
            (policy[2 * i], policy[2 * i + 1]), (reference[2 * i], reference[2 * i + 1])
        )
        outcomes.append(o)
        records.append({"id": it.id, "policy": policy[2 * i : 2 * i + 2],
                        "reference": reference[2 * i : 2 * i + 2], "outcome": o})  # fmt: skip
    return proportion_metric(suite, outcomes), records


RUNNERS = {"mc": run_mc, "mc2": run_mc, "refusal": run_generation,
           "over_refusal": run_generation, "pairs": run_pairs}  # fmt: skip


@dataclass
class RunContext:
    """Settings shared by the suites of one run (and, for grids, across runs)."""

    limit: int | None = None
    seed: int = 0
    max_new_tokens: int = 64
    progress: bool = True
    data_dir: str | Path | None = None
    judge: Any = None
    reference_cache: dict[tuple[str, str, int], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValidationError(f"`limit` must be >= 1, got {self.limit}", field="limit")
        if self.judge is None:
            from prefvec.scoring import get_scorer

            self.judge = get_scorer("refusal")


def run_eval(
    target: Any,
    suites: Sequence[str],
    ctx: RunContext | None = None,
    *,
    label: str | None = None,
) -> EvalReport:
    """Run ``suites`` (names or groups) against ``target``; suites the target cannot run are
    listed in ``report.skipped`` with the reason.

    Args:
        target: an :class:`~prefvec.evaluation.targets.InProcessTarget` or ``ServerTarget``.
        suites: suite or group names (see :data:`prefvec.evaluation.suites.GROUPS`).
        ctx: limit (items per suite, fixed-seed subsample), seed, max_new_tokens, progress...
        label: the report's name (default: the target's label).
    """
    ctx = ctx or RunContext()
    chosen = expand_suites(suites)
    root = eval_data_dir(ctx.data_dir)
    report = EvalReport(
        label=label or target.label, weights=dict(getattr(target, "weights", {}) or {}),
        config={"suites": [s.name for s in chosen], "limit": ctx.limit, "seed": ctx.seed,
                "max_new_tokens": ctx.max_new_tokens, "target": type(target).__name__,
                "judge": ctx.judge.info.name, "python": platform.python_version()},
    )  # fmt: skip
    start = time.perf_counter()
    for suite in chosen:
        if suite.needs_logprobs and not target.supports_logprobs:
            report.skipped[suite.name] = "needs log-likelihoods (in-process target only)"
            continue
        items = subsample(suite.load(root), ctx.limit, ctx.seed)
        t0 = time.perf_counter()
        scored = _from_parent(suite, items, report, ctx.seed)
        metric, records = scored or RUNNERS[suite.kind](target, suite, items, ctx)
        report.metrics.append(metric)
        report.items[suite.name] = records
        logger.info("%s %s = %.3f [%.3f, %.3f] (n=%d, %.1fs)", suite.name, metric.metric,
                    metric.value, metric.ci_low, metric.ci_high, metric.n,
                    time.perf_counter() - t0)  # fmt: skip
    collapse = collapse_metric(report)
    if collapse is not None:
        report.metrics.append(collapse)
    report.wall_s = time.perf_counter() - start
    return report
