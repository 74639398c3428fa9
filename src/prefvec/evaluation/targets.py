"""What an evaluation runs against: a model in this process, or a prefvec server over HTTP.

Both give greedy chat replies (``generate``) and log-likelihoods (``logprobs``), which the
multiple-choice and implicit-reward suites need; the server target scores through the OpenAI
completions route (``echo`` + ``logprobs`` + ``max_tokens: 0`` over token-id prompts), so every
suite runs in process or through any prefvec server and gives the same numbers.

Log-likelihood of a reply ``y`` to chat ``x``: the chat template renders ``x`` with the generation
prompt, ``y`` is tokenised on its own (no special tokens) and appended, and
``log p(y | x) = Σ_t log softmax(logits_{t-1})[y_t]`` over the reply tokens only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from prefvec.errors import ValidationError

logger = logging.getLogger(__name__)
Message = dict[str, str]
Chat = Sequence[Mapping[str, str]]
Pair = tuple[list[int], list[int]]


def as_messages(prompt: str | Chat) -> list[Message]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def chat_prompt_ids(tokenizer: Any, prompt: str | Chat) -> list[int]:
    """Token ids of a chat with the generation prompt (what the server encodes too)."""
    messages = as_messages(prompt)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    return list(tokenizer(str(text), add_special_tokens=False)["input_ids"])


@torch.no_grad()
def sequence_logprobs(
    model: Any, pad_id: int, batch: Sequence[tuple[list[int], list[int]]]
) -> list[float]:
    """Σ log p(continuation | context) for each (context ids, continuation ids), one forward.

    Sequences are right-padded; position ``t`` of the continuation is scored by the logits at
    ``t - 1``.
    """
    seqs = [ctx + cont for ctx, cont in batch]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, T, V)
    logp = torch.log_softmax(logits.float(), dim=-1)
    out = []
    for i, (ctx, cont) in enumerate(batch):
        pos = torch.arange(len(ctx), len(ctx) + len(cont), device=device)  # reply positions
        tok = ids[i, len(ctx) : len(ctx) + len(cont)].to(device)
        out.append(float(logp[i, pos - 1, tok].sum()))
    return out


@dataclass
class InProcessTarget:
    """A causal LM in this process, optionally with a merged delta applied in place.

    Args:
        model: the (already merged, if any) causal LM.
        tokenizer: its tokenizer (chat template used for prompts).
        label: what the results name this target (e.g. the recipe key).
        merger: the :class:`~prefvec.merging.ModelMerger` holding the base copy, when merged;
            needed for reference log-probs (implicit reward).
        max_length: longest scored sequence; the context is cut from the left beyond it.
    """

    model: Any
    tokenizer: Any
    label: str = "base"
    merger: Any = None
    max_length: int = 512
    batch_size: int = 8
    weights: dict[str, float] = field(default_factory=dict)
    supports_logprobs: bool = True
    service: Any = None  # the serving service over ``model`` (built on first use)
    _delta: dict[str, torch.Tensor] | None = None

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        pid = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(pid or 0)

    def _pair_ids(self, prompt: str | Chat, reply: str) -> tuple[list[int], list[int]]:
        ctx = chat_prompt_ids(self.tokenizer, prompt)
        cont = list(self.tokenizer(reply, add_special_tokens=False)["input_ids"])[: self.max_length]
        keep = max(1, self.max_length - len(cont))
        return ctx[-keep:], cont

    def logprobs(self, requests: Sequence[tuple[str | Chat, str]]) -> list[float]:
        """``log p(reply | prompt)`` for each ``(prompt, reply)`` (prompt: text or chat)."""
        pairs = [self._pair_ids(p, r) for p, r in requests]
        order = sorted(range(len(pairs)), key=lambda i: -sum(map(len, pairs[i])))
        out = [0.0] * len(pairs)
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            for i, v in zip(
                idx,
                sequence_logprobs(self.model, self.pad_id, [pairs[i] for i in idx]),
                strict=True,
            ):
                out[i] = v
        return out

    @property
    def is_reference(self) -> bool:
        """True when this target is the base model itself (its log-probs are the reference's)."""
        return self.merger is None or not self._delta

    @contextmanager
    def reference(self) -> Iterator[InProcessTarget]:
        """Temporarily the base model (bit-exact restore), then the merge again."""
        if self.is_reference:
            yield self
            return
        self.merger.restore()
        try:
            yield self
        finally:
            self.merger.apply_merged(self._delta)

    def generate(self, prompts: Sequence[str | Chat], max_new_tokens: int = 64) -> list[str]:
        """Greedy replies through the serving service the server runs (its batcher, sampler and
        detokeniser) over this model as it is, in the input order."""
        import asyncio

        service = self._service()
        resolved = service.resolve(preferences=None)
        reqs = [
            service.prepare(
                resolved, messages=as_messages(p), max_tokens=max_new_tokens, temperature=0.0
            )
            for p in prompts
        ]

        async def run() -> list[str]:
            done = await asyncio.gather(*(service.complete(r) for r in reqs))
            return [d.text for d in done]

        return asyncio.run(run()) if reqs else []

    def _service(self) -> Any:
        if self.service is None:
            self.service = local_service(self.model, self.tokenizer, self.batch_size)
        return self.service


def local_service(model: Any, tokenizer: Any, batch_size: int = 8) -> Any:
    """A :class:`~prefvec.server.service.GenerationService` over a model in memory (its weights
    as they are: the base path serves them), with bounds wide enough for any evaluation prompt."""
    from prefvec.server.backends.transformers_backend import TransformersBackend
    from prefvec.server.resolver import Resolver
    from prefvec.server.service import GenerationService
    from prefvec.server.settings import ServerSettings

    ctx = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 20)
    settings = ServerSettings(
        device=str(next(model.parameters()).device), max_batch_size=batch_size,
        max_queue=1 << 16, max_prompt_tokens=ctx, max_tokens_limit=ctx,
        request_timeout_s=1e6, log_level="warning",
    )  # fmt: skip
    backend = TransformersBackend.wrap(settings, model, tokenizer)
    backend.start(_no_vectors)
    return GenerationService(settings, Resolver(settings, None, backend), backend)


