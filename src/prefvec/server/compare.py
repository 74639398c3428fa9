"""Side-by-side comparison of recipes / preference sets on a list of prompts (HTTP-free).

Outputs come from a ``generate_all`` coroutine the caller supplies (the server passes its serving
service, which admits all prompt × candidate generations together). Scores come from the one
scorer registry, :mod:`prefvec.scoring`; a scorer maps ``(prompt, output) -> float`` and says
whether higher is better. Win rate of
candidate a over b on a scorer: wins + ties/2 over the prompts, with a Wilson 95% interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

from prefvec.errors import ValidationError
from prefvec.protocol import (
    CompareCandidate,
    CompareOutput,
    CompareRequest,
    CompareResponse,
    CompareRow,
    CompareSummary,
    PrefvecInfo,
    WinRate,
)
from prefvec.server.experiments import wilson_interval

GenerateAll = Callable[
    [list[tuple[str, CompareCandidate]]], Awaitable[list[tuple[str, PrefvecInfo]]]
]
"""Generates every (prompt, candidate) at once and returns (text, info) in the same order."""


@dataclass(frozen=True)
class Scorer:
    """A named score of one output; ``higher_is_better`` orients win rates."""

    name: str
    fn: Callable[[str, str], float]
    higher_is_better: bool = True


def _usable(name: str) -> bool:
    """Scorers of :mod:`prefvec.scoring` that need no options and no reference answers."""
    return name not in ("reward_model", "llm_judge", "embedding_similarity")


def available_scorers() -> list[str]:
    """The option-free scorers of :mod:`prefvec.scoring` (the one scorer registry)."""
    from prefvec.scoring import available_scorers as registry_names

    return sorted(n for n in registry_names() if _usable(n))


def get_scorer(name: str) -> Scorer:
    """The scorer ``name``, built from the :mod:`prefvec.scoring` registry.

    Raises:
        ValidationError: an unknown name, or one that needs options or references (the message
            lists the usable names).
    """
    if name not in available_scorers():
        raise ValidationError(
            f"`scorers` must be among {available_scorers()}, got {name!r}", field="scorers"
        )
    from prefvec.scoring import get_scorer as build

    scorer = build(name)
    scorer.check()  # an unusable scorer fails now, not after the generations it would score
    return Scorer(name, scorer.score_one, scorer.info.higher_is_better)


def candidate_label(c: CompareCandidate, index: int) -> str:
    if c.label:
        return c.label
    if c.recipe:
        return f"recipe:{c.recipe}"
    if c.preferences:
        return ",".join(f"{k}={v:g}" for k, v in sorted(c.preferences.items()))
    return f"base#{index}"


def win_rates(
    labels: Sequence[str], scores: list[list[dict[str, float]]], scorer: Scorer
) -> list[WinRate]:
    """Pairwise win rates on one scorer; ``scores[prompt][candidate][scorer]``."""
    out = []
    for i, j in combinations(range(len(labels)), 2):
        wins = losses = ties = 0
        for row in scores:
            a, b = row[i][scorer.name], row[j][scorer.name]
            if not scorer.higher_is_better:
                a, b = -a, -b
            wins, losses, ties = wins + (a > b), losses + (a < b), ties + (a == b)
        n = wins + losses + ties
        lo, hi = wilson_interval(wins + ties / 2, n)
        out.append(WinRate(
            scorer=scorer.name, a=labels[i], b=labels[j], wins=wins, losses=losses, ties=ties,
            rate=(wins + ties / 2) / n if n else 0.0, ci_low=lo, ci_high=hi,
        ))  # fmt: skip
    return out


async def run_compare(
    req: CompareRequest, generate_all: GenerateAll, default_scorers: Sequence[str] = ()
) -> CompareResponse:
    """Generate every prompt × candidate (scorers are built first, so an unusable one fails
    before any generation), score, summarise."""
    names = list(req.scorers if req.scorers is not None else default_scorers)
    # built and checked off the event loop (a judge may be this very server)
    scorers = await asyncio.to_thread(lambda: [get_scorer(n) for n in names])
    labels = [candidate_label(c, i) for i, c in enumerate(req.candidates)]
    if len(set(labels)) != len(labels):
        raise ValidationError(
            f"`candidates` labels must be unique, got {labels}", field="candidates"
        )
    flat = await generate_all([(p, c) for p in req.prompts for c in req.candidates])
    # Scorers may block (a model forward, an HTTP judge): score off the event loop.
    scored = await asyncio.to_thread(
        lambda: [
            {s.name: float(s.fn(req.prompts[i // len(req.candidates)], text)) for s in scorers}
            for i, (text, _) in enumerate(flat)
        ]
    )
    rows: list[CompareRow] = []
    all_scores: list[list[dict[str, float]]] = []
    k = len(req.candidates)
    for pi, prompt in enumerate(req.prompts):
        outs, row_scores = [], []
        for ci in range(k):
            text, info = flat[pi * k + ci]
            sc = scored[pi * k + ci]
            outs.append(CompareOutput(label=labels[ci], text=text, scores=sc, prefvec=info))
            row_scores.append(sc)
        rows.append(CompareRow(prompt=prompt, outputs=outs))
        all_scores.append(row_scores)
    summary = CompareSummary(scorers=names)
    for s in scorers:
        for ci, label in enumerate(labels):
            vals = [row[ci][s.name] for row in all_scores]
            summary.mean_scores.setdefault(label, {})[s.name] = sum(vals) / len(vals)
        summary.win_rates += win_rates(labels, all_scores, s)
    return CompareResponse(labels=labels, rows=rows, summary=summary)
