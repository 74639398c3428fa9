"""Rollouts: N sampled replies per prompt, in process or through an OpenAI-compatible server.

Seeds: each prompt gets ``prompt_seed(run_seed, prompt_id)`` (sha256 of both, 31 bits), so a
prompt's rollouts do not depend on which other prompts are in the run or in which order.

* In process: ``torch.manual_seed(prompt_seed)``, then one ``model.generate(do_sample=True,
  num_return_sequences=N)`` per prompt (the N samples are the batch).
* Server: one request per sample with ``seed = prompt_seed + i`` (``i`` = sample index); requests
  of several prompts run in a thread pool.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from prefvec.training.mora.prompts import PromptRecord

logger = logging.getLogger(__name__)


def prompt_seed(run_seed: int, prompt_id: str) -> int:
    """The sampling seed of one prompt, derived from the run seed and its id."""
    digest = hashlib.sha256(f"{run_seed}\x00{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class Generator(Protocol):
    """Anything that samples ``n`` replies per prompt.

    ``kind`` names the backend in the rollouts' provenance; ``sample_seeds`` says which seed
    each sample used (``None`` when the samples share the prompt's seed).
    """

    kind: str

    def sample(self, prompts: Sequence[PromptRecord], n: int, seed: int) -> list[list[str]]:
        """``n`` replies for each prompt (``seed`` is the run seed)."""
        ...

    def sample_seeds(self, prompt: PromptRecord, n: int, seed: int) -> list[int] | None: ...


class InProcessGenerator:
    """Sampling from a causal LM in this process (optionally merged with preference vectors).

    Args:
        model: the causal LM.
        tokenizer: its tokenizer (its chat template renders the prompt).
        temperature / top_p / max_new_tokens: sampling settings.
    """

    kind = "inprocess"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 128,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens

    @classmethod
    def from_config(cls, cfg: Any) -> InProcessGenerator:
        """Load ``cfg.base`` (merged with ``cfg.weights`` when given)."""
        weights = cfg.weight_map()
        if weights:
            from prefvec.evaluation.targets import ModelHandle

            handle = ModelHandle(
                cfg.base,
                store_dir=cfg.store_dir,
                vectors_dir=cfg.vectors_dir,
                dtype=cfg.dtype,
                device=cfg.device,
            )
            target = handle.target(weights)
            model, tokenizer = target.model, target.tokenizer
        else:
            from prefvec.models import load_base, parse_dtype

            loaded = load_base(cfg.base, dtype=parse_dtype(cfg.dtype), device=cfg.device)
            model, tokenizer = loaded.model, loaded.tokenizer
        model.eval()
        return cls(
            model,
            tokenizer,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
        )

    def sample_seeds(self, prompt: PromptRecord, n: int, seed: int) -> list[int] | None:
        return None

    def sample(self, prompts: Sequence[PromptRecord], n: int, seed: int) -> list[list[str]]:
        return [self._sample_one(p, n, prompt_seed(seed, p.id)) for p in prompts]

    def _sample_one(self, prompt: PromptRecord, n: int, seed: int) -> list[str]:
        import torch

        from prefvec.evaluation.targets import chat_prompt_ids

        tok = self.tokenizer
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        device = next(self.model.parameters()).device
        ids = torch.tensor([chat_prompt_ids(tok, prompt.messages)], device=device)  # (1, T)
        torch.manual_seed(seed)
        with torch.no_grad():
            gen = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=max(self.temperature, 1e-5),
                top_p=self.top_p,
                top_k=0,
                num_return_sequences=n,
                max_new_tokens=self.max_new_tokens,
                eos_token_id=eos,
                pad_token_id=pad,
            )  # (n, T + new)
        out = []
        for row in gen[:, ids.shape[1] :].tolist():
            if eos in row:
                row = row[: row.index(eos)]
            out.append(str(tok.decode(row, skip_special_tokens=True)).strip())
        return out


class ServerGenerator:
    """Sampling through an OpenAI-compatible chat endpoint (a prefvec server or any other).

    Args:
        client: a :class:`~prefvec.clients.PrefvecClient` (anything with its ``chat``).
        preferences: ``{vector: weight}`` sent with every request (prefvec servers only).
        concurrency: requests in flight.
    """

    kind = "server"

    def __init__(
        self,
        client: Any,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 128,
        preferences: dict[str, float] | None = None,
        model: str | None = None,
        concurrency: int = 4,
    ) -> None:
        self.client, self.preferences, self.model = client, preferences or {}, model
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.concurrency = concurrency

    @classmethod
    def from_config(cls, cfg: Any) -> ServerGenerator:
        from prefvec.clients import PrefvecClient

        return cls(
            PrefvecClient(cfg.url),
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            preferences=cfg.weight_map(),
            model=cfg.model,
            concurrency=cfg.concurrency,
        )

    def sample_seeds(self, prompt: PromptRecord, n: int, seed: int) -> list[int] | None:
        base = prompt_seed(seed, prompt.id)
        return [base + i for i in range(n)]

    def _one(self, job: tuple[PromptRecord, int]) -> str:
        prompt, s = job
        opts: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": s,
            "max_tokens": self.max_new_tokens,
        }
        if self.preferences:
            opts["preferences"] = self.preferences
        if self.model:
            opts["model"] = self.model
        r = self.client.chat(prompt.messages, **opts)
        return str(r.choices[0].message.content or "").strip()

    def sample(self, prompts: Sequence[PromptRecord], n: int, seed: int) -> list[list[str]]:
        jobs = [(p, s) for p in prompts for s in self.sample_seeds(p, n, seed) or []]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            texts = list(pool.map(self._one, jobs))
        return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def generator_from_config(cfg: Any) -> Generator:
    """A server generator when ``cfg.url`` is set, else the in-process one."""
    if cfg.url:
        logger.info("rollouts through %s", cfg.url)
        return ServerGenerator.from_config(cfg)
    logger.info("rollouts in process on %s", cfg.base)
    return InProcessGenerator.from_config(cfg)


def rollout_rows(
    generator: Generator, prompts: Sequence[PromptRecord], n: int, seed: int
) -> list[list[dict[str, Any]]]:
    """One ``rollouts.jsonl`` line per prompt: its texts and the seeds that made them."""
    texts = generator.sample(prompts, n, seed)
    rows = []
    for p, t in zip(prompts, texts, strict=True):
        if len(t) != n:
            from prefvec.errors import ValidationError

            raise ValidationError(f"generator returned {len(t)} samples for {p.id!r}, wanted {n}")
        rows.append(
            [
                {
                    "id": p.id,
                    "texts": list(t),
                    "backend": generator.kind,
                    "prompt_seed": prompt_seed(seed, p.id),
                    "sample_seeds": generator.sample_seeds(p, n, seed),
                }
            ]
        )
    return rows
