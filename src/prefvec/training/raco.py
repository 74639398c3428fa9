"""RACO (arXiv 2602.02495): one model, K DPO objectives, clipped conflict-averse updates.

Each objective i is a DPO loss on the same kind of pairs with its own labels (which reply it
prefers, or none). Per micro-batch: one forward pass gives the implicit margins of all pairs,
K backward passes (``torch.autograd.grad``, trainable parameters only) give g_i = ∇L_i, and
:func:`~prefvec.training.raco_solver.combine_gradients` turns them into the update
d = g0 + c‖g0‖·G_p̃/‖G_p̃‖ (see that module for the equations). The same trainer runs the two
baselines: ``weighted_sum`` (plain DPO on Σ w_i L_i, one backward) and ``cagrad`` (no clip).

Command line::

    prefvec train raco --preferences helpful harmless --weights 0.5 0.5 --steps 200 \\
        --output-dir runs/raco
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prefvec.training.config import (
    RacoJobConfig,
    check_resumable,
    data_for,
    learning_settings,
    setting_defaults,
)
from prefvec.training.data import DataReport, PreferencePair, _json_lines, _prompt_messages
from prefvec.training.logps import (
    EncodedPair,
    anchor_losses,
    collate,
    dpo_losses,
    encode_pair,
    implicit_margins,
    nll_losses,
    reply_prefix_mask,
    token_logps,
)
from prefvec.training.raco_solver import (
    cagrad_objective,
    combine_gradients,
    solve_cagrad,
    solve_cagrad_k2,
)

__all__ = [
    "MultiPair",
    "RacoTrainer",
    "cagrad_objective",
    "combine_gradients",
    "load_multilabel_jsonl",
    "multipairs_from_preferences",
    "run_raco_job",
    "solve_cagrad",
    "solve_cagrad_k2",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MultiPair:
    """Prompt, two replies, and one label per objective: +1 a preferred, −1 b, 0 no opinion."""

    messages: list[dict[str, str]]
    a: str
    b: str
    labels: tuple[int, ...]
    group: str = ""


def multipairs_from_preferences(
    pairs_by_objective: Sequence[Sequence[PreferencePair]],
) -> list[MultiPair]:
    """Pairs of K preference sets as multi-label pairs (own objective +1, the others 0)."""
    k = len(pairs_by_objective)
    out = []
    for i, pairs in enumerate(pairs_by_objective):
        labels = tuple(1 if j == i else 0 for j in range(k))
        out += [MultiPair(p.messages, p.chosen, p.rejected, labels, p.group) for p in pairs]
    return out


def load_multilabel_jsonl(
    path: str | Path, objectives: Sequence[str]
) -> tuple[list[MultiPair], DataReport]:
    """JSONL ``{"prompt", "response_a", "response_b", "labels": {objective: 1 | -1 | 0}}``."""
    path = Path(path)
    report, out = DataReport(str(path)), []
    for n, obj in _json_lines(path, report):
        try:
            msgs = _prompt_messages(obj.get("prompt") if isinstance(obj, dict) else None)
            a, b, labels = obj.get("response_a"), obj.get("response_b"), obj.get("labels")
            if not (isinstance(a, str) and a.strip() and isinstance(b, str) and b.strip()):
                raise ValueError("'response_a' and 'response_b' must be non-empty strings")
            if not isinstance(labels, dict) or any(
                labels.get(o, 0) not in (-1, 0, 1) for o in objectives
            ):
                raise ValueError(f"'labels' must map {list(objectives)} to 1, -1 or 0")
            out.append(MultiPair(msgs, a, b, tuple(int(labels.get(o, 0)) for o in objectives)))
        except ValueError as exc:
            report.add_bad(n, str(exc))
    report.pairs = len(out)
    return out, report


# ------------------------------------------------------------------------------ trainer


@dataclass
class StepStats:
    """What one optimizer step did: per-objective losses and the solver's p and p̃."""

    losses: list[float]
    p: list[float] = field(default_factory=list)
    p_clipped: list[float] = field(default_factory=list)


