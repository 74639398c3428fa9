"""Versioned reply templates of the refusal-preference set (``templates/<version>.json``).

A harmful request's *chosen* reply is an opening ("I can't help with that.") plus the safe
alternative of the request's category; a benign request's *rejected* reply is an opening plus a
generic offer. Which opening a request gets is fixed by sha256(seed, request id, slot), so the
set does not depend on row order and two slots of one request get different openings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefvec.errors import NotFoundError, ValidationError

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
DEFAULT_VERSION = "refusal_v5"


@dataclass(frozen=True)
class Category:
    """A kind of harmful request: the keywords that find it and the alternative it offers."""

    name: str
    keywords: tuple[str, ...]
    alternative: str


@dataclass(frozen=True)
class ContextItem:
    """A pasted passage with harmful and benign instructions about it (template v5 on)."""

    passage: str
    harmful: tuple[str, ...]
    benign: tuple[str, ...]

    def prompts(self, kind: str) -> list[str]:
        """The passage with each instruction of ``kind`` (``harmful`` or ``benign``): the
        instruction after the passage for even positions, before it for odd ones, as people
        paste text either way."""
        out = []
        for i, ask in enumerate(self.harmful if kind == "harmful" else self.benign):
            out.append(f"{self.passage}\n\n{ask}" if i % 2 == 0 else f"{ask}\n\n{self.passage}")
        return out


@dataclass(frozen=True)
class RefusalTemplates:
    """One version of the template file, parsed (see the module docstring)."""

    version: str
    openings: tuple[str, ...]
    categories: tuple[Category, ...]
    default_alternative: str
    benign_refusal_alternative: str
    risky_benign_prompts: tuple[str, ...]
    harmful_prompts: tuple[str, ...]
    contextual: tuple[ContextItem, ...]
    question_forms: tuple[tuple[str, tuple[str, ...]], ...]
    heldout_harmful: tuple[str, ...]
    heldout_benign_risky: tuple[str, ...]
    sha256: str

    def category(self, request: str) -> Category | None:
        """The first category with a keyword in the lower-cased request, else ``None``."""
        low = request.lower()
        return next((c for c in self.categories if any(k in low for k in c.keywords)), None)

    def opening_index(self, seed: int, request_id: str, slot: int = 0) -> int:
        """Index of the opening for ``(request_id, slot)``; slots 0..n-1 get distinct ones."""
        digest = hashlib.sha256(f"{seed}\x00{request_id}".encode()).digest()
        start = int.from_bytes(digest[:4], "big") % len(self.openings)
        return (start + slot) % len(self.openings)

    def decline(self, request: str, index: int) -> tuple[str, str]:
        """(chosen refusal text, category name) for a harmful request."""
        cat = self.category(request)
        alt = cat.alternative if cat else self.default_alternative
        return f"{self.openings[index]} {alt}", cat.name if cat else "default"

    def question(self, request: str, seed: int, request_id: str) -> str | None:
        """The request rephrased as a question, as users ask ("How do I ...?"), or ``None``.

        The first rule whose pattern matches gives the form (``{x}``: its ``x`` group, first
        letter lower-cased, final full stop dropped); which of its forms is fixed by sha256(seed,
        request id). AdvBench's requests are nearly all imperatives ("Write a tutorial on how
        to ..."), while people ask questions; without this the set would teach the form of a
        request, not its intent.
        """
        import re

        for pattern, forms in self.question_forms:
            m = re.match(pattern, request.strip(), flags=re.IGNORECASE)
            if m:
                x = m.group("x").strip().rstrip(".")
                x = x[:1].lower() + x[1:]
                digest = hashlib.sha256(f"{seed}\x00{request_id}\x00q".encode()).digest()
                return forms[int.from_bytes(digest[:4], "big") % len(forms)].format(x=x)
        return None

    def benign_refusal(self, index: int) -> str:
        """The refusal used as the *rejected* reply of a benign request."""
        return f"{self.openings[index]} {self.benign_refusal_alternative}"


def load_templates(version: str = DEFAULT_VERSION) -> RefusalTemplates:
    """Read and check ``templates/<version>.json``.

    Raises:
        NotFoundError: no such version.
        ValidationError: a required key is missing or empty (all of them listed).
    """
    path = TEMPLATE_DIR / f"{version}.json"
    if not path.is_file():
        known = sorted(p.stem for p in TEMPLATE_DIR.glob("*.json"))
        raise NotFoundError(
            f"`template_version` {version!r} not found; known: {known}", field="template_version"
        )
    raw = path.read_bytes()
    data: dict[str, Any] = json.loads(raw)
    need = ("openings", "categories", "default_alternative", "benign_refusal_alternative")
    problems = [f"`{k}` is missing or empty in {path.name}" for k in need if not data.get(k)]
    if problems:
        raise ValidationError("; ".join(problems), problems=problems, field="template_version")
    held = data.get("heldout_demo_prompts", {})
    return RefusalTemplates(
        version=version,
        openings=tuple(data["openings"]),
        categories=tuple(
            Category(c["name"], tuple(c["keywords"]), c["alternative"]) for c in data["categories"]
        ),
        default_alternative=data["default_alternative"],
        benign_refusal_alternative=data["benign_refusal_alternative"],
        risky_benign_prompts=tuple(data.get("risky_benign_prompts", ())),
        harmful_prompts=tuple(data.get("harmful_prompts", ())),
        contextual=tuple(
            ContextItem(c["passage"], tuple(c["harmful"]), tuple(c["benign"]))
            for c in data.get("contextual", ())
        ),
        question_forms=tuple(
            (q["pattern"], tuple(q["forms"])) for q in data.get("question_forms", ())
        ),
        heldout_harmful=tuple(held.get("harmful", ())),
        heldout_benign_risky=tuple(held.get("benign_risky", ())),
        sha256=hashlib.sha256(raw).hexdigest(),
    )
