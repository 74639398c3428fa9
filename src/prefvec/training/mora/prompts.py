"""Prompt records and their sources.

A record is ``{id, text, intents, reference, source}``: ``intents`` lists what the prompt asks for
(``harmful``: a request to refuse; ``benign``: a legitimate need to serve), ``reference`` a good
reply to its benign part (or ``None``).

Built-in sources (training side only, so the evaluation suites stay unseen):

* ``advbench-train``: AdvBench harmful behaviours whose ``split_bucket(text, seed=0) >= 0.5`` (the
  evaluation suite samples only bucket < 0.5); intent ``harmful``, no reference.
* ``alpaca-train``: AlpacaEval instructions on the training side of
  :func:`prefvec.training.data.split_pairs` (defaults, as the helpful loader splits them); intent
  ``benign``, reference = the chosen reply of the instruction's first pair.

Any other source is read as a JSONL file of records.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefvec.errors import ValidationError

HARMFUL, BENIGN = "harmful", "benign"
BUILTIN_SOURCES = ("advbench-train", "alpaca-train")


@dataclass(frozen=True)
class PromptRecord:
    """One prompt of a MORA run (an original or a fused rewrite)."""

    id: str
    text: str
    intents: list[str] = field(default_factory=list)
    reference: str | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> PromptRecord:
        return cls(
            id=str(obj["id"]),
            text=str(obj["text"]),
            intents=list(obj.get("intents") or []),
            reference=obj.get("reference"),
            source=str(obj.get("source") or ""),
        )

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.text}]


def short_hash(text: str, n: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def advbench_train(eval_data_dir: str | None = None) -> list[PromptRecord]:
    """AdvBench behaviours of the training half (the evaluation suite uses the other half)."""
    from prefvec.evaluation.data import eval_data_dir as resolve
    from prefvec.evaluation.data import load_advbench

    items = load_advbench(resolve(eval_data_dir), part="train")
    return [PromptRecord(it.id, it.prompt, [HARMFUL], None, "advbench-train") for it in items]


def alpaca_train(data_dir: str | None = None) -> list[PromptRecord]:
    """AlpacaEval instructions on the training side of ``split_pairs``, one per instruction."""
    from prefvec.training.data import default_sources, load_alpaca_eval, split_pairs

    (_, path), *_ = default_sources("helpful", data_dir)
    pairs, _ = load_alpaca_eval(path)
    train, _ = split_pairs(pairs)
    seen: dict[str, PromptRecord] = {}
    for p in train:
        text = p.prompt[-1]["content"]
        if text not in seen:
            seen[text] = PromptRecord(
                f"alpaca-{short_hash(text)}", text, [BENIGN], p.chosen, "alpaca-train"
            )
    return list(seen.values())


def read_records(path: str | Path) -> list[PromptRecord]:
    """A JSONL file of prompt records; every bad line is named in one error."""
    path = Path(path)
    if not path.is_file():
        raise ValidationError(
            f"`sources` item {str(path)!r} is neither {list(BUILTIN_SOURCES)} nor a file",
            field="sources",
        )
    records, problems = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj.get("text"), str) or not obj["text"].strip():
                raise ValueError("'text' must be a non-empty string")
            obj.setdefault("id", f"{path.stem}-{n}")
            obj.setdefault("source", path.name)
            records.append(PromptRecord.from_dict(obj))
        except (ValueError, AttributeError, KeyError) as exc:
            problems.append(f"{path.name} line {n}: {exc}")
    if problems:
        raise ValidationError(
            f"{len(problems)} bad prompt records", problems=problems, field="sources"
        )
    return records


def load_source(name: str, data_dir: str | None = None, eval_data_dir: str | None = None) -> list:
    """The records of one source (built-in name or JSONL path)."""
    if name == "advbench-train":
        return advbench_train(eval_data_dir)
    if name == "alpaca-train":
        return alpaca_train(data_dir)
    return read_records(name)


def load_prompts(
    sources: list[str],
    limit_per_source: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    eval_data_dir: str | None = None,
) -> list[PromptRecord]:
    """Every source's records (fixed-seed subsample per source), ids checked unique."""
    from prefvec.evaluation.data import subsample

    out: list[PromptRecord] = []
    for name in sources:
        out += subsample(load_source(name, data_dir, eval_data_dir), limit_per_source, seed)
    ids = [r.id for r in out]
    dup = sorted(i for i, c in Counter(ids).items() if c > 1)
    if dup:
        raise ValidationError(f"prompt ids must be unique, repeated: {dup[:10]}", field="sources")
    return out