class RacoTrainer:
    """Per-step RACO / CAGrad / weighted-sum DPO on a (PEFT or plain) causal LM.

    Args:
        model: the policy; its parameters with ``requires_grad`` are trained.
        tokenizer: its tokenizer (chat template).
        weights: user weights w on the simplex, one per objective.
        mode: ``raco``, ``cagrad`` or ``weighted_sum``.
        c: CAGrad radius (0.4).
        beta: DPO β.
        learning_rate: AdamW learning rate.
        ref_model: frozen reference; None with a PEFT model means "adapters disabled".
        max_length: max tokens of prompt + reply.
        rescale: divide d by (1 + c).
        nll_weights: per objective, the weight of an NLL term on its preferred replies (TRL's
            ``sft`` term) added to that objective's DPO loss; empty means none.
        anchors: per objective, whether it is an anchor (its loss is
            :func:`~prefvec.training.logps.anchor_losses` instead of DPO); empty means none.
        prefix_tokens: per objective, score only the first n tokens of each reply in its DPO
            margin and NLL term (0: the whole reply); empty means whole replies throughout.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        weights: Sequence[float],
        *,
        mode: str = "raco",
        c: float = 0.4,
        beta: float = 0.1,
        learning_rate: float = 5e-4,
        ref_model: Any = None,
        max_length: int = 512,
        rescale: bool = False,
        nll_weights: Sequence[float] = (),
        anchors: Sequence[bool] = (),
        prefix_tokens: Sequence[int] = (),
    ) -> None:
        self.model, self.tokenizer, self.ref_model = model, tokenizer, ref_model
        self.weights = torch.tensor(list(weights), dtype=torch.float32)
        if nll_weights and len(nll_weights) != len(weights):
            raise ValueError(f"nll_weights needs {len(weights)} values, got {list(nll_weights)}")
        self.nll_weights = torch.tensor(list(nll_weights) or [0.0] * len(weights))
        if anchors and len(anchors) != len(weights):
            raise ValueError(f"anchors needs {len(weights)} values, got {list(anchors)}")
        self.anchors = torch.tensor([bool(a) for a in anchors] or [False] * len(weights))
        if prefix_tokens and (
            len(prefix_tokens) != len(weights) or any(int(n) < 0 for n in prefix_tokens)
        ):
            raise ValueError(
                f"prefix_tokens needs {len(weights)} values >= 0, got {list(prefix_tokens)}"
            )
        self.prefix_tokens = [int(n) for n in prefix_tokens] or [0] * len(weights)
        self.mode, self.c, self.beta, self.rescale = mode, c, beta, rescale
        self.max_length = max_length
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=learning_rate, weight_decay=0.0)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.step_count = 0
        combine_gradients(torch.zeros(len(weights), 1), self.weights, c, mode)  # validate early

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    def encode(self, pairs: Sequence[MultiPair]) -> tuple[list[EncodedPair], torch.Tensor]:
        """Token ids of the pairs and their labels, shape (K, B)."""
        enc = [encode_pair(self.tokenizer, p.messages, p.a, p.b, self.max_length) for p in pairs]
        labels = torch.tensor([p.labels for p in pairs], dtype=torch.long).T  # (K, B)
        return enc, labels

    def _ref_token_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            if self.ref_model is not None:
                return token_logps(self.ref_model, batch)
            with self.model.disable_adapter():
                return token_logps(self.model, batch)

    def losses(
        self, enc: Sequence[EncodedPair], labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-objective losses (K,) (with graph: DPO, plus the NLL term where its weight is
        not 0; the anchor loss for anchor objectives) and implicit margins (K, B), each
        objective's over the reply tokens it scores (``prefix_tokens``)."""
        batch = {k: v.to(self.device) for k, v in collate(enc, self.pad_id).items()}
        ref_tokens = self._ref_token_logps(batch)
        labels = labels.to(self.device)
        policy_tokens = token_logps(self.model, batch)
        margins_of, nll_of = {}, {}
        for n in sorted(set(self.prefix_tokens)):
            keep = reply_prefix_mask(batch["completion_mask"], n).to(policy_tokens.dtype)
            policy = (policy_tokens * keep).sum(dim=1)
            margins_of[n] = implicit_margins(policy, (ref_tokens * keep).sum(dim=1), self.beta)
            if bool(self.nll_weights.any()):
                nll_of[n] = nll_losses(policy, keep.sum(dim=1), labels)
        margins = torch.stack([margins_of[n] for n in self.prefix_tokens])  # (K, B)
        losses = dpo_losses(margins, labels)
        if nll_of:
            nll = torch.stack([nll_of[n][k] for k, n in enumerate(self.prefix_tokens)])
            losses = losses + self.nll_weights.to(nll.device, nll.dtype) * nll
        if bool(self.anchors.any()):
            anchored = anchor_losses(policy_tokens, ref_tokens, labels)
            losses = torch.where(self.anchors.to(losses.device), anchored, losses)
        return losses, margins

    def _objective_grads(self, losses: torch.Tensor) -> torch.Tensor:
        """g_i = ∇L_i over the trainable parameters, stacked (K, D)."""
        rows = []
        for i in range(losses.numel()):
            grads = torch.autograd.grad(
                losses[i], self.params, retain_graph=i < losses.numel() - 1, allow_unused=True
            )
            rows.append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1)
                        for g, p in zip(grads, self.params, strict=True)
                    ]
                )
            )
        return torch.stack(rows)  # (K, D)

    def _add_to_grads(self, direction: torch.Tensor, scale: float) -> None:
        offset = 0
        for p in self.params:
            n = p.numel()
            g = direction[offset : offset + n].view_as(p).to(p.dtype) * scale
            p.grad = g.clone() if p.grad is None else p.grad.add_(g)
            offset += n

    def micro_step(self, pairs: Sequence[MultiPair], scale: float = 1.0) -> StepStats:
        """Forward, per-objective gradients and the combined direction, added into ``.grad``."""
        enc, labels = self.encode(pairs)
        losses, _ = self.losses(enc, labels)
        if self.mode == "weighted_sum":
            (self.weights.to(losses.device) @ losses * scale).backward()
            w = self.weights.tolist()
            return StepStats(losses.detach().tolist(), w, w)
        grads = self._objective_grads(losses)
        d, info = combine_gradients(grads, self.weights, self.c, self.mode, self.rescale)
        self._add_to_grads(d, scale)
        return StepStats(losses.detach().tolist(), info["p"], info["p_clipped"])

    def step(self, micro_batches: Sequence[Sequence[MultiPair]]) -> StepStats:
        """One optimizer step over ``micro_batches`` (the direction recomputed per micro-batch)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        stats = [self.micro_step(mb, 1.0 / len(micro_batches)) for mb in micro_batches]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        k = len(stats[0].losses)
        mean = [sum(s.losses[i] for s in stats) / len(stats) for i in range(k)]
        return StepStats(mean, stats[-1].p, stats[-1].p_clipped)

    @torch.no_grad()
    def evaluate(
        self, pairs: Sequence[MultiPair], batch_size: int = 8
    ) -> dict[str, list[float | None]]:
        """Per-objective mean loss, reward accuracy and mean signed reward margin (labelled
        pairs only; the margin is the implicit reward of the preferred reply minus the other's);
        None for an objective without validation pairs (not a score of 0)."""
        self.model.eval()
        k = len(pairs[0].labels)
        loss_sum, correct, margin_sum, count = [0.0] * k, [0.0] * k, [0.0] * k, [0.0] * k
        for i in range(0, len(pairs), batch_size):
            enc, labels = self.encode(pairs[i : i + batch_size])
            losses, margins = self.losses(enc, labels)
            for j in range(k):
                mask = labels[j] != 0
                n = float(mask.sum())
                signed = labels[j][mask] * margins[j].cpu()[mask]
                loss_sum[j] += float(losses[j]) * n
                correct[j] += float((signed > 0).sum())
                margin_sum[j] += float(signed.sum())
                count[j] += n

        def mean(xs: list[float]) -> list[float | None]:
            return [x / n if n else None for x, n in zip(xs, count, strict=True)]

        return {
            "loss": mean(loss_sum),
            "reward_accuracy": mean(correct),
            "reward_margin": mean(margin_sum),
        }


# ------------------------------------------------------------------------------ the job


def _batches(
    pools: Sequence[Sequence[MultiPair]], per_pool: int, seed: int, skip: int
) -> Iterator[list[MultiPair]]:
    """Endless micro-batches of ``per_pool`` pairs from each pool (seeded reshuffle per epoch)."""
    gen = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(p), generator=gen).tolist() for p in pools]
    pos = [0] * len(pools)
    produced = 0
    while True:
        batch: list[MultiPair] = []
        for i, pool in enumerate(pools):
            for _ in range(per_pool):
                if pos[i] == len(pool):
                    orders[i], pos[i] = torch.randperm(len(pool), generator=gen).tolist(), 0
                batch.append(pool[orders[i][pos[i]]])
                pos[i] += 1
        produced += 1
        if produced > skip:
            yield batch


def build_policy(model_dir: Path, cfg: Any) -> tuple[Any, Any, Any]:
    """(policy, tokenizer, ref_model): LoRA-wrapped with no ref, or full with a frozen copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(cfg.seed)
    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ref: Any = None
    if cfg.use_lora:
        from peft import get_peft_model

        from prefvec.training.dpo import lora_config

        model = get_peft_model(model, lora_config(cfg))
    else:
        ref = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        ref.requires_grad_(False).eval()
    from prefvec.training.dpo import use_cpu

    device = "cpu" if use_cpu(cfg.device) else "cuda"
    return model.to(device), tok, (ref.to(device) if ref is not None else None)


def _save_checkpoint(
    path: Path, trainer: RacoTrainer, curves: list[dict[str, Any]], settings: dict[str, Any]
) -> None:
    state = {
        "trainable": {
            n: p.detach().cpu() for n, p in trainer.model.named_parameters() if p.requires_grad
        },
        "optimizer": trainer.optimizer.state_dict(),
        "step": trainer.step_count,
        "curves": json.dumps(curves),
        "settings": json.dumps(settings, sort_keys=True),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_checkpoint(
    path: Path, trainer: RacoTrainer, settings: dict[str, Any], defaults: dict[str, Any]
) -> list[dict[str, Any]]:
    """Continue from ``path``; a checkpoint trained with other settings is refused (a
    ValidationError naming ``resume`` and the settings that differ), never silently mixed."""
    state = torch.load(path, weights_only=True)
    before = json.loads(state["settings"]) if "settings" in state else None
    check_resumable(before, settings, f"the checkpoint {path}", defaults)
    params = dict(trainer.model.named_parameters())
    with torch.no_grad():
        for n, t in state["trainable"].items():
            params[n].copy_(t)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.step_count = int(state["step"])
    return list(json.loads(state["curves"]))


def _pools(
    cfg: RacoJobConfig, tokenizer: Any
) -> tuple[list[list[MultiPair]], list[MultiPair], dict[str, Any]]:
    """Each preference's training pool and the joint validation pairs, prompts cut to
    ``max_prompt_length`` tokens as the DPO path cuts them (the end of the prompt is kept)."""
    from prefvec.training.dpo import prepare_pairs, truncate_prompt

    k = len(cfg.preferences)
    pools, val, info = [], [], {}
    for i, pref in enumerate(cfg.preferences):
        train, v, meta = prepare_pairs(cfg, pref, data_for(cfg, pref), cfg.kinds_for(pref))
        train = [truncate_prompt(p, tokenizer, cfg.max_prompt_length) for p in train]
        v = [truncate_prompt(p, tokenizer, cfg.max_prompt_length) for p in v]
        pools.append(multipairs_from_preferences([train if j == i else [] for j in range(k)]))
        val += multipairs_from_preferences([v if j == i else [] for j in range(k)])
        info[pref] = meta
    return pools, val, info


def run_raco_job(cfg: RacoJobConfig) -> dict[str, Any]:
    """Train one model on K preferences with RACO (or a baseline) and store θ − θ_base.

    Returns the report (curves, per-objective validation metrics, wall time, stored ref).
    """
    from tqdm.auto import tqdm

    from prefvec.models import resolve_model_dir
    from prefvec.training.card import machine_info
    from prefvec.training.dpo import library_versions
    from prefvec.training.extract import dense_difference, lowrank_from_factors, store_vector

    base_dir = resolve_model_dir(cfg.base)
    out = Path(cfg.output_dir)
    start_dir, on_top_of = base_dir, None
    if cfg.on_top_of:  # checked before anything is written
        from prefvec.training.sequential import check_start_vector, merge_start_vector

        start, on_top_of = check_start_vector(cfg.on_top_of, "on_top_of", cfg.use_lora, base_dir)
        start_dir = merge_start_vector(start, on_top_of["sha256"], base_dir, out)
    out.mkdir(parents=True, exist_ok=True)
    model, tok, ref = build_policy(start_dir, cfg)
    pools, val, info = _pools(cfg, tok)
    for pref in cfg.preferences:
        if not info[pref]["n_val"]:
            logger.warning(
                "%s: no validation pairs (all %d fell into training by prompt hash); its "
                "held-out metrics are left empty",
                pref,
                info[pref]["n_train"],
            )
    trainer = RacoTrainer(
        model, tok, cfg.simplex_weights, mode=cfg.mode, c=cfg.c, beta=cfg.beta,
        learning_rate=cfg.learning_rate, ref_model=ref, max_length=cfg.max_length,
        rescale=cfg.rescale, nll_weights=cfg.nll_weights,
        anchors=[p in cfg.anchors for p in cfg.preferences], prefix_tokens=cfg.prefix_tokens,
    )  # fmt: skip
    ckpt = out / "checkpoint.pt"
    settings = learning_settings(
        cfg,
        data_hash={p: info[p]["data_hash"] for p in cfg.preferences},
        on_top_of_sha256=on_top_of["sha256"] if on_top_of else None,
    )
    curves = (
        _load_checkpoint(ckpt, trainer, settings, setting_defaults(cfg))
        if cfg.resume and ckpt.is_file()
        else []
    )
    batches = _batches(pools, cfg.batch_size, cfg.seed, trainer.step_count * cfg.grad_accum)
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=trainer.step_count, disable=not cfg.progress, desc=cfg.mode)
    while trainer.step_count < cfg.steps:
        stats = trainer.step([next(batches) for _ in range(cfg.grad_accum)])
        bar.update(1)
        if trainer.step_count % cfg.logging_steps == 0:
            curves.append(
                {
                    "step": trainer.step_count,
                    "losses": stats.losses,
                    "p": stats.p,
                    "p_clipped": stats.p_clipped,
                }
            )
            bar.set_postfix(loss=[round(x, 4) for x in stats.losses])
        if trainer.step_count % cfg.save_steps == 0:
            _save_checkpoint(ckpt, trainer, curves, settings)
    bar.close()
    wall = time.perf_counter() - t0
    metrics = trainer.evaluate(val, cfg.batch_size) if val else {}
    report = {
        "data_hash": ":".join(info[p]["data_hash"][:16] for p in cfg.preferences),
        "config": cfg.to_dict(),
        "versions": library_versions(),
        "machine": machine_info(),
        "curves": curves,
        "eval": {
            "per_objective": {
                p: {k: v[i] for k, v in metrics.items()} for i, p in enumerate(cfg.preferences)
            }
        },
        "data": info,
        "wall_s": wall,
    }
    if on_top_of:
        report["on_top_of"] = on_top_of
    name = cfg.name or "raco-" + "-".join(cfg.preferences)
    method = "raco" if cfg.mode != "weighted_sum" else "other"
    if cfg.use_lora:
        from prefvec.vector_store.extract import load_lora_factors

        model.save_pretrained(str(out / "adapter"))
        vector = lowrank_from_factors(
            load_lora_factors(out / "adapter"), name=name, base_spec=cfg.base,
            base_dir=base_dir, method=method, report=report,
        )  # fmt: skip
    else:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        vector = dense_difference(
            state, base_dir, name=name, base_spec=cfg.base, method=method, report=report
        )
    record, path = store_vector(vector, cfg, base_dir)
    report["stored"] = record.ref if record else None
    report["vector_path"] = str(path) if path else None
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report
