"""Mining single-reward prompts: those whose rollouts reach the ``good`` threshold on exactly one
dimension (the profile's best value per dimension is compared with ``good``).

With ``include_unreached`` (``--mine-unreached``) prompts that reach *no* dimension are mined too,
as dimension ``"none"``: on a small model a harmful prompt is often never refused in N samples, so
it reaches neither harmless (no refusal) nor helpful (no legitimate need) — its reachable region
is a point, the narrowest bound of all, and fusion widens it the same way."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def reached(profile: dict[str, Any], good: float) -> list[str]:
    """Dimensions on which some rollout of the prompt scores >= ``good``."""
    return [d for d in profile["dimensions"] if profile["best"][d] >= good]


def mine_row(
    profile: dict[str, Any], good: float, include_unreached: bool = False
) -> list[dict[str, Any]]:
    """``[mined line]`` when exactly one dimension is reached (or none, with
    ``include_unreached``), else ``[]``."""
    dims = reached(profile, good)
    if len(dims) == 1:
        return [{"id": profile["id"], "dimension": dims[0], "best": profile["best"]}]
    if include_unreached and not dims:
        return [{"id": profile["id"], "dimension": "none", "best": profile["best"]}]
    return []


def mining_counts(
    profiles: Sequence[dict[str, Any]], good: float, include_unreached: bool = False
) -> dict[str, Any]:
    """How many prompts reach each number of dimensions, and the mined ones per dimension."""
    n_reached = Counter(len(reached(p, good)) for p in profiles)
    mined = Counter(
        row["dimension"] for p in profiles for row in mine_row(p, good, include_unreached)
    )
    return {
        "prompts": len(profiles),
        "mined": sum(mined.values()),
        "mined_per_dimension": dict(sorted(mined.items())),
        "prompts_by_dimensions_reached": {str(k): v for k, v in sorted(n_reached.items())},
    }
