"""Training job configs: dataclasses with ``help`` metadata that double as CLI flags and YAML.

A field ``foo_bar`` becomes the flag ``--foo-bar``; a YAML file given with ``--config`` fills the
fields first and flags given on the command line override it. Defaults are the papers' defaults
(DPO β = 0.1, RACO c = 0.4). Every config checks itself in ``__post_init__`` and raises one
:class:`~prefvec.errors.ValidationError` listing all problems.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

from prefvec.defaults import DEFAULT_BASE
from prefvec.errors import ValidationError

logger = logging.getLogger(__name__)

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL_PROJECTIONS = (*DEFAULT_TARGETS, "gate_proj", "up_proj", "down_proj")
DPO_LOSSES = ("sigmoid", "sft", "hinge", "ipo", "robust", "bco_pair", "apo_zero", "apo_down")
C = TypeVar("C")


def _h(text: str) -> dict[str, str]:
    """Field metadata: the help text shown by ``--help``."""
    return {"help": text}


@dataclass
class CommonTrainConfig:
    """Fields shared by every training job (base, data, optimisation, output)."""

    base: str = field(
        default=DEFAULT_BASE,
        metadata=_h("Base model: bundled:<name>, a local folder or a cached hub id."),
    )
    data: list[str] = field(
        default_factory=lambda: [],
        metadata=_h("Data files (default: the bundled sets of the preference)."),
    )
    data_dir: str | None = field(
        default=None, metadata=_h("Folder of the bundled data sets (default: the repo's data/).")
    )
    val_fraction: float = field(
        default=0.1, metadata=_h("Share of prompts held out for validation (split by hash).")
    )
    max_train_pairs: int | None = field(
        default=None, metadata=_h("Use at most this many training pairs (after split).")
    )
    max_val_pairs: int | None = field(
        default=64, metadata=_h("Evaluate on at most this many validation pairs.")
    )
    max_train_pairs_per_file: int | None = field(
        default=None,
        metadata=_h(
            "Use at most this many training pairs from each data file (after split, before "
            "max_train_pairs), so a small file is not drowned by a large one."
        ),
    )
    use_lora: bool = field(default=True, metadata=_h("Train LoRA adapters (else the full model)."))
    lora_r: int = field(default=8, metadata=_h("LoRA rank."))
    lora_alpha: int = field(default=16, metadata=_h("LoRA alpha (PEFT scaling alpha/r)."))
    lora_targets: list[str] = field(
        default_factory=lambda: list(DEFAULT_TARGETS), metadata=_h("Module names LoRA adapts.")
    )
    lora_layers: list[int] = field(
        default_factory=lambda: [],
        metadata=_h("Only these decoder layer indices get LoRA (empty: all layers)."),
    )
    beta: float = field(default=0.1, metadata=_h("DPO β (temperature of the implicit reward)."))
    loss_type: list[str] = field(
        default_factory=lambda: ["sigmoid"],
        metadata=_h(
            "TRL DPO loss terms, summed with loss_weights: sigmoid (DPO), and sft for an NLL term "
            "on the chosen reply (makes the chosen text the likeliest, not only the rejected less "
            "likely)."
        ),
    )
    loss_weights: list[float] = field(
        default_factory=lambda: [],
        metadata=_h("One weight per loss_type term (empty: all 1)."),
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata=_h(
            "Recompute activations in the backward pass (TRL's default is on): saves memory on "
            "large models, costs about a third more compute per step."
        ),
    )
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata=_h(
            "Compute the reference log-probs once before training (TRL): a LoRA step on CPU "
            "took 0.78x as long even with each pair seen once (bench/train_step.py)."
        ),
    )
    steps: int = field(default=100, metadata=_h("Optimizer steps."))
    learning_rate: float = field(
        default=5e-4, metadata=_h("Peak learning rate (LoRA); use ~5e-6 for full fine-tuning.")
    )
    batch_size: int = field(default=4, metadata=_h("Pairs per micro-batch."))
    grad_accum: int = field(default=1, metadata=_h("Micro-batches per optimizer step."))
    max_length: int = field(
        default=320,
        metadata=_h("Max tokens of prompt + reply (longer sequences are cut at the end)."),
    )
    max_prompt_length: int = field(
        default=192, metadata=_h("Max prompt tokens (longer prompts keep their end).")
    )
    seed: int = field(default=0, metadata=_h("Seed of the split, the shuffling and the LoRA init."))
    device: str = field(default="auto", metadata=_h("cpu, cuda, or auto."))
    dtype: str = field(
        default="float32",
        metadata=_h("Training dtype: float32, or bfloat16 on GPUs that support it."),
    )
    output_dir: str = field(
        default="out/train", metadata=_h("Folder for checkpoints, adapters and curves.")
    )
    store_dir: str | None = field(
        default=None,
        metadata=_h("Vector store to put the result in (default: ~/.cache/prefvec/store)."),
    )
    vector_dtype: str = field(
        default="float32",
        metadata=_h("dtype of the vector's tensors: float32, float16 or bfloat16."),
    )
    no_store: bool = field(default=False, metadata=_h("Do not put the result into the store."))
    save_vector: str | None = field(
        default=None,
        metadata=_h("Also write the vector file here (e.g. vectors/helpful.safetensors)."),
    )
    logging_steps: int = field(default=5, metadata=_h("Log loss / reward accuracy every N steps."))
    save_steps: int = field(
        default=50, metadata=_h("Checkpoint every N steps (resume picks up the latest).")
    )
    resume: bool = field(
        default=True,
        metadata=_h("Resume from the latest checkpoint in output_dir if there is one."),
    )
    progress: bool = field(default=True, metadata=_h("Show progress bars."))

    def _problems(self) -> list[str]:
        p = []
        if not (0.0 <= self.val_fraction < 1.0):
            p.append(f"`val_fraction` must be in [0, 1), got {self.val_fraction}")
        for name in ("lora_r", "steps", "batch_size", "grad_accum", "max_length", "logging_steps"):
            if getattr(self, name) < 1:
                p.append(f"`{name}` must be >= 1, got {getattr(self, name)}")
        for name in ("beta", "learning_rate"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                p.append(f"`{name}` must be a finite number > 0, got {v}")
        if self.max_prompt_length >= self.max_length:
            p.append(
                f"`max_prompt_length` must be < `max_length`, got {self.max_prompt_length} "
                f">= {self.max_length}"
            )
        bad_losses = [t for t in self.loss_type if t not in DPO_LOSSES]
        if not self.loss_type or bad_losses:
            p.append(
                f"`loss_type` must be non-empty, from {list(DPO_LOSSES)}, got {self.loss_type}"
            )
        if self.loss_weights and len(self.loss_weights) != len(self.loss_type):
            p.append(
                f"`loss_weights` needs {len(self.loss_type)} values (one per loss_type), got "
                f"{self.loss_weights}"
            )
        if any(not (math.isfinite(w) and w >= 0) for w in self.loss_weights):
            p.append(f"`loss_weights` must be finite and >= 0, got {self.loss_weights}")
        for name in ("dtype", "vector_dtype"):
            if getattr(self, name) not in ("float32", "bfloat16", "float16"):
                p.append(
                    f"`{name}` must be float32, bfloat16 or float16, got {getattr(self, name)!r}"
                )
        return p

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ValidationError("; ".join(problems), problems=problems, field="config")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Settings a resumed run may change: how long it runs, where its result goes and how a step is
# computed (same loss), not what it learns. Data paths are left out too: a run's data is compared
# by content (``data_hash``).
RESUMABLE_CHANGES = frozenset({
    "steps", "logging_steps", "save_steps", "resume", "progress", "device", "output_dir",
    "gradient_checkpointing", "precompute_ref_log_probs",
    "store_dir", "no_store", "save_vector", "vector_dtype", "name",
    "data", "data_dir", "data_per_preference", "on_top_of",
})  # fmt: skip


def learning_settings(
    cfg: CommonTrainConfig, fields: Iterable[str] | None = None, **content: Any
) -> dict[str, Any]:
    """What a run learns from, as JSON: ``cfg``'s settings (only ``fields`` when given) minus
    :data:`RESUMABLE_CHANGES`, plus ``content`` (data hashes, a start vector's sha256, …)."""
    keep = set(fields) if fields is not None else None
    settings = {
        k: v
        for k, v in cfg.to_dict().items()
        if k not in RESUMABLE_CHANGES and (keep is None or k in keep)
    }
    settings.update(content)
    out: dict[str, Any] = json.loads(json.dumps(settings, sort_keys=True, default=str))
    return out


def setting_defaults(cfg: CommonTrainConfig) -> dict[str, Any]:
    """Each setting's default, as :func:`learning_settings` records values (JSON)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    normalised: dict[str, Any] = json.loads(json.dumps(out, sort_keys=True, default=str))
    return normalised


def check_resumable(
    before: dict[str, Any] | None,
    now: dict[str, Any],
    where: str,
    defaults: dict[str, Any] | None = None,
) -> None:
    """Refuse to resume ``where`` when it was trained with other settings: a ValidationError
    naming ``resume`` and each setting that differs. A setting ``before`` lacks (added to the
    config after that run was recorded) counts as its value in ``defaults``
    (:func:`setting_defaults`): new settings default to what training did before them.
    ``before`` None: written before runs recorded their settings (accepted, with a warning)."""
    if before is None:
        logger.warning("%s records no settings; resuming without checking them", where)
        return
    before = {**{k: v for k, v in (defaults or {}).items() if k in now}, **before}
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        diff = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ValidationError(
            f"`resume`: {where} was trained with other settings ({diff}); run without "
            "--resume to start afresh, or give another output_dir",
            field="resume",
        )


@dataclass
class DPOJobConfig(CommonTrainConfig):
    """One preference vector: DPO θ+ and label-swapped θ− from the same base, φ = θ+ − θ−."""

    preference: str = field(
        default="helpful", metadata=_h("Preference (vector) name: helpful, harmless, truthful, ...")
    )
    method: str = field(
        default="contrast", metadata=_h("contrast (θ+ − θ−) or positive_only (θ+ − θ_base).")
    )
    name: str | None = field(
        default=None, metadata=_h("Vector name in the store (default: the preference).")
    )
    only: str = field(
        default="",
        metadata=_h(
            "Train only this half (pos or neg) and stop, so two processes can train the halves "
            "at once; the same command without it then reuses both and extracts φ."
        ),
    )

    def _problems(self) -> list[str]:
        p = super()._problems()
        if self.method not in ("contrast", "positive_only"):
            p.append(f"`method` must be contrast or positive_only, got {self.method!r}")
        if self.only not in ("", "pos", "neg"):
            p.append(f"`only` must be pos, neg or empty, got {self.only!r}")
        if self.only == "neg" and self.method != "contrast":
            p.append("`only` neg needs `method` contrast (positive_only has no θ−)")
        return p


# CommonTrainConfig settings that only the TRL path honours: `train raco` has its own trainer and
# accepts each only at the value it implements (setting, (the one value, hint))
RACO_UNSUPPORTED: dict[str, tuple[Any, str]] = {
    "loss_type": (["sigmoid"], "use nll_weights for an NLL term"),
    "loss_weights": ([], "use weights / nll_weights"),
    "precompute_ref_log_probs": (False, ""),
    "gradient_checkpointing": (False, ""),
    "dtype": ("float32", "it trains in float32"),
}


@dataclass
class RacoJobConfig(CommonTrainConfig):
    """One model for K preferences at once (RACO, or its weighted-sum / CAGrad baselines)."""

    preferences: list[str] = field(
        default_factory=lambda: ["helpful", "harmless"],
        metadata=_h("The K objectives (preference names)."),
    )
    weights: list[float] = field(
        default_factory=lambda: [],
        metadata=_h("User weights w on the simplex, one per preference (default uniform)."),
    )
    mode: str = field(
        default="raco",
        metadata=_h("raco (clipped CAGrad), cagrad (unclipped) or weighted_sum (plain DPO)."),
    )
    c: float = field(default=0.4, metadata=_h("CAGrad radius c (RACO default 0.4)."))
    nll_weights: list[float] = field(
        default_factory=lambda: [],
        metadata=_h(
            "Per preference, the weight of an NLL term on its chosen replies added to its DPO "
            "loss (as a DPO job's loss_type [sigmoid, sft]); empty: none."
        ),
    )
    prefix_tokens: list[int] = field(
        default_factory=lambda: [],
        metadata=_h(
            "Per preference, score only the first n tokens of each reply in its DPO margin "
            "and NLL term (0: the whole reply). Greedy decoding commits to a reply's opening "
            "token, which a loss spread over the whole reply barely moves; empty: whole replies."
        ),
    )
    rescale: bool = field(
        default=False, metadata=_h("Divide the update by 1 + c (keeps step sizes comparable).")
    )
    data_per_preference: list[str] = field(
        default_factory=lambda: [],
        metadata=_h("Per-preference data as pref=file.jsonl (default: the bundled sets)."),
    )
    data_kinds: list[str] = field(
        default_factory=lambda: [],
        metadata=_h(
            "Per preference, only the rows of these kinds (the JSONL's `kind`), as "
            "pref=kind1,kind2 (e.g. harmless=harmful); default: every row."
        ),
    )
    anchors: list[str] = field(
        default_factory=lambda: [],
        metadata=_h(
            "Preferences trained as anchors instead of by DPO: their objective keeps both "
            "replies' log-probabilities where the base has them (the k2 estimate of "
            "KL(π_base‖π) summed over each reply), so the vector leaves that behaviour alone."
        ),
    )
    on_top_of: str | None = field(
        default=None,
        metadata=_h(
            "A stored low-rank vector of the same base that this vector is trained on top of: "
            "the policy starts from, and the reference (and the anchors) is, base + it; the "
            "stored vector is only the trained change, meant to be merged together with it "
            "(LoRA only)."
        ),
    )
    name: str | None = field(
        default=None, metadata=_h("Vector name for θ_RACO − θ_base (default: raco-<prefs>).")
    )
    learning_rate: float = field(default=5e-4, metadata=_h("Learning rate (AdamW)."))

    def _problems(self) -> list[str]:
        p = super()._problems()
        k = len(self.preferences)
        if k < 2:
            p.append(f"`preferences` needs at least 2 names, got {self.preferences}")
        if self.mode not in ("raco", "cagrad", "weighted_sum"):
            p.append(f"`mode` must be raco, cagrad or weighted_sum, got {self.mode!r}")
        if not (math.isfinite(self.c) and self.c >= 0):
            p.append(f"`c` must be a finite number >= 0, got {self.c}")
        if self.weights:
            if len(self.weights) != k:
                p.append(f"`weights` needs {k} values, got {len(self.weights)}")
            elif any(not math.isfinite(w) or w < 0 for w in self.weights) or not math.isclose(
                sum(self.weights), 1.0, abs_tol=1e-6
            ):
                p.append(f"`weights` must be >= 0 and sum to 1 (the simplex), got {self.weights}")
        for name, (only, hint) in RACO_UNSUPPORTED.items():
            value = getattr(self, name)
            if value != only:
                p.append(
                    f"`{name}` = {value!r} is not supported by `train raco` (only {only!r})"
                    + (f": {hint}" if hint else "")
                )
        if self.nll_weights and (
            len(self.nll_weights) != k
            or any(not math.isfinite(w) or w < 0 for w in self.nll_weights)
        ):
            p.append(f"`nll_weights` needs {k} finite values >= 0, got {self.nll_weights}")
        if self.prefix_tokens and (
            len(self.prefix_tokens) != k
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 0
                   for n in self.prefix_tokens)
        ):  # fmt: skip
            p.append(f"`prefix_tokens` needs {k} whole numbers >= 0, got {self.prefix_tokens}")
        unknown = [a for a in self.anchors if a not in self.preferences]
        if unknown:
            p.append(f"`anchors` {unknown} are not among the preferences {self.preferences}")
        elif self.anchors and set(self.anchors) >= set(self.preferences):
            p.append(f"`anchors` {self.anchors} leaves no preference to learn by DPO")
        if self.nll_weights and len(self.nll_weights) == k:
            with_nll = [a for a in self.anchors if self.nll_weights[self.preferences.index(a)] > 0]
            if with_nll:
                p.append(f"`nll_weights` must be 0 for the anchors {with_nll}")
        if self.prefix_tokens and len(self.prefix_tokens) == k:
            cut = [a for a in self.anchors if self.prefix_tokens[self.preferences.index(a)]]
            if cut:
                p.append(f"`prefix_tokens` must be 0 for the anchors {cut} (whole replies)")
        for entry in self.data_kinds:
            pref, _, kinds = entry.partition("=")
            if pref not in self.preferences or not [x for x in kinds.split(",") if x]:
                p.append(
                    f"`data_kinds` items must be pref=kind[,kind] with pref among "
                    f"{self.preferences}, got {entry!r}"
                )
        return p

    def kinds_for(self, preference: str) -> list[str]:
        """The row kinds kept for one preference (``data_kinds``); empty keeps every row."""
        return [
            x
            for e in self.data_kinds
            if e.partition("=")[0] == preference
            for x in e.partition("=")[2].split(",")
            if x
        ]

    @property
    def simplex_weights(self) -> list[float]:
        k = len(self.preferences)
        return list(self.weights) if self.weights else [1.0 / k] * k


@dataclass
class SequentialJobConfig(CommonTrainConfig):
    """MORA-style sequential alignment: DPO on one preference after another, each from the last."""

    preferences: list[str] = field(
        default_factory=lambda: ["helpful", "harmless", "truthful"],
        metadata=_h("Preferences, in order."),
    )
    name: str | None = field(
        default=None, metadata=_h("Vector name for θ_final − θ_base (default: seq-<prefs>).")
    )
    data_per_preference: list[str] = field(
        default_factory=lambda: [],
        metadata=_h(
            "Per-preference data as pref=file.jsonl (default: --data or the bundled sets)."
        ),
    )
    start_vector: str | None = field(
        default=None,
        metadata=_h(
            "A stored low-rank vector of the same base as stage 0 instead of training one: the "
            "stages start from base + it, and the stored vector adds its factors (LoRA only)."
        ),
    )

    def _problems(self) -> list[str]:
        p = super()._problems()
        if not self.preferences:
            p.append("`preferences` needs at least 1 name to train, got []")
        return p


def data_for(cfg: CommonTrainConfig, preference: str) -> list[str]:
    """Data files of one preference: its ``pref=file`` entry, else ``cfg.data`` (else bundled)."""
    entries = getattr(cfg, "data_per_preference", [])
    problems = [e for e in entries if "=" not in e]
    if problems:
        raise ValidationError(
            f"`data_per_preference` items must be pref=file, got {problems}",
            field="data_per_preference",
        )
    files = [e.split("=", 1)[1] for e in entries if e.split("=", 1)[0] == preference]
    return files or list(cfg.data)


# ------------------------------------------------------------------------------ CLI and YAML


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(scalar type, is_list) of a field annotation like ``int | None`` or ``list[str]``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin is list:
        return typing.get_args(tp)[0], True
    return tp, False


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--config`` and one flag per dataclass field (defaults left unset: YAML may fill)."""
    parser.add_argument("--config", default=None, help="YAML file with the fields below.")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, is_list = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        factory: Any = f.default_factory
        default = f.default if f.default is not dataclasses.MISSING else factory()
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        if tp is bool:
            parser.add_argument(
                flag, type=_parse_bool, nargs="?", const=True, default=None, help=help_text
            )
        else:
            conv = {"int": int, "float": float}.get(getattr(tp, "__name__", ""), str)
            parser.add_argument(
                flag, type=conv, nargs="+" if is_list else None, default=None, help=help_text
            )


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of config fields."""
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValidationError(f"`--config` {str(path)!r} must hold a mapping", field="config")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_config(cls: type[C], values: dict[str, Any] | None = None, **overrides: Any) -> C:
    """Construct ``cls`` from a mapping plus overrides, rejecting unknown keys by name."""
    merged = {**(values or {}), **{k: v for k, v in overrides.items() if v is not None}}
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ValidationError(
            f"unknown config fields {unknown}; known: {sorted(known)}", field="config"
        )
    return cls(**merged)


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """YAML (``--config``) first, then every flag given on the command line."""
    values = load_yaml(args.config) if getattr(args, "config", None) else {}
    flags = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return build_config(cls, values, **flags)
