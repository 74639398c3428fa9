"""Max-margin DPO pairs from scored rollouts.

Aggregate reward of a sample = weighted mean of its dimension scores (weights from
``reward_weights``, default 1 each). Per prompt, chosen = the sample with the highest aggregate,
rejected = the lowest (first index on ties); the pair is kept only when the gap is >= ``margin``
and the two texts differ (and neither is empty). Lines are ``{"prompt": chat messages, "chosen",
"rejected", "margin", "provenance"}``, readable by
:func:`prefvec.training.data.load_jsonl_pairs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefvec.training.mora.prompts import PromptRecord


def aggregate(row: Sequence[float], names: Sequence[str], weights: Mapping[str, float]) -> float:
    """Weighted mean of one sample's scores (unnamed dimensions weigh 1)."""
    w = [float(weights.get(d, 1.0)) for d in names]
    total = sum(w)
    return sum(x * wi for x, wi in zip(row, w, strict=True)) / total if total else 0.0


def max_margin_pair(
    prompt: PromptRecord,
    rollout: dict[str, Any],
    profile: dict[str, Any],
    weights: Mapping[str, float],
    margin: float,
    origin: dict[str, Any],
) -> list[dict[str, Any]]:
    """``[pair line]`` for one prompt when its best and worst samples clear the margin."""
    names, texts = profile["dimensions"], rollout["texts"]
    agg = [aggregate(row, names, weights) for row in profile["scores"]]
    hi = max(range(len(agg)), key=lambda i: (agg[i], -i))
    lo = min(range(len(agg)), key=lambda i: (agg[i], i))
    gap = agg[hi] - agg[lo]
    chosen, rejected = texts[hi].strip(), texts[lo].strip()
    if gap < margin or not chosen or not rejected or chosen == rejected:
        return []
    seeds = rollout.get("sample_seeds")
    prov = {
        **origin,
        "prompt_id": prompt.id,
        "prompt_seed": rollout.get("prompt_seed"),
        "chosen_index": hi,
        "rejected_index": lo,
        "seeds": [seeds[hi], seeds[lo]] if seeds else None,
        "aggregate": {"chosen": agg[hi], "rejected": agg[lo]},
        "scores": {
            "chosen": dict(zip(names, profile["scores"][hi], strict=True)),
            "rejected": dict(zip(names, profile["scores"][lo], strict=True)),
        },
    }
    return [
        {
            "prompt": prompt.messages,
            "chosen": chosen,
            "rejected": rejected,
            "margin": gap,
            "provenance": prov,
        }
    ]


def origin_of(record: dict[str, Any] | None) -> dict[str, Any]:
    """Provenance fields of a prompt: a fused record's parents / rewriter, or ``original``."""
    if record is None:
        return {
            "original": True,
            "parents": [],
            "rewriter": None,
            "template": None,
            "template_version": None,
        }
    return {
        "original": False,
        "parents": record["parents"],
        "rewriter": record["rewriter"],
        "template": record["template"],
        "template_version": record["template_version"],
    }


def pair_counts(pairs: Sequence[dict[str, Any]], candidates: int) -> dict[str, Any]:
    """Kept pairs (of ``candidates`` prompts) and their margins."""
    margins = [p["margin"] for p in pairs]
    return {
        "candidates": candidates,
        "pairs": len(pairs),
        "from_original": sum(p["provenance"]["original"] for p in pairs),
        "margin_mean": sum(margins) / len(margins) if margins else None,
        "margin_min": min(margins) if margins else None,
        "margin_max": max(margins) if margins else None,
    }
