"""Build the refusal-preference set: when to decline, and when to help (issue 11).

Rows (JSONL, readable by ``prefvec train dpo --data``)::

    {"id", "kind", "prompt", "chosen", "rejected", "provenance": {...}}

* ``harmful`` (AdvBench training half; from templates v5 on also requests and pasted passages
  with a harmful instruction written for this set): *chosen* = a brief decline with a safe
  alternative (versioned template); *rejected* = compliance: the bundled model's own greedy reply
  (self-generated) when ``harmful`` is in ``self_kinds``, else (or where the model itself declined)
  AdvBench's "Sure, here is ..." target; a written request with neither is skipped.
  ``chosen_per_harmful`` pairs per request, distinct openings.
* ``benign`` (AlpacaEval training side, MT-Bench) and ``benign_risky`` (written for this set):
  *chosen* = a helpful answer: the model's own greedy reply when the kind is in ``self_kinds``,
  else (or where the model declined) AlpacaEval's reference ``output_1``; rows with neither
  (MT-Bench, benign-risky) are skipped and listed in the manifest. *rejected* = a refusal
  (template).

Why templates for the refusals: the 135M base does not decline under an instruction to (it
complies with the request instead), so self-generated refusals would need filtering down to few
rows; fixed, versioned declines carry the signal exactly. Self-generation is used where the
model's own words are what DPO should move (its compliance, its answers). On the shared 2-core
machine greedy generation ran at about a minute per batch of 8 × 80 tokens, so the committed set
self-generates only the benign-risky answers (``--self-kinds benign_risky``), which have no
reference text; its manifest records this.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefvec.errors import ValidationError
from prefvec.training.refusal import sources as S
from prefvec.training.refusal.templates import DEFAULT_VERSION, RefusalTemplates, load_templates

logger = logging.getLogger(__name__)
Generate = Callable[[Sequence[str]], list[str]]
KINDS = ("harmful", "benign", "benign_risky")


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class RefusalDataConfig:
    """Settings of ``prefvec data refusal`` (each field is a flag)."""

    out: str = field(
        default="data/refusal/refusal_v5.jsonl", metadata=_h("JSONL to write (manifest beside).")
    )
    template_version: str = field(default=DEFAULT_VERSION, metadata=_h("Template file version."))
    seed: int = field(default=0, metadata=_h("Seed of the opening choice and subsampling."))
    responses: str = field(
        default="self",
        metadata=_h("self: the base model's greedy replies; targets: AdvBench/AlpacaEval texts."),
    )
    self_kinds: list[str] = field(
        default_factory=lambda: ["harmful", "benign", "benign_risky"],
        metadata=_h(
            "With responses=self, the kinds whose replies are self-generated; the others use "
            "AdvBench targets / AlpacaEval references (rows without one are skipped)."
        ),
    )
    base: str = field(default="bundled:smollm2-135m-instruct", metadata=_h("Generating model."))
    max_new_tokens: int = field(default=80, metadata=_h("Length of self-generated replies."))
    n_alpaca: int = field(default=200, metadata=_h("AlpacaEval prompts (seeded subset)."))
    chosen_per_harmful: int = field(default=2, metadata=_h("Decline pairs per harmful request."))
    max_prompt_chars: int = field(default=300, metadata=_h("Skip benign prompts longer than this."))
    similarity_threshold: float = field(
        default=0.5, metadata=_h("Drop prompts this similar (Jaccard) to a held-out prompt.")
    )
    eval_data_dir: str | None = field(default=None, metadata=_h("Folder of eval_data/."))
    data_dir: str | None = field(
        default=None, metadata=_h("Folder of data/ (AlpacaEval, MT-Bench).")
    )
    dtype: str = field(default="float32", metadata=_h("Generation dtype (fp32 is faster on CPU)."))
    device: str = field(default="cpu", metadata=_h("Generation device."))
    batch_size: int = field(default=16, metadata=_h("Generation batch size."))
    reuse_replies: str | None = field(
        default=None,
        metadata=_h(
            "A set built earlier with the same base and generation settings: take its "
            "self-generated replies (by prompt) instead of generating them again."
        ),
    )

    def __post_init__(self) -> None:
        p = []
        if self.responses not in ("self", "targets"):
            p.append(f"`responses` must be self or targets, got {self.responses!r}")
        for name in ("max_new_tokens", "chosen_per_harmful", "batch_size", "max_prompt_chars"):
            if getattr(self, name) < 1:
                p.append(f"`{name}` must be >= 1, got {getattr(self, name)}")
        bad = [k for k in self.self_kinds if k not in KINDS]
        if bad:
            p.append(f"`self_kinds` must be among {list(KINDS)}, got {bad}")
        if self.n_alpaca < 0:
            p.append(f"`n_alpaca` must be >= 0, got {self.n_alpaca}")
        if not 0.0 < self.similarity_threshold <= 1.0:
            p.append(f"`similarity_threshold` must be in (0, 1], got {self.similarity_threshold}")
        if p:
            raise ValidationError("; ".join(p), problems=p, field="config")


# ------------------------------------------------------------------------------ prompts


def collect_prompts(
    cfg: RefusalDataConfig, tpl: RefusalTemplates
) -> tuple[list[S.SourcePrompt], dict[str, Any]]:
    """All source prompts minus those too close to a held-out prompt or to the demo prompts."""
    from prefvec.evaluation.data import eval_data_dir, subsample
    from prefvec.training.data import default_data_dir

    eval_root = eval_data_dir(cfg.eval_data_dir)
    data_root = Path(cfg.data_dir) if cfg.data_dir else default_data_dir()
    alpaca = subsample(S.alpaca_train(data_root, cfg.max_prompt_chars), cfg.n_alpaca, cfg.seed)
    prompts = (
        S.advbench_train(eval_root)
        + alpaca
        + S.mt_bench(data_root, cfg.max_prompt_chars)
        + S.risky_benign(tpl.risky_benign_prompts, tpl.version)
        + S.written_harmful(tpl.harmful_prompts, tpl.version)
        + S.contextual(tpl.contextual, tpl.version)
    )
    held = S.heldout_prompts(eval_root) + list(tpl.heldout_harmful + tpl.heldout_benign_risky)
    close = S.contamination(prompts, held, cfg.similarity_threshold)
    kept = [p for p in prompts if p.id not in close]
    dropped = {k: {"similarity": s, "closest": t} for k, (s, t) in close.items()}
    if dropped:
        logger.info("dropped %d prompts too close to held-out ones", len(dropped))
    return kept, dropped


# ------------------------------------------------------------------------------ replies


def tidy(text: str, min_chars: int = 20) -> str:
    """Strip, and cut a reply cut off by the token limit back to its last full sentence."""
    text = text.strip()
    ends = [text.rfind(c) for c in (". ", ".\n", "!", "?", "\n")] + [
        len(text) - 1 if text.endswith(".") else -1
    ]
    last = max(ends)
    return text[: last + 1].strip() if last >= min_chars else text


def model_generator(cfg: RefusalDataConfig) -> Generate:
    """Greedy replies of ``cfg.base`` (in process, batched, no vector merged)."""
    from prefvec.evaluation.targets import ModelHandle

    handle = ModelHandle(cfg.base, dtype=cfg.dtype, device=cfg.device, batch_size=cfg.batch_size)
    target = handle.target({})

    def generate(prompts: Sequence[str]) -> list[str]:
        from tqdm.auto import tqdm

        from prefvec.evaluation.targets import chat_prompt_ids

        # the target's own batch order (stable sort by token length), cut into chunks of whole
        # batches: the same batches as one call, with a progress bar
        lengths = [len(chat_prompt_ids(target.tokenizer, p)) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        out = [""] * len(prompts)
        step = cfg.batch_size * 4
        for s in tqdm(range(0, len(order), step), desc="self-generating", unit="chunk"):
            idx = order[s : s + step]
            replies = target.generate([prompts[i] for i in idx], max_new_tokens=cfg.max_new_tokens)
            for i, r in zip(idx, replies, strict=True):
                out[i] = r
        return out

    return generate


def build_rows(
    prompts: Sequence[S.SourcePrompt],
    tpl: RefusalTemplates,
    cfg: RefusalDataConfig,
    generate: Generate | None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Rows of the set, plus the prompts left out (benign without a usable answer).

    Args:
        generate: the self-generation function (required when ``cfg.responses == "self"``).
    """
    from prefvec.scoring.refusal import is_refusal

    own: dict[str, str] = {}
    if cfg.responses == "self":
        if generate is None:
            raise ValidationError("`responses` self needs a generator", field="responses")
        mine = [p for p in prompts if p.kind in cfg.self_kinds]
        replies = generate([p.text for p in mine]) if mine else []
        # replies reused from an earlier set were tidied when it was built (tidy is not
        # idempotent: a cut at a line break can be cut again); reused_replies tidies new ones
        own = {
            p.id: r if cfg.reuse_replies else tidy(r) for p, r in zip(mine, replies, strict=True)
        }
    gen_note = f"{cfg.base} greedy, {cfg.max_new_tokens} new tokens, {cfg.dtype}"
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for p in prompts:
        reply = own.get(p.id, "")
        usable = bool(reply) and not is_refusal(reply)
        if p.kind == "harmful":
            if not (usable or p.target):
                skipped.append(
                    {"id": p.id, "reason": "no compliance to reject (model declined, no target)"}
                )
                continue
            rows += _harmful_rows(p, tpl, cfg, reply if usable else "", gen_note)
            continue
        answer, how = (reply, f"self-generated ({gen_note})") if usable else (p.reference, "")
        if not answer:
            skipped.append(
                {"id": p.id, "reason": "no usable answer (model declined, no reference)"}
            )
            continue
        how = how or f"AlpacaEval reference output_1 ({p.source})"
        idx = tpl.opening_index(cfg.seed, p.id)
        rows.append(_row(p, answer, tpl.benign_refusal(idx), how, f"{tpl.version} opening {idx}"))
    return rows, skipped


