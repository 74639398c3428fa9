"""Tokenising preference pairs and computing DPO log-probabilities by hand (for RACO).

Mirrors TRL's conversational preprocessing: the prompt is rendered with the chat template and
``add_generation_prompt=True``; the reply's tokens are what prompt + reply adds after the longest
common prefix. Sequences are laid out ``[all a-replies; all b-replies]`` in one batch of 2B.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

Message = dict[str, str]


def chat_ids(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool) -> list[int]:
    """Token ids of chat messages rendered with the tokenizer's template."""
    out = tokenizer.apply_chat_template(
        list(messages), tokenize=True, add_generation_prompt=add_generation_prompt
    )
    ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    return list(ids)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class EncodedPair:
    """Token ids of one pair: the prompt and the two replies (a, b) after it."""

    prompt: list[int]
    a: list[int]
    b: list[int]


def encode_pair(
    tokenizer: Any, messages: Sequence[Message], a: str, b: str, max_length: int
) -> EncodedPair:
    """Tokenise prompt + each reply; replies are cut so prompt + reply ≤ ``max_length``."""
    prompt = chat_ids(tokenizer, messages, add_generation_prompt=True)
    full_a = chat_ids(tokenizer, [*messages, {"role": "assistant", "content": a}], False)
    full_b = chat_ids(tokenizer, [*messages, {"role": "assistant", "content": b}], False)
    n = min(len(prompt), _common_prefix(prompt, full_a), _common_prefix(prompt, full_b))
    room = max(1, max_length - n)
    return EncodedPair(prompt[:n], full_a[n:][:room], full_b[n:][:room])


def collate(pairs: Sequence[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch of 2B sequences ``[a_1..a_B, b_1..b_B]`` with a completion mask."""
    seqs = [(p.prompt, p.a) for p in pairs] + [(p.prompt, p.b) for p in pairs]
    width = max(len(pr) + len(c) for pr, c in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (2B, T)
    attn = torch.zeros_like(ids)
    comp = torch.zeros_like(ids)
    for i, (pr, c) in enumerate(seqs):
        n = len(pr) + len(c)
        ids[i, :n] = torch.tensor(pr + c)
        attn[i, :n] = 1
        comp[i, len(pr) : n] = 1
    return {"input_ids": ids, "attention_mask": attn, "completion_mask": comp}


def token_logps(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log π of each reply token, 0 elsewhere (prompt, padding), shape (2B, T−1)."""
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).logits  # (2B, T, V)
    logits = logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]  # (2B, T-1)
    mask = batch["completion_mask"][:, 1:].to(logits.dtype)
    logp = torch.gather(F.log_softmax(logits, dim=-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    return logp * mask


def sequence_logps(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ log π(token) over each sequence's reply tokens, shape (2B,)."""
    return token_logps(model, batch).sum(dim=1)


def reply_prefix_mask(completion_mask: torch.Tensor, n: int) -> torch.Tensor:
    """Mask (2B, T−1) of each reply's first ``n`` tokens in :func:`token_logps`'s layout
    (``completion_mask`` is :func:`collate`'s, (2B, T)); ``n`` = 0 keeps the whole reply."""
    mask = completion_mask[:, 1:]
    if n == 0:
        return mask
    return mask * (mask.cumsum(dim=1) <= n).to(mask.dtype)


def implicit_margins(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float
) -> torch.Tensor:
    """β[(log π − log π_ref)(a) − (log π − log π_ref)(b)] per pair, shape (B,)."""
    delta = policy_logps - ref_logps  # (2B,)
    a, b = delta.chunk(2)
    return beta * (a - b)


def dpo_losses(margins: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-objective DPO losses (DPO Eq. 7) from margins (K, B), one row per objective, and
    labels (K, B) in {+1, −1, 0}.

    Label +1 means reply a is preferred for that objective, −1 reply b, 0 no opinion (masked).
    Returns a (K,) tensor; an objective with no labelled pair in the batch gets 0.
    """
    signed = labels.to(margins.dtype) * margins  # (K, B)
    mask = (labels != 0).to(margins.dtype)
    per = -F.logsigmoid(signed) * mask
    return per.sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def nll_losses(
    policy_logps: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Per-objective NLL of the preferred replies, a token-level mean as TRL's ``sft`` loss term.

    ``policy_logps`` and ``lengths`` are per sequence (2B,) in the ``[a; b]`` layout of
    :func:`collate`; ``labels`` (K, B) pick the preferred reply (+1 a, −1 b, 0 none). Returns
    −Σ log π(preferred tokens) / Σ preferred tokens for each objective (0 if none labelled).
    """
    logp_a, logp_b = policy_logps.chunk(2)
    len_a, len_b = lengths.to(policy_logps.dtype).chunk(2)
    pick_a = (labels > 0).to(policy_logps.dtype)  # (K, B)
    pick_b = (labels < 0).to(policy_logps.dtype)
    total = pick_a @ logp_a + pick_b @ logp_b  # (K,)
    tokens = pick_a @ len_a + pick_b @ len_b
    return -total / tokens.clamp_min(1.0)


def anchor_losses(
    policy_tokens: torch.Tensor, ref_tokens: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Per-objective anchor loss: how far the policy moved both replies of its pairs.

    ``policy_tokens`` and ``ref_tokens`` are per-token log-probabilities (2B, T−1) from
    :func:`token_logps` in the ``[a; b]`` layout; ``labels`` (K, B) select each objective's
    pairs (any non-zero label). Per reply, ½ Σ_t (log π − log π_ref)² (the k2 estimate of
    KL(π_ref‖π) along the reply, exact to second order); the loss is its mean over the
    objective's 2·n replies (0 if none), so it is 0 where the policy equals the reference.
    """
    per_reply = 0.5 * (policy_tokens - ref_tokens).pow(2).sum(dim=1)  # (2B,)
    a, b = per_reply.chunk(2)
    pick = (labels != 0).to(per_reply.dtype)  # (K, B)
    return (pick @ (a + b)) / (2.0 * pick.sum(dim=1)).clamp_min(1.0)