def _no_vectors(ref: str, sha256: str) -> Any:
    raise ValidationError(f"the in-process target serves its model as is, not {ref!r}")


@dataclass
class ServerTarget:
    """A prefvec server: greedy chat replies and log-likelihoods, both over HTTP.

    Log-likelihoods use the OpenAI completions route the way the standard harness does: the
    server tokenises the chat (``/v1/tokenize``, its own template) and the reply, and scores
    their concatenation as a token-id prompt with ``echo``, ``logprobs: 0`` and
    ``max_tokens: 0``; ``log p(reply | chat)`` is the sum of the reply tokens' log-probabilities.
    The tokens, truncation and sum are those of :class:`InProcessTarget`, so both give the same
    numbers (to float tolerance: the server's batched, chunked prefill against one forward).

    Args:
        client: a :class:`~prefvec.clients.PrefvecClient`.
        preferences: ``{vector: weight}`` sent with every request.
        recipe: a recipe name instead of ``preferences``.
        concurrency: requests in flight at once (the server batches them).
        model: the ``model`` field sent (e.g. ``recipe:<name>``).
        batch_size: sequences scored per completions request.
        max_length: longest scored sequence; the context is cut from the left beyond it.
    """

    client: Any
    preferences: dict[str, float] = field(default_factory=dict)
    recipe: str | None = None
    label: str = "server"
    concurrency: int = 8
    model: str | None = None
    supports_logprobs: bool = True
    batch_size: int = 8
    max_length: int = 512
    _memo: dict[tuple[str, tuple[int, ...], tuple[int, ...]], float] = field(
        default_factory=dict, repr=False
    )

    def _opts(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.preferences:
            opts["preferences"] = self.preferences
        if self.recipe:
            opts["recipe"] = self.recipe
        if self.model:
            opts["model"] = self.model
        return opts

    def _one(self, prompt: str | Chat, max_new_tokens: int) -> str:
        opts = {"max_tokens": max_new_tokens, "temperature": 0.0, **self._opts()}
        r = self.client.chat(as_messages(prompt), **opts)
        return str(r.choices[0].message.content)

    def _map(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(fn, items))

    def generate(self, prompts: Sequence[str | Chat], max_new_tokens: int = 64) -> list[str]:
        return self._map(lambda p: self._one(p, max_new_tokens), prompts)

    def _chat_ids(self, prompt: str | Chat) -> list[int]:
        return list(self.client.tokenize(messages=as_messages(prompt)).tokens)

    def _text_ids(self, text: str) -> list[int]:
        return list(self.client.tokenize(prompt=text).tokens) if text else []

    def _pairs(self, requests: Sequence[tuple[str | Chat, str]]) -> list[Pair]:
        """(context, reply) ids of each request, truncated as :class:`InProcessTarget` does;
        each distinct prompt and reply is tokenised once."""
        prompts = {json.dumps(as_messages(p)): p for p, _ in requests}
        replies = sorted({r for _, r in requests})
        ctx = dict(zip(prompts, self._map(self._chat_ids, list(prompts.values())), strict=True))
        cont = dict(zip(replies, self._map(self._text_ids, replies), strict=True))
        out: list[Pair] = []
        for p, r in requests:
            c = cont[r][: self.max_length]
            keep = max(1, self.max_length - len(c))
            out.append((ctx[json.dumps(as_messages(p))][-keep:], c))
        return out

    def _score(self, batch: list[Pair]) -> list[float]:
        r = self.client.complete(
            [ctx + cont for ctx, cont in batch], max_tokens=0, echo=True, logprobs=0,
            **self._opts(),
        )  # fmt: skip
        choices = sorted(r.choices, key=lambda c: c.index)
        return [
            float(sum(c.logprobs.token_logprobs[len(ctx) :]))
            for c, (ctx, _) in zip(choices, batch, strict=True)
        ]

    def logprobs(self, requests: Sequence[tuple[str | Chat, str]]) -> list[float]:
        """``log p(reply | prompt)`` for each ``(prompt, reply)`` (prompt: text or chat).

        Scores are remembered per merge and token ids (shared with :meth:`reference`), so a
        sequence asked for twice gets the same number, not a second float-noisy one.
        """
        pairs = self._pairs(requests)
        opts = json.dumps(self._opts(), sort_keys=True)
        keys = [(opts, tuple(ctx), tuple(cont)) for ctx, cont in pairs]
        todo: dict[tuple[str, tuple[int, ...], tuple[int, ...]], Pair] = {}
        for key, pair in zip(keys, pairs, strict=True):
            if key not in self._memo:
                todo.setdefault(key, pair)
        work = list(todo.values())
        batches = [work[s : s + self.batch_size] for s in range(0, len(work), self.batch_size)]
        scores = [v for got in self._map(self._score, batches) for v in got]
        self._memo.update(zip(todo, scores, strict=True))
        return [self._memo[k] for k in keys]

    @property
    def is_reference(self) -> bool:
        """True when requests go to the server's base model (no preferences, recipe or model)."""
        return not any(self.preferences.values()) and self.recipe is None and self.model is None

    @contextmanager
    def reference(self) -> Iterator[ServerTarget]:
        """The same server's base model (no preferences, recipe or model name)."""
        yield replace(self, preferences={}, recipe=None, model=None, label=f"{self.label} ref")


class ModelHandle:
    """A base model loaded once, re-merged in place for each weight setting (grids reuse it).

    Vectors are looked up by name first as ``<folder>/<name>.safetensors`` in each folder of
    ``vectors_dir`` (comma-separated, first match wins), then in the local store (``name`` or
    ``name@version``).

    Args:
        base: ``bundled:<name>``, a model folder, or a cached hub id.
        store_dir: local store root (optional).
        vectors_dir: folder(s) of loose vector files, comma-separated (optional).
        dtype: torch dtype name (``float32``, ``bfloat16``).
    """

    def __init__(
        self,
        base: str,
        *,
        store_dir: str | None = None,
        vectors_dir: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        home: str | None = None,
        batch_size: int = 8,
        max_length: int = 512,
    ) -> None:
        from prefvec.merging import ModelMerger
        from prefvec.models import load_base, parse_dtype

        self.loaded = load_base(base, dtype=parse_dtype(dtype), device=device, home=home)
        self.loaded.model.eval()
        self.merger = ModelMerger(self.loaded.model)
        self.store_dir, self.vectors_dir = store_dir, vectors_dir
        self.dtype, self.batch_size, self.max_length = dtype, batch_size, max_length
        self._vectors: dict[str, Any] = {}
        self._sha256: dict[str, str] = {}
        self._service: Any = None  # one serving service over the model, shared by its targets

    def vector(self, ref: str) -> Any:
        """The :class:`~prefvec.vector_store.PreferenceVector` for ``ref`` (cached)."""
        from pathlib import Path

        from prefvec.errors import NotFoundError
        from prefvec.vector_store import PreferenceVector

        if ref not in self._vectors:
            folders = [d.strip() for d in (self.vectors_dir or "").split(",") if d.strip()]
            candidates = [Path(d) / f"{ref}.safetensors" for d in folders]
            path = next((c for c in candidates if c.is_file()), None)
            if path is not None:
                from prefvec.vector_store.store import sha256_file

                self._vectors[ref] = PreferenceVector.load(path)
                self._sha256[ref] = sha256_file(path)
            elif self.store_dir:
                from prefvec.vector_store import LocalStore

                self._vectors[ref] = LocalStore(self.store_dir, base=None).get(ref)
                self._sha256[ref] = self._vectors[ref].metadata.sha256 or ""
            else:
                raise NotFoundError(
                    f"`weights` names vector {ref!r}: not in `vectors_dir` "
                    f"{self.vectors_dir!r} and no `store_dir` given",
                    field="weights",
                )
        return self._vectors[ref]

    def vector_sha256(self, ref: str) -> str:
        """sha256 of the file ``ref`` resolves to (what a cached result was computed with)."""
        self.vector(ref)
        return self._sha256[ref]

    def target(
        self,
        weights: Mapping[str, float],
        *,
        method: str = "linear",
        density: float = 1.0,
        seed: int = 0,
        label: str | None = None,
    ) -> InProcessTarget:
        """Merge ``θ_base + merge(weights)`` in place and return the target on it."""
        from prefvec.merging import MergeSpec
        from prefvec.merging.resolve import ResolvedMerge, merged_delta

        vectors = {}
        pinned: dict[str, float] = {}
        for ref, w in weights.items():
            vec = self.vector(ref)
            key = f"{vec.metadata.name}@{vec.metadata.version or 0}"
            vectors[key] = vec
            pinned[key] = pinned.get(key, 0.0) + float(w)
        spec = MergeSpec(method=method, weights=tuple(pinned.items()), density=density, seed=seed)
        delta = merged_delta(ResolvedMerge(spec=spec, vectors=vectors))
        self.merger.apply_merged(delta, key=spec.key)
        return InProcessTarget(
            model=self.loaded.model, tokenizer=self.loaded.tokenizer,
            label=label or ("base" if spec.is_base else spec.key), merger=self.merger,
            max_length=self.max_length, batch_size=self.batch_size,
            weights=dict(weights), service=self.service(), _delta=delta,
        )  # fmt: skip

    def service(self) -> Any:
        """The serving service over this handle's model (built once)."""
        if self._service is None:
            self._service = local_service(self.loaded.model, self.loaded.tokenizer, self.batch_size)
        return self._service
