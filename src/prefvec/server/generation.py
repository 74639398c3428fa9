"""Backend-independent pieces of generation: sampling parameters, token sampling, and
incremental detokenisation with stop strings.

:class:`TextStream` turns generated token ids into text deltas that never end in half a UTF-8
character (a trailing U+FFFD is held back until the next token completes it) and never show the
start of a stop string before it is known not to be one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from prefvec.protocol import TEMPERATURE_GREEDY_BELOW, FinishReason

_REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples.

    Args:
        max_tokens: tokens to generate at most.
        temperature: 0 means greedy (argmax).
        top_p: nucleus sampling mass in (0, 1].
        seed: seeds the request's own generator (sampling is reproducible per request).
        stop: stop strings; the text ends before the first one found.
        logprobs: None for no log-probabilities; k >= 0 for the sampled token's log-probability
            and its top-k alternatives at each generated position.
        prompt_logprobs: None, or k >= 0 for the prompt tokens' log-probabilities (top-k each).
        frequency_penalty: subtracted from a token's logit once per occurrence in the output.
        presence_penalty: subtracted from a token's logit if it occurs in the output at all.
        logit_bias: ``((token id, bias), ...)`` added to the logits before sampling.

    Log-probabilities are those of the model (raw log-softmax of its logits); penalties and
    biases only change which token is picked.
    """

    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()

    @property
    def adjusts_logits(self) -> bool:
        """Whether :func:`adjust_logits` changes anything."""
        return bool(self.frequency_penalty or self.presence_penalty or self.logit_bias)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def generator(self, device: str | torch.device) -> torch.Generator | None:
        """A generator seeded with :attr:`seed` on ``device`` -- the device of the logits it will
        sample from (``torch.multinomial`` needs both on one device); None for greedy decoding."""
        if self.greedy:
            return None
        gen = torch.Generator(device=device)
        if self.seed is None:
            gen.seed()
        else:
            gen.manual_seed(self.seed)
        return gen


def adjust_logits(
    logits: torch.Tensor, params: SamplingParams, generated: list[int] | tuple[int, ...]
) -> torch.Tensor:
    """One row of logits (V,) after OpenAI's penalties and ``logit_bias``.

    ``logits[j] - c[j] * frequency_penalty - (c[j] > 0) * presence_penalty + bias[j]``, where
    ``c[j]`` counts token j among the tokens generated so far (the prompt does not count). The
    input is left untouched; without penalties or biases it is returned as is.
    """
    if not params.adjusts_logits:
        return logits
    out = logits.float().clone()  # (V,)
    if generated and (params.frequency_penalty or params.presence_penalty):
        ids = torch.tensor(list(generated), dtype=torch.long, device=out.device)
        counts = torch.bincount(ids, minlength=out.shape[-1])[: out.shape[-1]].to(out.dtype)
        out -= counts * params.frequency_penalty + (counts > 0).to(out.dtype) * (
            params.presence_penalty
        )
    for token, bias in params.logit_bias:
        out[token] += bias
    return out


def sample_token(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> int:
    """Pick the next token from one row of logits (V,): argmax, or temperature + top-p sampling."""
    # Finite for every accepted input (issue 15): temperatures below 1e-5 decode greedily
    # (logits / 1e-45 is inf in float32); the rest is computed in float32 from the logits shifted
    # by their maximum (so (x - max) / T is <= 0 and exp never overflows; -inf just means p = 0);
    # NaN logits count as -inf; the top token is always kept, so a tiny top_p is argmax-like.
    top = torch.finfo(torch.float32).max
    x = logits.float().nan_to_num(nan=float("-inf"), posinf=top)  # (V,)
    tiny = params.temperature < TEMPERATURE_GREEDY_BELOW
    if params.greedy or tiny or not bool(torch.isfinite(x).any()):
        return int(torch.argmax(x).item())
    logp = torch.log_softmax((x - x.max()) / params.temperature, dim=-1)  # (V,), max entry 0
    probs = logp.exp()  # the top token has p > 0, so the sum is > 0
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p; the first token always stays
        drop = torch.cumsum(sorted_p, dim=-1) - sorted_p >= params.top_p
        drop[0] = False
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    idx = torch.multinomial(probs, 1, generator=gen)
    return int(idx.item())


def _held_stop_prefix(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


class TextStream:
    """Incremental detokenisation of one sequence, with stop strings, in O(new tokens) a step.

    Args:
        tokenizer: a Hugging Face tokenizer (``decode``).
        stop: stop strings.

    Call :meth:`push` per generated (non-EOS) token and :meth:`flush` once at the end; both
    return the text delta to emit. After a stop string, :attr:`finish_reason` is ``"stop"``.

    Only a short window of ids is decoded per step (the offsets trick of incremental
    detokenisers): ``decode(ids[prefix:])`` minus ``decode(ids[prefix:read])`` is the new text,
    where ``prefix``..``read`` are the ids that produced the previous piece. Decoding the window
    with its left context keeps tokenizers that drop a leading space right.
    """

    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self._longest_stop = max((len(s) for s in self.stop), default=0)
        self.ids: list[int] = []
        self._prefix = 0  # window start: ids before it are never decoded again
        self._read = 0  # ids up to here have produced text
        self._decoded = ""  # all complete text decoded so far
        self.emitted = ""
        self.finish_reason: FinishReason | None = None

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def _advance(self) -> None:
        """Append the text the ids since the last piece complete (none while a UTF-8 character
        is still incomplete)."""
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) <= len(before) or after.endswith(_REPLACEMENT):
            return
        self._decoded += after[len(before) :]
        self._prefix, self._read = self._read, len(self.ids)

    def _delta(self, upto: int) -> str:
        if upto <= len(self.emitted):
            return ""
        delta = self._decoded[len(self.emitted) : upto]
        self.emitted = self._decoded[:upto]
        return delta

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now safe to emit."""
        self.ids.append(token_id)
        self._advance()
        text = self._decoded
        if self.stop:
            start = max(0, len(self.emitted) - self._longest_stop)
            hits = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                self.finish_reason = "stop"
                return self._delta(min(hits))
        tail = text[max(len(self.emitted), len(text) - self._longest_stop) :]
        return self._delta(len(text) - _held_stop_prefix(tail, self.stop))

    def flush(self) -> str:
        """The remaining text at the end of generation (unless a stop string ended it)."""
        if self.finish_reason == "stop":
            return ""
        rest = self._decode(self.ids[self._prefix :])
        before = self._decode(self.ids[self._prefix : self._read])
        if len(rest) > len(before):
            self._decoded += rest[len(before) :]
            self._prefix = self._read = len(self.ids)
        return self._delta(len(self._decoded))

    @property
    def text(self) -> str:
        """All text emitted so far."""
        return self.emitted
