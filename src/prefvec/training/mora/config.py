"""The MORA run configuration: one dataclass, saved as ``<workdir>/config.json``.

Flags and ``--config file.yaml`` fill it (see :mod:`.cli`). Each stage hashes the
fields it and the stages before it depend on (:data:`STAGE_FIELDS`), so changing, say,
``margin`` only invalidates the ``pairs`` and ``report`` stages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from prefvec.defaults import DEFAULT_BASE
from prefvec.errors import ValidationError

STAGES = ("prompts", "rollouts", "profiles", "mine", "fuse", "pairs", "report")
CLI_STAGES = STAGES[1:]


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class MoraConfig:
    """MORA run: rollouts → reward profiles → single-reward mining → fusion → max-margin pairs."""

    workdir: str = field(default="mora-run", metadata=_h("Folder holding every stage's files."))
    sources: list[str] = field(
        default_factory=lambda: ["advbench-train", "alpaca-train"],
        metadata=_h("Prompt sources: advbench-train, alpaca-train, or JSONL files of records."),
    )
    limit_per_source: int | None = field(
        default=None, metadata=_h("Fixed-seed subsample of at most this many prompts per source.")
    )
    data_dir: str | None = field(default=None, metadata=_h("Training data folder (data/)."))
    eval_data_dir: str | None = field(default=None, metadata=_h("eval_data/ folder (AdvBench)."))
    seed: int = field(default=0, metadata=_h("Run seed (subsampling, sampling, partner picks)."))
    # ---------------------------------------------------------------- generation
    base: str = field(default=DEFAULT_BASE, metadata=_h("In-process base model spec."))
    weights: list[str] = field(
        default_factory=lambda: [],
        metadata=_h("Preference vectors merged in (name=w); sent as preferences to a server."),
    )
    store_dir: str | None = field(default=None, metadata=_h("Local vector store root."))
    vectors_dir: str | None = field(default=None, metadata=_h("Folder of loose vector files."))
    dtype: str = field(default="float32", metadata=_h("In-process dtype."))
    device: str = field(default="cpu", metadata=_h("In-process device."))
    url: str | None = field(
        default=None, metadata=_h("OpenAI-compatible server for rollouts (else in process).")
    )
    model: str | None = field(default=None, metadata=_h("`model` field sent to the server."))
    concurrency: int = field(default=4, metadata=_h("Server requests in flight."))
    n_samples: int = field(default=8, metadata=_h("Rollouts per prompt (paper: 16/32/64)."))
    temperature: float = field(default=1.0, metadata=_h("Sampling temperature."))
    top_p: float = field(default=0.95, metadata=_h("Nucleus sampling mass."))
    max_new_tokens: int = field(default=128, metadata=_h("Longest rollout, in tokens."))
    batch_size: int = field(default=4, metadata=_h("Prompts handled per step."))
    # ---------------------------------------------------------------- scoring
    dimensions: list[str] = field(
        default_factory=lambda: ["harmless", "helpful"],
        metadata=_h("Reward dimensions: built-in names, or name=<registry scorer>."),
    )
    good: float = field(default=0.5, metadata=_h("A dimension is reached at this score."))
    mine_unreached: bool = field(
        default=False,
        metadata=_h("Also mine prompts whose rollouts reach no dimension (as 'none')."),
    )
    # ---------------------------------------------------------------- fusion
    rewriter: str = field(default="template", metadata=_h("Rewriter: template or llm."))
    rewrites_per_prompt: int = field(default=2, metadata=_h("Rewrites per mined prompt."))
    template: str = field(default="fusion_v1", metadata=_h("Template-rewriter template."))
    llm_template: str = field(default="fusion_llm_v1", metadata=_h("LLM-rewriter template."))
    rewrite_url: str | None = field(
        default=None, metadata=_h("OpenAI-compatible server of the llm rewriter (default --url).")
    )
    rewrite_model: str | None = field(default=None, metadata=_h("`model` of the llm rewriter."))
    rewrite_temperature: float = field(default=0.7, metadata=_h("llm rewriter temperature."))
    rewrite_max_tokens: int = field(default=256, metadata=_h("llm rewriter reply length."))
    intent_check: str = field(
        default="auto",
        metadata=_h("Intent check: embedding, overlap, or auto (embedding when installed)."),
    )
    min_intent_sim: float = field(
        default=0.5, metadata=_h("Keep a rewrite when its similarity to every parent is >= this.")
    )
    # ---------------------------------------------------------------- pairs
    margin: float = field(default=0.3, metadata=_h("Least aggregate-reward gap of a kept pair."))
    reward_weights: list[str] = field(
        default_factory=lambda: [], metadata=_h("Aggregate weights dim=w (default: equal).")
    )
    include_original: bool = field(
        default=False, metadata=_h("Also mine pairs from the original prompts' rollouts.")
    )

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ValidationError(
                f"invalid MORA config: {'; '.join(problems)}", problems=problems, field="config"
            )

    def _problems(self) -> list[str]:
        p = []
        for name in ("n_samples", "max_new_tokens", "batch_size", "concurrency"):
            if getattr(self, name) < 1:
                p.append(f"`{name}` must be >= 1, got {getattr(self, name)}")
        if self.rewrites_per_prompt < 1:
            p.append(f"`rewrites_per_prompt` must be >= 1, got {self.rewrites_per_prompt}")
        if self.limit_per_source is not None and self.limit_per_source < 1:
            p.append(f"`limit_per_source` must be >= 1, got {self.limit_per_source}")
        for name in ("temperature", "good", "margin", "min_intent_sim", "top_p"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                p.append(f"`{name}` must be finite and >= 0, got {v}")
        if not 0 < self.top_p <= 1:
            p.append(f"`top_p` must be in (0, 1], got {self.top_p}")
        if self.rewriter not in ("template", "llm"):
            p.append(f"`rewriter` must be 'template' or 'llm', got {self.rewriter!r}")
        if self.intent_check not in ("auto", "embedding", "overlap"):
            p.append(
                f"`intent_check` must be auto, embedding or overlap, got {self.intent_check!r}"
            )
        if not self.sources:
            p.append("`sources` must name at least one prompt source")
        if not self.dimensions:
            p.append("`dimensions` must name at least one dimension")
        try:
            self.weight_map()
            self.reward_weight_map()
        except ValidationError as exc:
            p.append(exc.message)
        return p

    def weight_map(self) -> dict[str, float]:
        """``weights`` as ``{vector: w}``."""
        return parse_assignments(self.weights, "weights")

    def reward_weight_map(self) -> dict[str, float]:
        """``reward_weights`` as ``{dimension: w}``; dimensions not named weigh 1."""
        return parse_assignments(self.reward_weights, "reward_weights")

    def dimension_names(self) -> list[str]:
        """The dimension names, in order (``helpful=llm_judge_helpful`` -> ``helpful``)."""
        return [d.split("=", 1)[0] for d in self.dimensions]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def stage_hash(self, stage: str) -> str:
        """sha256 of the fields ``stage`` and every earlier stage depend on."""
        names = [n for s in STAGES[: STAGES.index(stage) + 1] for n in STAGE_FIELDS[s]]
        values = {n: getattr(self, n) for n in names}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


GENERATION_FIELDS = (
    "base",
    "weights",
    "store_dir",
    "vectors_dir",
    "dtype",
    "url",
    "model",
    "n_samples",
    "temperature",
    "top_p",
    "max_new_tokens",
    "seed",
)
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "prompts": ("sources", "limit_per_source", "data_dir", "eval_data_dir", "seed"),
    "rollouts": GENERATION_FIELDS,
    "profiles": ("dimensions",),
    "mine": ("good", "mine_unreached"),
    "fuse": (
        "rewriter",
        "rewrites_per_prompt",
        "template",
        "llm_template",
        "rewrite_url",
        "rewrite_model",
        "rewrite_temperature",
        "rewrite_max_tokens",
        "intent_check",
        "min_intent_sim",
    ),
    "pairs": ("margin", "reward_weights", "include_original"),
    "report": (),
}


def parse_assignments(items: list[str], field_name: str) -> dict[str, float]:
    """``["a=0.5", "b=1"]`` -> ``{"a": 0.5, "b": 1.0}``; every bad item is named at once."""
    out: dict[str, float] = {}
    bad = []
    for item in items:
        key, sep, val = item.partition("=")
        try:
            w = float(val)
        except ValueError:
            w = math.nan
        if not sep or not key or not math.isfinite(w):
            bad.append(item)
            continue
        out[key] = w
    if bad:
        raise ValidationError(
            f"`{field_name}` items must be name=<finite number>, got {bad}", field=field_name
        )
    return out