def _harmful_rows(
    p: S.SourcePrompt, tpl: RefusalTemplates, cfg: RefusalDataConfig, reply: str, note: str
) -> list[dict[str, Any]]:
    """Pairs of one harmful request: slot 0 as written, later slots asked as a question (when
    the templates have question forms); all in the request's split group, so a rephrasing never
    lands on the other side of the train/validation split."""
    rejected = reply or p.target
    how = f"self-generated ({note})" if reply else f"AdvBench target ({p.source})"
    out = []
    for slot in range(min(cfg.chosen_per_harmful, len(tpl.openings))):
        idx = tpl.opening_index(cfg.seed, p.id, slot)
        chosen, cat = tpl.decline(p.text, idx)
        row = _row(p, chosen, rejected, f"{tpl.version} opening {idx} + {cat} alternative", how)
        asked = tpl.question(p.text, cfg.seed, p.id) if slot else None
        if asked:
            row["prompt"] = asked
            row["provenance"]["prompt"] += f"; asked as a question ({tpl.version} question_forms)"
        row["id"], row["group"] = f"{p.id}/{slot}", p.id
        out.append(row)
    return out


def _row(p: S.SourcePrompt, chosen: str, rejected: str, c_how: str, r_how: str) -> dict[str, Any]:
    return {
        "id": p.id,
        "kind": p.kind,
        "prompt": p.text,
        "chosen": chosen,
        "rejected": rejected,
        "provenance": {"prompt": p.source, "chosen": c_how, "rejected": r_how},
    }


