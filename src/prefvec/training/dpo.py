"""Per-preference DPO with TRL: θ+ on the pairs, θ− on the label-swapped pairs, φ = θ+ − θ−.

Preference Vector (Liang et al., EACL 2026), Sec. 3: both runs start from θ_Base, which is also
the DPO reference (DPO, Rafailov et al. 2023, Eq. 7: L = −log σ(β log π(y_w|x)/π_ref(y_w|x) −
β log π(y_l|x)/π_ref(y_l|x))). With LoRA the reference is the base with the adapter disabled.

Single process (CPU or one GPU)::

    prefvec train dpo --preference helpful --steps 200 --output-dir runs/helpful

Several GPUs (data parallel through 🤗 Accelerate; TRL's trainer picks the processes up)::

    accelerate launch --num_processes 4 -m prefvec.cli train dpo --preference helpful \\
        --device cuda --batch-size 8 --output-dir runs/helpful

Checkpoints go to ``<output_dir>/pos`` and ``<output_dir>/neg`` every ``save_steps``; running the
same command again resumes from the latest checkpoint (``resume_from_checkpoint``), and a finished
half (``adapter/`` or ``model/`` with ``result.json``) is not trained again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prefvec.errors import ValidationError
from prefvec.training.config import (
    CommonTrainConfig,
    DPOJobConfig,
    check_resumable,
    learning_settings,
    setting_defaults,
)
from prefvec.training.data import (
    PreferencePair,
    data_hash,
    load_preference_data,
    split_pairs,
)
from prefvec.training.logps import chat_ids

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """One finished DPO run (θ+ or θ−).

    Attributes:
        weights_dir: the LoRA adapter folder, or the full model folder.
        curves: per logging step ``{"step", "loss", "reward_accuracy", "reward_margin"}``.
        eval: held-out metrics (``loss``, ``reward_accuracy``, ``reward_margin``) on validation.
        wall_s: seconds spent training (a run resumed after an interruption counts the last
            part; a finished run continued to more steps adds the new part to the old).
        steps: optimizer steps the run was trained for.
    """

    weights_dir: Path
    curves: list[dict[str, float]] = field(default_factory=list)
    eval: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights_dir": str(self.weights_dir),
            "curves": self.curves,
            "eval": self.eval,
            "wall_s": self.wall_s,
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(Path(d["weights_dir"]), d["curves"], d["eval"], d["wall_s"], d.get("steps"))


# ------------------------------------------------------------------------------ helpers


def library_versions() -> dict[str, str]:
    """Versions of the libraries a run depends on (recorded in the vector's provenance)."""
    import importlib.metadata as md

    out = {}
    for pkg in ("prefvec", "torch", "transformers", "peft", "trl", "accelerate", "datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def use_cpu(device: str) -> bool:
    """True when training should stay on the CPU (``cpu``, or ``auto`` without CUDA)."""
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def truncate_prompt(pair: PreferencePair, tokenizer: Any, max_tokens: int) -> PreferencePair:
    """Keep the end of a long prompt: drop early turns, then the start of the first kept turn.

    TRL truncates prompt + reply at the end (``keep_start``); a prompt that alone filled
    ``max_length`` would leave no reply tokens, so prompts are cut here first.
    """
    msgs = list(pair.messages)

    def n_tokens(m: list[dict[str, str]]) -> int:
        return len(chat_ids(tokenizer, m, add_generation_prompt=True))

    while len(msgs) > 1 and n_tokens(msgs) > max_tokens:
        msgs = msgs[2:] if len(msgs) > 2 else msgs[1:]
    excess = n_tokens(msgs) - max_tokens
    if excess > 0:
        ids = tokenizer.encode(msgs[0]["content"], add_special_tokens=False)
        msgs[0] = {**msgs[0], "content": tokenizer.decode(ids[excess + 1 :])}
    if msgs == pair.messages:
        return pair
    return PreferencePair(msgs, pair.chosen, pair.rejected, pair.group, pair.source)


def to_dataset(pairs: Sequence[PreferencePair]) -> Any:
    """A 🤗 ``datasets.Dataset`` in TRL's conversational preference format."""
    from datasets import Dataset

    return Dataset.from_list([p.to_trl() for p in pairs])


def _curves(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    keys = {
        "loss": "loss",
        "rewards/accuracies": "reward_accuracy",
        "rewards/margins": "reward_margin",
    }
    out = []
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            row = {"step": float(entry["step"])}
            row.update({new: float(entry[old]) for old, new in keys.items() if old in entry})
            out.append(row)
    return out


def _eval_metrics(metrics: dict[str, float]) -> dict[str, float]:
    keys = {
        "eval_loss": "loss",
        "eval_rewards/accuracies": "reward_accuracy",
        "eval_rewards/margins": "reward_margin",
    }
    return {new: float(metrics[old]) for old, new in keys.items() if old in metrics}


def trl_config(cfg: CommonTrainConfig, out_dir: Path, steps: int | None = None) -> Any:
    """The TRL :class:`~trl.DPOConfig` of a job (CPU needs ``use_cpu=True, bf16=False``)."""
    from trl import DPOConfig

    cpu = use_cpu(cfg.device)
    return DPOConfig(
        output_dir=str(out_dir),
        max_steps=steps or cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=min(10, max(0, (steps or cfg.steps) // 10)),
        beta=cfg.beta,
        loss_type=list(cfg.loss_type),
        loss_weights=list(cfg.loss_weights) or None,
        precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        gradient_checkpointing=cfg.gradient_checkpointing,
        max_length=cfg.max_length,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=1,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=cpu,
        bf16=(not cpu) and cfg.dtype == "bfloat16",
        fp16=(not cpu) and cfg.dtype == "float16",
        report_to=[],
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=0,
        dataset_num_proc=None,
        save_only_model=False,
    )


def lora_config(cfg: CommonTrainConfig) -> Any:
    """PEFT :class:`~peft.LoraConfig` of a job (no dropout, no bias; optional layer subset)."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        target_modules=list(cfg.lora_targets),
        layers_to_transform=list(cfg.lora_layers) or None,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _load_policy(model_dir: Path, cfg: CommonTrainConfig) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Mixed precision handles bf16/fp16 on GPU; master weights stay fp32.
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


# ------------------------------------------------------------------------------ one run


def train_dpo_run(
    model_dir: str | Path,
    train_pairs: Sequence[PreferencePair],
    val_pairs: Sequence[PreferencePair],
    cfg: CommonTrainConfig,
    out_dir: str | Path,
    *,
    steps: int | None = None,
) -> RunResult:
    """Train one DPO model (LoRA or full) from ``model_dir`` (also the reference) with TRL.

    Resumes from the latest checkpoint in ``out_dir`` when ``cfg.resume``; returns the cached
    result when ``out_dir/result.json`` says the run already finished.

    Args:
        model_dir: base model folder (config, safetensors, tokenizer).
        train_pairs / val_pairs: DPO pairs (chosen preferred); validation may be empty.
        cfg: the job config (LoRA, β, steps, lr, batch size, lengths, seed, device).
        out_dir: checkpoints, the final ``adapter/`` (LoRA) or ``model/`` (full) and result.json.
        steps: optimizer steps (default ``cfg.steps``).
    """
    from transformers.trainer_utils import get_last_checkpoint
    from trl import DPOTrainer

    from prefvec.errors import ValidationError

    steps = steps or cfg.steps
    out = Path(out_dir)
    done = out / "result.json"
    prior_wall = 0.0
    settings = learning_settings(
        cfg,
        fields=[f.name for f in dataclasses.fields(CommonTrainConfig)],
        train_data_hash=data_hash(train_pairs),
        val_data_hash=data_hash(val_pairs),
    )
    recorded = out / "settings.json"
    if cfg.resume and (done.is_file() or (out / "checkpoints").is_dir()):
        before = json.loads(recorded.read_text()) if recorded.is_file() else None
        check_resumable(before, settings, repr(str(out)), setting_defaults(cfg))
    if cfg.resume and done.is_file():
        old = json.loads(done.read_text())
        trained_steps = old.get("steps") or _last_checkpoint_step(out / "checkpoints")
        if trained_steps == steps:
            logger.info("%s already trained; reusing it", out)
            return RunResult.from_dict(old)
        if trained_steps is None or trained_steps > steps:
            raise ValidationError(
                f"{str(out)!r} holds a finished run of {trained_steps} steps, and `steps` is "
                f"{steps}: use another `output_dir`, or `resume` false to train afresh",
                field="steps",
            )
        logger.info("%s: continuing from step %d to %d", out, trained_steps, steps)
        prior_wall = float(old.get("wall_s") or 0.0)
    out.mkdir(parents=True, exist_ok=True)
    recorded.with_suffix(".tmp").write_text(json.dumps(settings, indent=2) + "\n")
    recorded.with_suffix(".tmp").replace(recorded)
    model, tok = _load_policy(Path(model_dir), cfg)
    train = [truncate_prompt(p, tok, cfg.max_prompt_length) for p in train_pairs]
    val = [truncate_prompt(p, tok, cfg.max_prompt_length) for p in val_pairs]
    trainer = DPOTrainer(
        model=model,
        args=trl_config(cfg, out / "checkpoints", steps),
        train_dataset=to_dataset(train),
        eval_dataset=to_dataset(val) if val else None,
        processing_class=tok,
        peft_config=lora_config(cfg) if cfg.use_lora else None,
    )
    last = (
        get_last_checkpoint(str(out / "checkpoints"))
        if cfg.resume and (out / "checkpoints").is_dir()
        else None
    )
    if last:
        logger.info("resuming %s from %s", out, last)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    wall = prior_wall + time.perf_counter() - t0
    metrics = _eval_metrics(trainer.evaluate()) if val else {}
    weights_dir = out / ("adapter" if cfg.use_lora else "model")
    trained: Any = trainer.model
    trained.save_pretrained(str(weights_dir))
    tok.save_pretrained(str(weights_dir))
    result = RunResult(weights_dir, _curves(trainer.state.log_history), metrics, wall, steps)
    done.write_text(json.dumps(result.to_dict(), indent=2))
    return result


def _last_checkpoint_step(folder: Path) -> int | None:
    """The step of the newest ``checkpoint-N`` in ``folder`` (runs saved before ``steps`` was
    recorded in result.json)."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    return int(last.rsplit("-", 1)[1]) if last else None


# ------------------------------------------------------------------------------ the job


@dataclass
class DPOJobResult:
    """A finished preference-vector job: both runs, the vector, and where it was stored."""

    pos: RunResult
    neg: RunResult | None
    vector: Any  # PreferenceVector
    record: Any = None  # VectorRecord when stored
    vector_path: Path | None = None
    report: dict[str, Any] = field(default_factory=dict)


def prepare_pairs(
    cfg: CommonTrainConfig, preference: str, data: Sequence[str] = (), kinds: Sequence[str] = ()
) -> tuple[list[PreferencePair], list[PreferencePair], dict[str, Any]]:
    """Load, split (by hash of the prompt/question) and cap the pairs of one preference;
    with ``kinds``, only the rows of those kinds (:attr:`PreferencePair.kind`) are kept."""
    pairs, reports = load_preference_data(preference, data or cfg.data, cfg.data_dir)
    if kinds:
        found = sorted({p.kind for p in pairs})
        pairs = [p for p in pairs if p.kind in kinds]
        if not pairs:
            raise ValidationError(
                f"`data_kinds` {preference}={','.join(kinds)} keeps no pair; "
                f"the data's kinds are {found}",
                field="data_kinds",
            )
    train, val = split_pairs(pairs, cfg.val_fraction, cfg.seed)
    if cfg.max_train_pairs_per_file is not None:
        train = cap_per_file(train, cfg.max_train_pairs_per_file, cfg.seed)
    if cfg.max_train_pairs is not None:
        train = _sample(train, cfg.max_train_pairs, cfg.seed)
    if cfg.max_val_pairs is not None:
        val = _sample(val, cfg.max_val_pairs, cfg.seed)
    info = {
        "data_hash": data_hash(pairs),
        "reports": [r.to_dict() for r in reports],
        "n_train": len(train),
        "n_val": len(val),
    }
    if kinds:
        info["kinds"] = list(kinds)
    return train, val, info


def cap_per_file(pairs: list[PreferencePair], n: int, seed: int) -> list[PreferencePair]:
    """At most ``n`` pairs from each source file (``pair.source`` is ``file:line``), each a
    seeded subset; the files' pairs stay in their original order."""
    by_file: dict[str, list[PreferencePair]] = {}
    for p in pairs:
        by_file.setdefault(p.source.rsplit(":", 1)[0], []).append(p)
    keep = {id(p) for group in by_file.values() for p in _sample(group, n, seed)}
    return [p for p in pairs if id(p) in keep]


def _sample(pairs: list[PreferencePair], n: int, seed: int) -> list[PreferencePair]:
    """A deterministic subset of ``n`` pairs (seeded shuffle), order preserved."""
    if len(pairs) <= n:
        return pairs
    gen = torch.Generator().manual_seed(seed)
    keep = sorted(torch.randperm(len(pairs), generator=gen)[:n].tolist())
    return [pairs[i] for i in keep]


def run_dpo_job(cfg: DPOJobConfig) -> DPOJobResult:
    """Train θ+ and (for ``contrast``) the label-swapped θ−, extract φ, validate and store it.

    The vector's metadata records the data hash, the config, library versions, both runs'
    training curves and the held-out DPO reward accuracy of θ+ (implicit reward
    β·log π/π_ref of the chosen reply above the rejected one's, on the validation split).
    """
    from prefvec.models import resolve_model_dir
    from prefvec.training.card import machine_info
    from prefvec.training.extract import build_vector, store_vector

    base_dir = resolve_model_dir(cfg.base)
    train, val, info = prepare_pairs(cfg, cfg.preference)
    logger.info("%s: %d train / %d validation pairs", cfg.preference, len(train), len(val))
    out = Path(cfg.output_dir)
    if cfg.only:
        half = train if cfg.only == "pos" else [p.swapped() for p in train]
        run = train_dpo_run(base_dir, half, val, cfg, out / cfg.only)
        report = {**info, "only": cfg.only, "eval": {cfg.only: run.eval}, "wall_s": run.wall_s}
        return DPOJobResult(run, None, None, report=report)
    pos = train_dpo_run(base_dir, train, val, cfg, out / "pos")
    neg = None
    if cfg.method == "contrast":
        neg = train_dpo_run(base_dir, [p.swapped() for p in train], val, cfg, out / "neg")
    report = {
        **info,
        "config": cfg.to_dict(),
        "versions": library_versions(),
        "machine": machine_info(),
        "curves": {"pos": pos.curves, **({"neg": neg.curves} if neg else {})},
        "eval": {"pos": pos.eval, **({"neg": neg.eval} if neg else {})},
        "wall_s": {"pos": pos.wall_s, **({"neg": neg.wall_s} if neg else {})},
    }
    vector = build_vector(
        name=cfg.name or cfg.preference,
        base_spec=cfg.base,
        base_dir=base_dir,
        pos=pos.weights_dir,
        neg=neg.weights_dir if neg else None,
        lora=cfg.use_lora,
        report=report,
    )
    record, path = store_vector(vector, cfg, base_dir)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return DPOJobResult(pos, neg, vector, record, path, report)
