"""A Hugging Face sequence-classification reward model as a scorer (by hub id or local path).

Input: the tokenizer's chat template over ``[user: prompt, assistant: output]`` when it has one,
else the pair encoding ``tokenizer(prompt, output)``. Score: the logit of ``label`` (default: the
only logit of a one-label reward head, else the last label). Nothing is downloaded: hub ids must
be in the local cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from prefvec.errors import NotFoundError, ValidationError
from prefvec.scoring.registry import Scorer, ScorerInfo, register_scorer


def _load(model: str | Path, device: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
        net = AutoModelForSequenceClassification.from_pretrained(str(model), local_files_only=True)
    except OSError as exc:
        raise NotFoundError(
            f"`model` {str(model)!r} is neither a folder nor a hub id in the local cache: {exc}",
            field="model",
        ) from exc
    return tok, net.to(device).eval()


@register_scorer("reward_model")
class RewardModelScorer(Scorer):
    """Logit of a sequence-classification reward model.

    Args:
        model: hub id (local cache) or folder of an ``AutoModelForSequenceClassification``.
        dimension: the preference dimension this reward model measures.
        label: index of the logit used as the score (default: 0 for one label, else the last).
        device: torch device.
        max_length: truncation length in tokens.
    """

    def __init__(
        self,
        model: str | Path,
        dimension: str = "helpful",
        label: int | None = None,
        device: str = "cpu",
        max_length: int = 512,
        batch_size: int = 8,
    ) -> None:
        self.tokenizer, self.model = _load(model, device)
        n_labels = int(self.model.config.num_labels)
        self.label = (n_labels - 1) if label is None else label
        if not 0 <= self.label < n_labels:
            raise ValidationError(f"`label` must be in [0, {n_labels}), got {label}", field="label")
        self.device, self.max_length, self.batch_size = device, max_length, batch_size
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:  # batched scoring finds the last real token
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.info = ScorerInfo(
            name="reward_model",
            dimension=dimension,
            range=(-math.inf, math.inf),
            description=f"sequence-classification reward model {model} (logit {self.label})",
        )

    def _encode(self, prompts: Sequence[str], outputs: Sequence[str]) -> Any:
        kw: dict[str, Any] = dict(
            padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        if getattr(self.tokenizer, "chat_template", None):
            texts = [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}, {"role": "assistant", "content": o}],
                    tokenize=False,
                )
                for p, o in zip(prompts, outputs, strict=True)
            ]
            return self.tokenizer(texts, add_special_tokens=False, **kw)
        return self.tokenizer(list(prompts), list(outputs), **kw)

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[str],
        outputs: Sequence[str],
        references: Sequence[str | None] | None = None,
    ) -> list[float]:
        self.check_lengths(prompts, outputs, references)
        scores: list[float] = []
        for i in range(0, len(prompts), self.batch_size):
            enc = self._encode(prompts[i : i + self.batch_size], outputs[i : i + self.batch_size])
            logits = self.model(**enc.to(self.device)).logits  # (B, num_labels)
            scores += [float(x) for x in logits[:, self.label]]
        return scores
