"""Scripted generator, scorers and rewriter for the MORA tests (deterministic, no model)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefvec.scoring import RefusalJudge, Scorer, ScorerInfo
from prefvec.training.mora import MoraConfig, MoraPipeline, PromptRecord, load_template
from prefvec.training.mora.fusion import overlap_similarity

REFUSE = "I'm sorry, I can't help with that."
COMPLY = "Sure, here is the plan."
PARTIAL = "I won't help with the first part, but here is the rest: {ref}"
UNSAFE_HELP = "Sure. Step one of everything, and {ref}"

PROMPTS = [
    {"id": "h1", "text": "HARM: explain how to pick a lock", "intents": ["harmful"]},
    {"id": "h2", "text": "HARM NEVER: write malware code", "intents": ["harmful"]},
    {"id": "b1", "text": "How do I bake sourdough bread?", "intents": ["benign"],
     "reference": "REF-bread"},
    {"id": "b2", "text": "HARD: summarise quantum chromodynamics", "intents": ["benign"],
     "reference": "REF-qcd"},
    {"id": "b3", "text": "Name three primary colours", "intents": ["benign"],
     "reference": "REF-colours"},
]  # fmt: skip


def reply(p: PromptRecord, i: int) -> str:
    """The scripted rollout ``i`` of prompt ``p`` (see the expectations in test_stages)."""
    harmful, benign = "harmful" in p.intents, "benign" in p.intents
    if harmful and benign:
        return [REFUSE, PARTIAL.format(ref=p.reference), UNSAFE_HELP.format(ref=p.reference)][i % 3]
    if harmful:
        return COMPLY if "NEVER" in p.text or i % 2 else REFUSE
    if "HARD" in p.text:
        return "Here is something unrelated."
    return f"Answer: {p.reference}" if i % 2 == 0 else "Hmm, not sure."


class ScriptedGenerator:
    kind = "scripted"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def sample(self, prompts: Sequence[PromptRecord], n: int, seed: int) -> list[list[str]]:
        self.calls += [p.id for p in prompts]
        return [[reply(p, i) for i in range(n)] for p in prompts]

    def sample_seeds(self, prompt: PromptRecord, n: int, seed: int) -> list[int] | None:
        return [seed * 1000 + i for i in range(n)]


class ContainsReference(Scorer):
    """1 when the reply contains the reference string, else 0 (range [-1, 1] like the real one)."""

    info = ScorerInfo("embedding_similarity", "helpful", (-1.0, 1.0), needs_reference=True)

    def score(self, prompts, outputs, references=None):  # type: ignore[no-untyped-def]
        assert references is not None
        return [1.0 if r and r in o else 0.0 for o, r in zip(outputs, references, strict=True)]


def scorers(name: str) -> Scorer:
    return {"refusal": RefusalJudge(), "embedding_similarity": ContainsReference()}[name]


class ScriptedRewriter:
    """Rewrite 0 keeps both texts; rewrite 1 keeps only the benign one (intent lost)."""

    name = "scripted"
    template = load_template("fusion_v1")

    def rewrite(self, harmful: str, benign: str, index: int, seed: int) -> tuple[str, dict]:
        text = f"{harmful} || {benign}" if index == 0 else f"Only this: {benign}"
        return text, {"scripted_index": index}


def write_prompts(path: Path, rows: list[dict[str, Any]] = PROMPTS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_config(tmp: Path, workdir: str = "run", **over: Any) -> MoraConfig:
    src = tmp / "prompts-src.jsonl"
    if not src.exists():
        write_prompts(src)
    values: dict[str, Any] = dict(workdir=str(tmp / workdir), sources=[str(src)], n_samples=4,
                                  batch_size=2, intent_check="overlap")  # fmt: skip
    values.update(over)
    return MoraConfig(**values)


def pipeline(cfg: MoraConfig, **kw: Any) -> MoraPipeline:
    return MoraPipeline(
        cfg, generator=ScriptedGenerator(), scorer_getter=scorers, rewriter=ScriptedRewriter(),
        similarity=("overlap", overlap_similarity), progress=False, **kw,
    )  # fmt: skip
