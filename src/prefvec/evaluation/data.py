"""Evaluation items read from ``eval_data/`` (prompts, multiple-choice questions, preference pairs).

Every loader returns items with a stable ``id``; :func:`subsample` draws a fixed-seed subset so two
runs with the same ``limit`` and ``seed`` see the same items in the same order.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from prefvec.errors import NotFoundError

Message = dict[str, str]
T = TypeVar("T")


@dataclass(frozen=True)
class PromptItem:
    """One prompt to generate a reply for (refusal / over-refusal suites)."""

    id: str
    prompt: str


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question: ``labels[i]`` is 1 for a correct choice, else 0."""

    id: str
    prompt: str
    choices: list[str]
    labels: list[int]


@dataclass(frozen=True)
class PairItem:
    """One preference pair: chat ``messages`` before the reply, chosen and rejected replies."""

    id: str
    messages: list[Message] = field(default_factory=list)
    chosen: str = ""
    rejected: str = ""


def repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def eval_data_dir(data_dir: str | Path | None = None) -> Path:
    """``data_dir``, else ``$PREFVEC_EVAL_DATA``, else the repo's ``eval_data/``."""
    root = Path(data_dir or os.environ.get("PREFVEC_EVAL_DATA") or repo_root() / "eval_data")
    if not root.is_dir():
        raise NotFoundError(
            f"`data_dir` {str(root)!r} is not a folder (expected the repo's eval_data/)",
            field="data_dir",
        )
    return root


def _file(root: Path, rel: str) -> Path:
    path = root / rel
    if not path.is_file():
        raise NotFoundError(f"evaluation file {str(path)!r} is missing", field="data_dir")
    return path


def subsample(items: Sequence[T], limit: int | None, seed: int = 0) -> list[T]:
    """Up to ``limit`` items drawn without replacement with ``random.Random(seed)``, in order."""
    if limit is None or limit >= len(items):
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -------------------------------------------------------------------------------- multiple choice


def load_bigbench_hhh(root: Path, subset: str) -> list[MCItem]:
    """BIG-bench HHH alignment ``subset`` (helpful / harmless / honest): 2 replies, 1 preferred."""
    task = json.loads(_file(root, f"bigbench_hhh_alignment/{subset}/task.json").read_text())
    items = []
    for i, ex in enumerate(task["examples"]):
        choices = list(ex["target_scores"])
        items.append(MCItem(
            id=f"{subset}-{i}", prompt=ex["input"].strip(), choices=choices,
            labels=[int(ex["target_scores"][c]) for c in choices],
        ))  # fmt: skip
    return items


def load_truthfulqa_mc(root: Path, targets: str, heldout: bool = False) -> list[MCItem]:
    """TruthfulQA multiple choice: ``targets`` is ``mc1_targets`` (one true) or ``mc2_targets``.

    With ``heldout``, only questions on the validation side of the truthful vector's split
    (``TRUTHFUL_VAL_FRACTION``, seed 0, keyed by question): the truthful vector trains on the
    other side of TruthfulQA, so the full suite includes questions it was trained on.
    """
    from prefvec.training.data import TRUTHFUL_VAL_FRACTION, split_bucket

    rows = json.loads(_file(root, "truthfulqa/mc_task.json").read_text())
    return [
        MCItem(id=f"tqa-{i}", prompt=r["question"].strip(), choices=list(r[targets]),
               labels=[int(v) for v in r[targets].values()])
        for i, r in enumerate(rows)
        if not heldout or split_bucket(r["question"].strip(), 0) < TRUTHFUL_VAL_FRACTION
    ]  # fmt: skip


# --------------------------------------------------------------------------------------- prompts


def advbench_is_eval(goal: str) -> bool:
    """Whether an AdvBench behaviour is on the evaluation half (``split_bucket(goal) < 0.5``).

    The other half is the training pool of MORA's harmful prompts, so a MORA-trained vector is
    never evaluated on the prompts it was rewritten from.
    """
    from prefvec.training.data import split_bucket

    return split_bucket(goal, seed=0) < 0.5


def load_advbench(root: Path, part: str = "eval") -> list[PromptItem]:
    """AdvBench behaviours of one half: ``eval`` (the suite) or ``train`` (MORA's pool)."""
    if part not in ("eval", "train"):
        raise ValueError(f"`part` must be 'eval' or 'train', got {part!r}")
    rows = _csv_rows(_file(root, "advbench/harmful_behaviors.csv"))
    want_eval = part == "eval"
    return [PromptItem(f"advbench-{i}", r["goal"]) for i, r in enumerate(rows)
            if advbench_is_eval(r["goal"]) == want_eval]  # fmt: skip


