"""Behaviour check of a harmless vector: does it refuse harmful requests, answer benign ones,
and stay fluent, as η grows? (Reward accuracy alone is not behaviour: DESIGN "Known facts".)

Repetition measure: :func:`prefvec.scoring.text.is_collapsed` (distinct-trigram ratio < 0.5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefvec.scoring.text import is_collapsed


def summarise(replies: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Refusal and collapse counts per prompt kind.

    Args:
        replies: ``{"harmful": [...], "benign_risky": [...]}`` replies at one η.

    Returns:
        ``{kind: {"n", "refused", "collapsed"}}``.
    """
    from prefvec.scoring.refusal import is_refusal

    out: dict[str, Any] = {}
    for kind, texts in replies.items():
        out[kind] = {
            "n": len(texts),
            "refused": sum(is_refusal(t) for t in texts),
            "collapsed": sum(is_collapsed(t) for t in texts),
        }
    return out


def eta_sweep(
    handle: Any,
    vector: str,
    etas: Sequence[float],
    prompts: Mapping[str, Sequence[str]],
    max_new_tokens: int = 64,
    extra: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Greedy replies to ``prompts`` at each η of ``vector`` (plus fixed ``extra`` weights).

    Args:
        handle: a :class:`~prefvec.evaluation.targets.ModelHandle` (base loaded once).
        prompts: ``{kind: [prompt, ...]}``.

    Returns:
        One ``{"eta", "weights", "summary", "replies": {kind: [{"prompt", "reply"}]}}`` per η.
    """
    rows = []
    for eta in etas:
        weights = {**(extra or {}), vector: float(eta)} if eta else dict(extra or {})
        target = handle.target(weights)
        got = {
            k: target.generate(list(v), max_new_tokens=max_new_tokens) for k, v in prompts.items()
        }
        quoted = {
            k: [{"prompt": p, "reply": r} for p, r in zip(v, got[k], strict=True)]
            for k, v in prompts.items()
        }
        rows.append({"eta": float(eta), "weights": weights, "summary": summarise(got),
                     "replies": quoted})  # fmt: skip
    return rows
