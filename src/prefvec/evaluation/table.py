"""The README results table, generated from eval JSON files (``prefvec eval table``).

Rows are runs (one per ``eval run`` JSON, or one per grid point of an ``eval grid`` JSON), columns
are suites; each cell is ``value [95% CI low, high]``. With ``readme=``, the table replaces the text
between :data:`START` and :data:`END` in that file (markers added at the end when absent).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from prefvec.evaluation.runner import EvalReport
from prefvec.evaluation.suites import GROUPS, SUITES

START = "<!-- prefvec-eval-table:start -->"
END = "<!-- prefvec-eval-table:end -->"


def load_reports(paths: Sequence[str | Path]) -> list[EvalReport]:
    """Reports from ``eval run`` JSONs (one object) and ``eval grid`` JSONs (a list), in order."""
    out: list[EvalReport] = []
    for p in paths:
        data = json.loads(Path(p).read_text())
        out += [EvalReport.from_dict(d) for d in (data if isinstance(data, list) else [data])]
    return out


def weights_key(weights: dict[str, float]) -> str:
    """A run's weights as a row key: non-zero weights sorted by name, or ``base``."""
    parts = [f"{k}={v:g}" for k, v in sorted(weights.items()) if v != 0]
    return ",".join(parts) or "base"


def merge_by_weights(reports: Sequence[EvalReport]) -> list[EvalReport]:
    """One report per distinct weight setting (zero weights dropped), in first-seen order.

    Runs of one setting in several files (an η sweep, a 2-D grid, a run of the other suites)
    become one row: a suite measured more than once keeps its first measurement (greedy
    decoding: the same items give the same value), and the pooled ``collapse`` metric is
    computed again over the merged replies.
    """
    from prefvec.evaluation.runner import collapse_metric
    from prefvec.evaluation.suites import COLLAPSE

    merged: dict[str, EvalReport] = {}
    for r in reports:
        key = weights_key(r.weights)
        into = merged.get(key)
        if into is None:
            nonzero = {k: v for k, v in r.weights.items() if v != 0}
            into = merged[key] = EvalReport(key, nonzero, dict(r.config))
        have = {m.suite for m in into.metrics}
        for m in r.metrics:
            if m.suite not in have and m.suite != COLLAPSE:
                into.metrics.append(m)
                into.items[m.suite] = r.items.get(m.suite, [])
        into.wall_s += r.wall_s
    for into in merged.values():
        c = collapse_metric(into)
        if c is not None:
            into.metrics.append(c)
    return list(merged.values())


def select_rows(reports: Sequence[EvalReport], rows: Sequence[str]) -> list[EvalReport]:
    """The reports whose weights key (see :func:`weights_key`) is in ``rows``, in that order
    (the first report of a key where a file holds several)."""
    from prefvec.errors import ValidationError
    from prefvec.weights import parse_weights

    by_key: dict[str, EvalReport] = {}
    for r in reports:
        by_key.setdefault(weights_key(r.weights), r)
    want = [weights_key(parse_weights("" if w.strip() == "base" else w)) for w in rows]
    missing = [w for w, k in zip(rows, want, strict=True) if k not in by_key]
    if missing:
        raise ValidationError(
            f"`rows` {missing} are not among the runs {sorted(by_key)}", field="rows"
        )
    return [by_key[k] for k in want]


def _columns(reports: Sequence[EvalReport]) -> list[str]:
    present = {m.suite for r in reports for m in r.metrics}
    order = [s for s in GROUPS["all"] if s in present]
    return order + sorted(present - set(order))


def format_cell(value: float, lo: float, hi: float, digits: int = 2) -> str:
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def markdown_table(reports: Sequence[EvalReport], digits: int = 2) -> str:
    """A Markdown table: one row per report, one column per suite, plus n per column."""
    cols = _columns(reports)

    def head(s: str) -> str:
        known = SUITES.get(s) or next(m for r in reports for m in r.metrics if m.suite == s)
        arrow = " ↑" if known.higher_is_better else " ↓"
        return f"{s}<br>{known.metric}{arrow}"

    lines = ["| run | " + " | ".join(head(c) for c in cols) + " |",
             "|---|" + "---|" * len(cols)]  # fmt: skip
    for r in reports:
        cells = []
        for c in cols:
            m = next((m for m in r.metrics if m.suite == c), None)
            cells.append("–" if m is None else format_cell(m.value, m.ci_low, m.ci_high, digits))
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
    ns = {m.suite: m.n for r in reports for m in r.metrics}
    lines.append("| *n* | " + " | ".join(str(ns.get(c, "")) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def category_table(
    reports: Sequence[EvalReport], suite: str, categories: Mapping[str, tuple[str, ...]]
) -> str:
    """A Markdown table of one generation suite split by category: refused / items per cell.

    Args:
        reports: the rows (each with the suite's per-item records).
        suite: a generation suite (its records carry a ``refusal`` score in [0, 1]).
        categories: ``{item id: (category, ...)}``; an item counts in each of its categories.
            Columns: the first categories of all items (sorted), then the second ones, ...
    """
    width = max((len(cats) for cats in categories.values()), default=0)
    cols: list[str] = []
    for i in range(width):
        cols += sorted({cats[i] for cats in categories.values() if len(cats) > i} - set(cols))
    lines = ["| run | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
             "|---|" + "---|" * len(cols)]  # fmt: skip
    for r in reports:
        refused = {c: 0 for c in cols}
        total = {c: 0 for c in cols}
        for rec in r.items.get(suite, []):
            for c in categories.get(rec["id"], ()):
                total[c] += 1
                refused[c] += rec["refusal"] >= 0.5
        cells = [f"{refused[c]}/{total[c]}" if total[c] else "–" for c in cols]
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markers(name: str | None = None) -> tuple[str, str]:
    """The start/end comments of the default block, or of the block called ``name``."""
    if not name:
        return START, END
    return f"<!-- prefvec-eval-table:{name}:start -->", f"<!-- prefvec-eval-table:{name}:end -->"


def wall_line(reports: Sequence[EvalReport]) -> str:
    """One line under the table: how long its rows took to evaluate (sum of their wall times)."""
    total = sum(r.wall_s for r in reports)
    return (
        f"\n_{len(reports)} runs, evaluated in {total / 60:.1f} min in all "
        "(sum of the rows' wall times)._\n"
    )


def update_readme(readme: str | Path, table: str, marker: str | None = None) -> Path:
    """Replace the text between the markers (default or ``marker``'s) in ``readme`` with
    ``table`` (appended when absent)."""
    path = Path(readme)
    text = path.read_text() if path.exists() else ""
    start, end = markers(marker)
    block = f"{start}\n{table}{end}"
    if start in text and end in text:
        pre, rest = text.split(start, 1)
        post = rest.split(end, 1)[1]
        text = pre + block + post
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
    return path