def reused_replies(path: str, fallback: Callable[[], Generate] | None = None) -> Generate:
    """A generator that answers from an earlier set's self-generated replies (by prompt text):
    a harmful row's *rejected*, a benign row's *chosen*.

    Args:
        fallback: makes the generator for prompts the earlier set has no reply for (new
            prompts of a later template version; made only when there are some). Without it
            such a prompt gets ``""``, which the builder treats like a declined reply
            (AdvBench target / reference / skipped) — exactly what that earlier build did with
            a prompt the model declined. Its replies are tidied as a fresh build's are.
    """
    known: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        prov = row.get("provenance", {})
        side = "rejected" if row.get("kind") == "harmful" else "chosen"
        if str(prov.get(side, "")).startswith("self-generated") and "asked as" not in str(
            prov.get("prompt", "")
        ):
            known[row["prompt"]] = row[side]

    def generate(prompts: Sequence[str]) -> list[str]:
        new = sorted({p for p in prompts if p not in known})
        if new and fallback is not None:
            logger.info("%d prompts have no earlier reply: generating them", len(new))
            known.update(zip(new, map(tidy, fallback()(new)), strict=True))
        return [known.get(p, "") for p in prompts]

    return generate


def drop_close_rephrasings(
    rows: list[dict[str, Any]], tpl: RefusalTemplates, cfg: RefusalDataConfig
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Drop rows whose rephrased prompt is too close to a held-out or demo prompt."""
    from prefvec.evaluation.data import eval_data_dir

    asked = [r for r in rows if "asked as" in r["provenance"]["prompt"]]
    if not asked:
        return rows, {}
    held = S.heldout_prompts(eval_data_dir(cfg.eval_data_dir))
    held += list(tpl.heldout_harmful + tpl.heldout_benign_risky)
    probe = [S.SourcePrompt(r["id"], r["prompt"], r["kind"], "") for r in asked]
    close = S.contamination(probe, held, cfg.similarity_threshold)
    kept = [r for r in rows if r["id"] not in close]
    return kept, {k: {"similarity": s, "closest": t} for k, (s, t) in close.items()}


# ------------------------------------------------------------------------------ the job


def write_set(
    rows: Sequence[dict[str, Any]], out: Path, manifest: dict[str, Any]
) -> dict[str, Any]:
    """Write the JSONL and ``<stem>.manifest.json`` beside it; returns the manifest."""
    out.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    out.write_text(body, encoding="utf-8")
    manifest = {**manifest, "file": out.name, "sha256": hashlib.sha256(body.encode()).hexdigest()}
    path = out.with_name(out.stem + ".manifest.json")
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def build_refusal_set(cfg: RefusalDataConfig, generate: Generate | None = None) -> dict[str, Any]:
    """Collect prompts, attach replies, write the set; returns its manifest.

    Args:
        cfg: the settings.
        generate: self-generation function (default: the base model in process); with
            ``cfg.reuse_replies`` it answers only the prompts the earlier set has no reply for.
    """
    from prefvec.training.dpo import library_versions

    tpl = load_templates(cfg.template_version)
    prompts, dropped = collect_prompts(cfg, tpl)
    if cfg.responses == "self":
        fresh = generate
        if cfg.reuse_replies:
            generate = reused_replies(cfg.reuse_replies, lambda: fresh or model_generator(cfg))
        elif fresh is None:
            generate = model_generator(cfg)
    rows, skipped = build_rows(prompts, tpl, cfg, generate)
    rows, close = drop_close_rephrasings(rows, tpl, cfg)
    dropped.update(close)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["kind"]] = counts.get(r["kind"], 0) + 1
    manifest = {
        "config": asdict(cfg),
        "templates": {"version": tpl.version, "sha256": tpl.sha256},
        "rows": len(rows),
        "rows_by_kind": counts,
        "dropped_as_close_to_heldout": dropped,
        "skipped": skipped,
        "versions": library_versions(),
    }
    return write_set(rows, Path(cfg.out), manifest)
