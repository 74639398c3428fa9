"""Preference data: loaders that turn public sets into DPO pairs, with deterministic splits.

Every loader returns ``(pairs, report)``: the :class:`PreferencePair` list and a :class:`DataReport`
naming each row that could not be used with its line (or item) number and the reason, so nothing is
dropped silently. Pairs hold the prompt as chat messages, so TRL's conversational format renders
them with the base model's own chat template.

Sources (see ``data/MANIFEST.md``):

* harmless: Anthropic hh-rlhf harmless-base, dialogues ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``;
  the shared turns are the prompt, the two final assistant turns are chosen / rejected.
* truthful: TruthfulQA (best answer vs each incorrect answer, grouped by question) and HaluEval
  QA (right vs hallucinated answer, the knowledge passage given as context).
* helpful: AlpacaEval GPT-4-turbo annotations (``preference`` 1.0 = ``output_1`` preferred,
  2.0 = ``output_2``; ties are reported, not used).
* any JSONL of ``{"prompt", "chosen", "rejected"}`` (the MORA output); ``prompt`` is a string
  or a list of chat messages.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prefvec.errors import NotFoundError, ValidationError

logger = logging.getLogger(__name__)

Message = dict[str, str]
PREFERENCES = ("helpful", "harmless", "truthful")
# validation share of the helpful (AlpacaEval) split, seed 0: the helpful vector's held-out pairs,
# which no other training set (the refusal set's benign prompts) may draw from
HELPFUL_VAL_FRACTION = 0.15
# validation share of the truthful (TruthfulQA) split, seed 0, keyed by question: the held-out
# questions of `truthfulqa_mc1_heldout`
TRUTHFUL_VAL_FRACTION = 0.3
_TURN_RE = re.compile(r"\n\n(Human|Assistant): ")


@dataclass(frozen=True)
class PreferencePair:
    """One DPO example: chat prompt, preferred and dispreferred assistant replies.

    Attributes:
        prompt: chat messages before the reply (``[{"role": "user", "content": ...}, ...]``).
        chosen: the preferred reply text.
        rejected: the dispreferred reply text.
        group: the key that decides the train/validation split (the question or prompt), so
            every pair of one question lands on the same side.
        source: file and line/item it came from, e.g. ``"TruthfulQA.csv:12"``.
        kind: the row's optional ``kind`` label (the refusal sets: ``harmful``, ``benign``,
            ``benign_risky``), for selecting rows (a RACO job's ``data_kinds``).
    """

    prompt: list[Message]
    chosen: str
    rejected: str
    group: str = ""
    source: str = ""
    kind: str = ""

    @property
    def messages(self) -> list[Message]:
        """The prompt as a list of ``{"role", "content"}`` dicts."""
        return [dict(m) for m in self.prompt]

    def swapped(self) -> PreferencePair:
        """The same pair with chosen and rejected exchanged (for θ−)."""
        return replace(self, chosen=self.rejected, rejected=self.chosen)

    def to_trl(self) -> dict[str, Any]:
        """TRL's conversational preference format."""
        return {
            "prompt": self.messages,
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
        }


def make_pair(
    messages: Sequence[Message],
    chosen: str,
    rejected: str,
    group: str = "",
    source: str = "",
    kind: str = "",
) -> PreferencePair:
    """Build a :class:`PreferencePair`; the split group defaults to the prompt's JSON."""
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages]
    key = group or json.dumps(prompt, sort_keys=True)
    return PreferencePair(prompt, chosen, rejected, group=key, source=source, kind=kind)


@dataclass
class DataReport:
    """What a loader read: rows seen, pairs made, and every unusable row with its reason."""

    source: str
    rows: int = 0
    pairs: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)

    def add_bad(self, line: int, reason: str) -> None:
        self.bad.append((line, reason))

    def summary(self) -> str:
        """One line: ``"<source>: 2312 rows -> 2300 pairs, 12 bad (line 7: ...; ...)"``."""
        head = f"{self.source}: {self.rows} rows -> {self.pairs} pairs, {len(self.bad)} bad"
        if self.bad:
            shown = "; ".join(f"line {n}: {r}" for n, r in self.bad[:5])
            more = f"; ... {len(self.bad) - 5} more" if len(self.bad) > 5 else ""
            head += f" ({shown}{more})"
        return head

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "rows": self.rows, "pairs": self.pairs, "bad": self.bad}


