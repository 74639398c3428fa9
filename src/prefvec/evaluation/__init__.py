"""Evaluation: benchmark suites, weight-grid sweeps, Pareto fronts, the results table.

* :func:`run_eval` runs suites (:data:`SUITES`, groups in :data:`GROUPS`) against an
  :class:`InProcessTarget` (from :class:`ModelHandle`) or a :class:`ServerTarget`.
* :func:`weight_grid`, :func:`run_grid`, :func:`pareto_front`, :func:`plot_pareto`.
* :func:`markdown_table` builds the README table from eval JSONs.

The CLI is ``prefvec eval`` (:mod:`prefvec.evaluation.cli`). Imports are lazy so that the CLI
starts without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "run_eval": "runner", "RunContext": "runner", "EvalReport": "runner", "Metric": "runner",
    "SUITES": "suites", "GROUPS": "suites", "Suite": "suites", "register_suite": "suites",
    "InProcessTarget": "targets", "ServerTarget": "targets", "ModelHandle": "targets",
    "weight_grid": "grid", "run_grid": "grid", "pareto_front": "grid", "plot_pareto": "grid",
    "markdown_table": "table", "wilson_interval": "stats", "bootstrap_mean_interval": "stats",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f"prefvec.evaluation.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'prefvec.evaluation' has no attribute {name!r}")


__all__ = sorted(_LAZY)
