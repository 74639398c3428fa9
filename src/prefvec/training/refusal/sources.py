"""Prompt sources of the refusal-preference set, and the held-out contamination check.

Harmful requests come from the AdvBench *training* half only (the half that
:func:`prefvec.evaluation.data.load_advbench` calls ``train``; the evaluation half is never read
here), plus, from template v5 on, harmful requests written for this set (kinds AdvBench has few
of) and pasted passages with a harmful or a benign instruction. Benign requests come from
AlpacaEval (only prompts on the *training* side of the helpful split, so the helpful vector's
validation prompts stay unseen), MT-Bench first turns, and the benign-but-risky-sounding prompts
written for this set (in the versioned template file).

Never read: HarmBench, JailbreakBench, Do-Not-Answer, XSTest, BIG-bench HHH. They are only
*compared against* (:func:`contamination`), so that a prompt written here that is too close to a
held-out one is dropped and reported.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prefvec.errors import NotFoundError
from prefvec.training.refusal.templates import ContextItem

_STOP_WORDS = (
    "a an the i me my you your we our to of in on at for with and or is are was were be do does "
    "did how what why where when who which can could should would will it its this that some "
    "best way ways there their them they so if not no from as by about into out up"
)
_STOP = frozenset(_STOP_WORDS.split())


@dataclass(frozen=True)
class SourcePrompt:
    """One request of the set before replies are attached.

    Attributes:
        id: stable id (``advbench-17``, ``alpaca-203``, ``mtbench-81``, ``risky-4``).
        text: the user request.
        kind: ``harmful``, ``benign`` or ``benign_risky``.
        source: where it came from (file and row / item number).
        target: AdvBench's affirmative target ("Sure, here is ..."), else ``""``.
        reference: a reference answer for benign prompts (AlpacaEval output_1), else ``""``.
    """

    id: str
    text: str
    kind: str
    source: str
    target: str = ""
    reference: str = ""


def advbench_train(eval_root: Path) -> list[SourcePrompt]:
    """AdvBench behaviours of the training half (``advbench_is_eval`` false), with targets."""
    import csv

    from prefvec.evaluation.data import advbench_is_eval

    path = eval_root / "advbench" / "harmful_behaviors.csv"
    if not path.is_file():
        raise NotFoundError(f"AdvBench file {str(path)!r} is missing", field="eval_data_dir")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [
        SourcePrompt(f"advbench-{i}", r["goal"], "harmful", f"{path.name}:row {i + 2}", r["target"])
        for i, r in enumerate(rows)
        if not advbench_is_eval(r["goal"])
    ]


def alpaca_train(data_dir: Path, max_chars: int = 300) -> list[SourcePrompt]:
    """AlpacaEval instructions on the training side of the helpful split, at most ``max_chars``."""
    from prefvec.training.data import HELPFUL_VAL_FRACTION, split_bucket

    path = data_dir / "alpaca_eval" / "annotations.json.gz"
    if not path.is_file():
        raise NotFoundError(f"AlpacaEval file {str(path)!r} is missing", field="data_dir")
    items = json.loads(gzip.decompress(path.read_bytes()))
    out = []
    for i, it in enumerate(items, start=1):
        inst = (it.get("instruction") or "").strip()
        # the helpful split: split_pairs(val_fraction=HELPFUL_VAL_FRACTION, seed=0) by instruction
        if not inst or len(inst) > max_chars or split_bucket(inst, 0) < HELPFUL_VAL_FRACTION:
            continue
        ref = (it.get("output_1") or "").strip()
        out.append(SourcePrompt(f"alpaca-{i}", inst, "benign", f"{path.name}:item {i}", "", ref))
    return out


def mt_bench(data_dir: Path, max_chars: int = 300) -> list[SourcePrompt]:
    """MT-Bench first turns (80 questions), at most ``max_chars`` long."""
    path = data_dir / "mt_bench" / "question.jsonl"
    if not path.is_file():
        raise NotFoundError(f"MT-Bench file {str(path)!r} is missing", field="data_dir")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        q = json.loads(line)
        text = q["turns"][0].strip()
        if len(text) <= max_chars:
            out.append(
                SourcePrompt(f"mtbench-{q['question_id']}", text, "benign", f"{path.name}:{n}")
            )
    return out


def risky_benign(prompts: Sequence[str], version: str) -> list[SourcePrompt]:
    """The benign-but-risky-sounding prompts of the template file."""
    return [
        SourcePrompt(f"risky-{i}", t, "benign_risky", f"templates/{version}.json:{i}")
        for i, t in enumerate(prompts)
    ]


def written_harmful(prompts: Sequence[str], version: str) -> list[SourcePrompt]:
    """The harmful requests written for the template file (no AdvBench target: their
    *rejected* reply must be the model's own compliance)."""
    return [
        SourcePrompt(f"written-{i}", t, "harmful", f"templates/{version}.json:harmful_prompts {i}")
        for i, t in enumerate(prompts)
    ]


def contextual(items: Sequence[ContextItem], version: str) -> list[SourcePrompt]:
    """Each passage of the template file with its harmful and its benign instructions."""
    out = []
    for i, item in enumerate(items):
        for kind, label in (("harmful", "harmful"), ("benign", "benign_risky")):
            for j, text in enumerate(item.prompts(kind)):
                src = f"templates/{version}.json:contextual {i} {kind} {j}"
                out.append(SourcePrompt(f"context-{i}-{kind}-{j}", text, label, src))
    return out


# --------------------------------------------------------------------------- contamination


def content_words(text: str) -> frozenset[str]:
    """Lower-cased words of ``text`` without stop words."""
    return frozenset(w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in _STOP)


def heldout_prompts(eval_root: Path) -> list[str]:
    """Every prompt of the held-out suites (HarmBench, JailbreakBench, Do-Not-Answer, XSTest)."""
    from prefvec.evaluation import data as D

    items = D.load_harmbench(eval_root) + D.load_do_not_answer(eval_root)
    items += D.load_jailbreakbench(eval_root, "harmful") + D.load_jailbreakbench(
        eval_root, "benign"
    )
    items += D.load_xstest(eval_root, "safe") + D.load_xstest(eval_root, "unsafe")
    return [it.prompt for it in items]


def contamination(
    prompts: Iterable[SourcePrompt], heldout: Sequence[str], threshold: float = 0.5
) -> dict[str, tuple[float, str]]:
    """Prompts whose content-word Jaccard similarity to a held-out prompt is ``>= threshold``.

    Returns:
        ``{prompt id: (similarity, the closest held-out prompt)}`` for each prompt too close.
    """
    held = [(h, content_words(h)) for h in heldout]
    out = {}
    for p in prompts:
        words = content_words(p.text)
        if not words:
            continue
        best, text = max(
            ((len(words & w) / len(words | w), h) for h, w in held if w), default=(0, "")
        )
        if best >= threshold:
            out[p.id] = (round(best, 3), text)
    return out