# ------------------------------------------------------------------------------------ reading


def _open_text(path: Path) -> io.TextIOBase:
    if not path.is_file():
        raise NotFoundError(f"data file {str(path)!r} not found", field="data")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _json_lines(path: Path, report: DataReport) -> Iterator[tuple[int, Any]]:
    """``(line number, object)`` per non-empty line; undecodable lines go to the report."""
    with _open_text(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            report.rows += 1
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                report.add_bad(n, f"invalid JSON ({exc.msg})")


def _json_items(path: Path, report: DataReport) -> Iterator[tuple[int, Any]]:
    """Items of a JSON array (numbered from 1), or of a JSONL file when it is not an array."""
    with _open_text(path) as f:
        text = f.read()
    if text.lstrip().startswith("["):
        items = json.loads(text)
        report.rows += len(items)
        yield from enumerate(items, start=1)
    else:
        yield from _json_lines(path, report)


def _text(obj: Any, key: str) -> str | None:
    val = obj.get(key) if isinstance(obj, dict) else None
    return val.strip() if isinstance(val, str) and val.strip() else None


def _finish(pairs: list[PreferencePair], report: DataReport) -> tuple[list, DataReport]:
    report.pairs = len(pairs)
    if report.bad:
        logger.warning("%s", report.summary())
    return pairs, report


# ------------------------------------------------------------------------------------ hh-rlhf


def parse_hh_dialogue(text: str) -> list[Message]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` -> ``[{"role": "user", ...}, {"role": ...}]``."""
    parts = _TURN_RE.split(text)
    if parts[0].strip():
        raise ValueError("text before the first 'Human:' turn")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [
        {"role": roles[who], "content": body.strip()}
        for who, body in zip(parts[1::2], parts[2::2], strict=True)
    ]


def _hh_pair(obj: Any) -> tuple[list[Message], str, str]:
    chosen, rejected = _text(obj, "chosen"), _text(obj, "rejected")
    if chosen is None or rejected is None:
        raise ValueError("missing 'chosen' or 'rejected' text")
    c, r = parse_hh_dialogue("\n\n" + chosen), parse_hh_dialogue("\n\n" + rejected)
    if len(c) < 2 or len(r) < 2 or c[-1]["role"] != "assistant" or r[-1]["role"] != "assistant":
        raise ValueError("dialogue does not end with an Assistant turn")
    if c[:-1] != r[:-1]:
        raise ValueError("chosen and rejected differ before the final Assistant turn")
    if not c[-1]["content"] or not r[-1]["content"] or c[-1]["content"] == r[-1]["content"]:
        raise ValueError("final Assistant turns are empty or identical")
    return c[:-1], c[-1]["content"], r[-1]["content"]


def load_hh_rlhf(path: str | Path) -> tuple[list[PreferencePair], DataReport]:
    """Anthropic hh-rlhf (JSONL, maybe gzipped): shared turns = prompt, last turns = replies."""
    path = Path(path)
    report, pairs = DataReport(str(path)), []
    for n, obj in _json_lines(path, report):
        try:
            msgs, chosen, rejected = _hh_pair(obj)
        except ValueError as exc:
            report.add_bad(n, str(exc))
            continue
        pairs.append(make_pair(msgs, chosen, rejected, source=f"{path.name}:{n}"))
    return _finish(pairs, report)


# ------------------------------------------------------------------------------------ truthful


def load_truthfulqa(
    path: str | Path, max_incorrect: int | None = None
) -> tuple[list[PreferencePair], DataReport]:
    """TruthfulQA.csv: per question, (Best Answer, each Incorrect Answer); grouped by question.

    Args:
        path: the CSV (columns Question, Best Answer, Incorrect Answers ';'-separated).
        max_incorrect: keep at most this many incorrect answers per question (in file order).
    """
    path = Path(path)
    report, pairs = DataReport(str(path)), []
    with _open_text(path) as f:
        for n, row in enumerate(csv.DictReader(f), start=2):  # line 1 is the header
            report.rows += 1
            question, best = _text(row, "Question"), _text(row, "Best Answer")
            wrong = [a.strip() for a in (row.get("Incorrect Answers") or "").split(";")]
            wrong = [a for a in wrong if a and a != best][:max_incorrect]
            if question is None or best is None or not wrong:
                report.add_bad(n, "missing Question, Best Answer or Incorrect Answers")
                continue
            msgs = [{"role": "user", "content": question}]
            for bad in wrong:
                pairs.append(make_pair(msgs, best, bad, group=question, source=f"{path.name}:{n}"))
    return _finish(pairs, report)


def load_halueval_qa(path: str | Path) -> tuple[list[PreferencePair], DataReport]:
    """HaluEval QA (JSONL): right vs hallucinated answer; the knowledge passage is the context."""
    path = Path(path)
    report, pairs = DataReport(str(path)), []
    for n, obj in _json_lines(path, report):
        q, know = _text(obj, "question"), _text(obj, "knowledge")
        right, wrong = _text(obj, "right_answer"), _text(obj, "hallucinated_answer")
        if q is None or right is None or wrong is None or right == wrong:
            report.add_bad(n, "missing question/right_answer/hallucinated_answer, or equal answers")
            continue
        content = f"{know}\n\nQuestion: {q}" if know else q
        msgs = [{"role": "user", "content": content}]
        pairs.append(make_pair(msgs, right, wrong, group=q, source=f"{path.name}:{n}"))
    return _finish(pairs, report)


# ------------------------------------------------------------------------------------ helpful


def load_alpaca_eval(path: str | Path) -> tuple[list[PreferencePair], DataReport]:
    """AlpacaEval annotations: ``preference`` 1 -> output_1 chosen, 2 -> output_2; ties reported."""
    path = Path(path)
    report, pairs = DataReport(str(path)), []
    for n, obj in _json_items(path, report):
        inst, o1, o2 = _text(obj, "instruction"), _text(obj, "output_1"), _text(obj, "output_2")
        try:
            pref = float(obj.get("preference"))
        except (TypeError, ValueError):
            pref = float("nan")
        if inst is None or o1 is None or o2 is None or pref not in (1.0, 2.0) or o1 == o2:
            why = f"preference {obj.get('preference')!r}" if inst and o1 and o2 else "missing text"
            report.add_bad(n, f"no usable pair ({why}; needs 1 or 2 and two different outputs)")
            continue
        chosen, rejected = (o1, o2) if pref == 1.0 else (o2, o1)
        msgs = [{"role": "user", "content": inst}]
        pairs.append(make_pair(msgs, chosen, rejected, group=inst, source=f"{path.name}:{n}"))
    return _finish(pairs, report)


# ------------------------------------------------------------------------------------ JSONL


def _prompt_messages(prompt: Any) -> list[Message]:
    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt:
        ok = all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in prompt
        )
        if ok:
            return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise ValueError("'prompt' must be a non-empty string or a list of {role, content} messages")


def load_jsonl_pairs(path: str | Path) -> tuple[list[PreferencePair], DataReport]:
    """Any JSONL of ``{"prompt", "chosen", "rejected"}`` (prompt: string or chat messages).

    An optional string ``group`` keeps rows together in the train/validation split (rephrasings
    of one request); without it each prompt is its own group. An optional string ``kind`` is
    kept on the pair (see :attr:`PreferencePair.kind`).
    """
    path = Path(path)
    report, pairs = DataReport(str(path)), []
    for n, obj in _json_lines(path, report):
        if not isinstance(obj, dict):
            report.add_bad(n, f"expected a JSON object, got {type(obj).__name__}")
            continue
        chosen, rejected = _text(obj, "chosen"), _text(obj, "rejected")
        try:
            msgs = _prompt_messages(obj.get("prompt"))
            if chosen is None or rejected is None:
                raise ValueError("'chosen' and 'rejected' must be non-empty strings")
            if chosen == rejected:
                raise ValueError("'chosen' equals 'rejected'")
        except ValueError as exc:
            report.add_bad(n, str(exc))
            continue
        raw_group = obj.get("group")
        group = raw_group if isinstance(raw_group, str) else ""
        raw_kind = obj.get("kind")
        kind = raw_kind if isinstance(raw_kind, str) else ""
        pairs.append(
            make_pair(msgs, chosen, rejected, group=group, source=f"{path.name}:{n}", kind=kind)
        )
    return _finish(pairs, report)


# ------------------------------------------------------------------------------------ registry


def default_data_dir() -> Path:
    """``$PREFVEC_DATA_DIR``, else the repo's ``data/`` folder (bundled copies of the sets)."""
    env = os.environ.get("PREFVEC_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "data"


def _find(data_dir: Path, *candidates: str) -> Path:
    for rel in candidates:
        if (data_dir / rel).is_file():
            return data_dir / rel
    raise NotFoundError(
        f"none of {list(candidates)} found under `data_dir` {str(data_dir)!r}", field="data_dir"
    )


def default_sources(preference: str, data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """``[(loader name, path), ...]`` of the bundled data for a named preference."""
    root = Path(data_dir) if data_dir else default_data_dir()
    if preference == "harmless":
        return [("hh-rlhf", _find(root, "hh-rlhf/harmless-base/test.jsonl.gz"))]
    if preference == "truthful":
        return [
            ("truthfulqa", _find(root, "truthfulqa/TruthfulQA.csv")),
            ("halueval-qa", _find(root, "halueval/qa_one-turn_data.json")),
        ]
    if preference == "helpful":
        return [
            (
                "alpaca-eval",
                _find(root, "alpaca_eval/annotations.json.gz", "alpaca_eval/annotations.json"),
            )
        ]
    raise ValidationError(
        f"`preference` {preference!r} has no bundled data; known: {list(PREFERENCES)} "
        "(pass --data file.jsonl for others)",
        field="preference",
    )


LOADERS = {
    "hh-rlhf": load_hh_rlhf,
    "truthfulqa": load_truthfulqa,
    "halueval-qa": load_halueval_qa,
    "alpaca-eval": load_alpaca_eval,
    "jsonl": load_jsonl_pairs,
}


def guess_loader(path: Path) -> str:
    """The loader for a file by its name (hh-rlhf, TruthfulQA, HaluEval, AlpacaEval, else JSONL)."""
    name = str(path).lower()
    for key, loader in (
        ("hh-rlhf", "hh-rlhf"),
        ("truthfulqa.csv", "truthfulqa"),
        ("qa_one-turn", "halueval-qa"),
        ("annotations.json", "alpaca-eval"),
    ):
        if key in name:
            return loader
    return "jsonl"


def load_preference_data(
    preference: str,
    data: Sequence[str | Path] = (),
    data_dir: str | Path | None = None,
    strict: bool = False,
) -> tuple[list[PreferencePair], list[DataReport]]:
    """All pairs for one preference: the given files, or the bundled sources when none given.

    Args:
        preference: ``helpful``, ``harmless``, ``truthful`` (bundled) or any name with ``data``.
        data: files to read (loader chosen by file name; anything else is read as JSONL pairs).
        data_dir: folder of the bundled sets (default: the repo's ``data/``).
        strict: raise :class:`ValidationError` listing the bad rows instead of reporting them.
    """
    sources = (
        [(guess_loader(Path(p)), Path(p)) for p in data]
        if data
        else default_sources(preference, data_dir)
    )
    pairs: list[PreferencePair] = []
    reports = []
    for loader, path in sources:
        got, report = LOADERS[loader](path)
        pairs += got
        reports.append(report)
    problems = [f"{r.source} line {n}: {why}" for r in reports for n, why in r.bad]
    if strict and problems:
        raise ValidationError(
            f"{len(problems)} bad rows in the data", problems=problems, field="data"
        )
    if not pairs:
        raise ValidationError(f"no usable pairs for `preference` {preference!r}", field="data")
    return pairs, reports


# ------------------------------------------------------------------------------------ splits


def split_bucket(key: str, seed: int = 0) -> float:
    """A stable number in [0, 1) from sha256(seed, key): the same key always lands the same way."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_pairs(
    pairs: Iterable[PreferencePair], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Deterministic (train, validation) split by a hash of each pair's group (prompt/question).

    All pairs of a group fall on the same side, independent of file order and of other rows.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValidationError(
            f"`val_fraction` must be in [0, 1), got {val_fraction}", field="val_fraction"
        )
    train: list[PreferencePair] = []
    val: list[PreferencePair] = []
    for p in pairs:
        (val if split_bucket(p.group, seed) < val_fraction else train).append(p)
    return train, val


def data_hash(pairs: Iterable[PreferencePair]) -> str:
    """sha256 over the pairs' content in order (prompt messages, chosen, rejected)."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p.messages, p.chosen, p.rejected], sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


def write_jsonl(pairs: Iterable[PreferencePair], path: str | Path) -> Path:
    """Write pairs as ``{"prompt": messages, "chosen", "rejected"}`` JSONL (readable back)."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            row = {"prompt": p.messages, "chosen": p.chosen, "rejected": p.rejected}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