def load_harmbench(root: Path) -> list[PromptItem]:
    """HarmBench text test split, standard and contextual behaviours (context placed first).

    Copyright behaviours are left out: they are judged by hashing against the protected text,
    not by refusal.
    """
    items = []
    for r in _harmbench_rows(root):
        ctx = (r.get("ContextString") or "").strip()
        text = f"{ctx}\n\n---\n\n{r['Behavior']}" if ctx else r["Behavior"]
        items.append(PromptItem(f"harmbench-{r['BehaviorID']}", text))
    return items


def _harmbench_rows(root: Path) -> list[dict[str, str]]:
    """HarmBench text test rows without the copyright behaviours."""
    rows = _csv_rows(_file(root, "harmbench/harmbench_behaviors_text_test.csv"))
    return [r for r in rows if r["FunctionalCategory"] != "copyright"]


def harmbench_categories(root: Path) -> dict[str, tuple[str, str]]:
    """``{item id: (functional category, semantic category)}`` of the HarmBench items that
    :func:`load_harmbench` loads (``standard`` / ``contextual``; ``misinformation_disinformation``,
    ``chemical_biological``, ...)."""
    return {
        f"harmbench-{r['BehaviorID']}": (r["FunctionalCategory"], r["SemanticCategory"])
        for r in _harmbench_rows(root)
    }


def load_jailbreakbench(root: Path, kind: str) -> list[PromptItem]:
    """JBB-Behaviors ``kind`` = ``harmful`` or ``benign`` (100 goals each, row-aligned twins)."""
    rows = _csv_rows(_file(root, f"jailbreakbench/{kind}-behaviors.csv"))
    return [PromptItem(f"jbb-{kind}-{r['index']}", r["goal"]) for r in rows]


DNA_FILES = (
    "discrimination_exclusion_toxicity_hateful_offensive",
    "human_chatbox",
    "information_hazard",
    "malicious_uses",
    "misinformation_harms",
)


def load_do_not_answer(root: Path) -> list[PromptItem]:
    """Do-Not-Answer: one risky question per line in five risk-area files."""
    items = []
    for name in DNA_FILES:
        lines = _file(root, f"do-not-answer/{name}.txt").read_text(encoding="utf-8").splitlines()
        items += [
            PromptItem(f"dna-{name}-{i}", t.strip()) for i, t in enumerate(lines) if t.strip()
        ]
    return items


def load_xstest(root: Path, label: str) -> list[PromptItem]:
    """XSTest prompts with ``label`` ``safe`` (250, over-refusal) or ``unsafe`` (200 contrasts)."""
    rows = _csv_rows(_file(root, "xstest/xstest_prompts.csv"))
    return [PromptItem(f"xstest-{r['id']}", r["prompt"]) for r in rows if r["label"] == label]


# ----------------------------------------------------------------------------------------- pairs


def load_alpaca_heldout(data_dir: str | Path | None = None) -> list[PairItem]:
    """AlpacaEval pairs on the *validation* side of the helpful split (GPT-4-turbo labels).

    The split is the helpful vector's own (``HELPFUL_VAL_FRACTION``, seed 0, keyed by
    instruction), and the refusal set draws its benign prompts from the other side only, so no
    shipped vector was trained on these instructions.
    """
    from prefvec.training.data import (
        HELPFUL_VAL_FRACTION,
        default_sources,
        load_alpaca_eval,
        split_pairs,
    )

    (_, path), *_ = default_sources("helpful", data_dir)
    pairs, _ = load_alpaca_eval(path)
    _, val = split_pairs(pairs, val_fraction=HELPFUL_VAL_FRACTION)
    return [
        PairItem(id=f"alpaca-{i}", messages=p.messages, chosen=p.chosen, rejected=p.rejected)
        for i, p in enumerate(val)
    ]


def load_hh_heldout(data_dir: str | Path | None = None) -> list[PairItem]:
    """hh-rlhf harmless-base pairs on the *validation* side of the training split.

    Uses the training loader and :func:`prefvec.training.data.split_pairs` with its defaults
    (``val_fraction=0.1``, ``seed=0``), so these pairs were never trained on by a vector built
    with the default training config.
    """
    from prefvec.training.data import default_sources, load_hh_rlhf, split_pairs

    (_, path), *_ = default_sources("harmless", data_dir)
    pairs, _ = load_hh_rlhf(path)
    _, val = split_pairs(pairs)
    return [
        PairItem(id=f"hh-{i}", messages=p.messages, chosen=p.chosen, rejected=p.rejected)
        for i, p in enumerate(val)
    ]
