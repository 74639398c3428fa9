"""The default backend: a transformers causal LM behind our own iteration-level batcher.

One worker thread owns the model. Each turn of its loop it (1) admits waiting requests of the
running batch's group into a prefill batch, (2) runs one prefill chunk of at most
``max_prefill_tokens`` tokens, and (3) runs one decode step of the running batch. A prefill batch
whose prompt is done samples its first tokens and joins the running batch (its KV cache, mask and
positions left-padded to the common length and concatenated along the batch, TGI-style); rows
leave the batch the step they finish. So a short request that arrives while a long one decodes
starts at the next step and finishes first, and a long prompt's prefill stalls running rows for
one chunk at a time only.

Groups: base and low-rank rows share any batch (per-row mixing, :class:`~prefvec.merging.
LowRankMixer`); dense rows share the batch of their recipe key only (the merged weights are
applied in place). A waiting request of another group stops further admission, so the running
batch drains and that group goes next (FIFO across groups, no starvation).

Why not transformers' own continuous batching (``generate_batch`` / ``init_continuous_batching``):
it packs every request into one ragged token sequence over a paged cache, so a module sees one
flat batch and our per-row low-rank mixing (one weight set per batch row) cannot ride on it. We use
what transformers offers that fits: ``DynamicCache`` (its per-layer key/value tensors, and
``batch_select_indices`` to drop finished rows), ``logits_to_keep`` so only the positions we score
go through the LM head, and explicit ``position_ids`` with a left-padded attention mask.

``batching = "static"`` (a setting) keeps the previous behaviour for comparison: nothing joins a
running batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from prefvec.errors import PrefvecError, QueueFullError, RequestTimeoutError
from prefvec.protocol import Usage
from prefvec.server.backends.base import (
    Backend,
    Capabilities,
    Event,
    FinishEvent,
    GenerationRequest,
    TextEvent,
    TokenLogprob,
    VectorSource,
    eos_token_ids,
)
from prefvec.server.generation import TextStream, adjust_logits, sample_token

if TYPE_CHECKING:
    from prefvec.server.resolver import Resolved
    from prefvec.server.settings import ServerSettings

logger = logging.getLogger(__name__)


class _Outbox:
    """One request's events, from the worker thread to the event loop (thread-safe)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()

    def put(self, item: Event | BaseException) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed: the client is gone
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


@dataclass
class _Row:
    """Decoding state of one request."""

    req: GenerationRequest
    out: _Outbox
    stream: TextStream
    gen: torch.Generator | None
    weights: dict[str, float]  # mixer refs -> weight (empty: base or dense row)
    aborted: bool = False
    finished: bool = False
    n_generated: int = 0
    next_token: int = -1
    prompt_lp: list[TokenLogprob | None] | None = None

    @property
    def live(self) -> bool:
        return not (self.finished or self.aborted)

    def expired(self) -> bool:
        d = self.req.deadline
        return d is not None and time.monotonic() > d

    def fail(self, exc: BaseException) -> None:
        if not self.finished:
            self.finished = True
            self.out.put(exc)

    def finish(self, reason: Any, prompt_lp: Any = None) -> None:
        if self.finished:
            return
        self.finished = True
        n = len(self.req.prompt_ids)
        usage = Usage(
            prompt_tokens=n, completion_tokens=self.n_generated, total_tokens=n + self.n_generated
        )
        lp = tuple(self.prompt_lp) if self.prompt_lp is not None else None
        self.out.put(FinishEvent(reason, usage, lp))


@dataclass
class _Batch:
    """Rows decoding together: their KV cache (B, H, L, D) per layer, mask (B, L), last
    positions (B, 1)."""

    rows: list[_Row]
    cache: Any
    mask: torch.Tensor
    positions: torch.Tensor


@dataclass
class _Prefill:
    """Newcomers being prefilled together, ``done`` prompt columns so far (left-padded)."""

    rows: list[_Row]
    ids: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T)
    positions: torch.Tensor  # (B, T)
    cache: Any
    done: int = 0


@dataclass
class _Counters:
    decode_steps: int = 0
    decode_rows: int = 0
    prefill_chunks: int = 0
    joins: int = 0
    # request ids of each recent decode step (who shared a batch), for tests and benchmarks
    step_log: deque[tuple[str, ...]] = field(default_factory=lambda: deque(maxlen=10_000))


class TransformersBackend(Backend):
    """Serves a transformers causal LM (CPU or CUDA): dense merges, per-row low-rank mixing,
    iteration-level batching (see the module docstring)."""

    name = "transformers"
    capabilities = Capabilities(
        lowrank_mixing=True, dense_recipes=True, logprobs=True, prompt_logprobs=True
    )

    def __init__(self, settings: ServerSettings) -> None:
        super().__init__(settings)
        self.model: Any = None
        self.merger: Any = None
        self.cache: Any = None
        self.mixer: Any = None
        self.eos_ids: set[int] = set()
        self.pad_id = 0
        self.merges_built = 0
        self.counters = _Counters()
        self._vectors: VectorSource | None = None
        self._mixer_refs: OrderedDict[str, None] = OrderedDict()
        self._pending: deque[_Row] = deque()
        self._rows: dict[str, _Row] = {}  # request id -> row, queued or running
        self._cv = threading.Condition()
        self._running = False
        self._paused = False
        self._thread: threading.Thread | None = None
        self._batch: _Batch | None = None
        self._prefill: _Prefill | None = None
        self._group: str | None = None
        self._cache_kw = "past_key_values"
        self._forget: set[str] = set()  # names of deleted vectors, dropped between steps

    # -- loading -------------------------------------------------------------------------------

    def load(self) -> None:
        from prefvec.models import load_base

        s = self.settings
        loaded = load_base(s.base, dtype=s.dtype, device=s.device, home=s.home)
        self.model_dir, self.fingerprint = loaded.model_dir, loaded.fingerprint
        self._attach(loaded.model, loaded.tokenizer)
        logger.info("loaded %s on %s (%s)", s.base, self.device, s.dtype)

    @classmethod
    def wrap(cls, settings: ServerSettings, model: Any, tokenizer: Any) -> TransformersBackend:
        """A backend over a model already in memory (the in-process evaluation target): the
        same batcher, sampler and detokeniser the server runs."""
        backend = cls(settings)
        backend._attach(model, tokenizer)
        return backend

    def _attach(self, model: Any, tokenizer: Any) -> None:
        from prefvec.merging import LowRankMixer, MergedCache, ModelMerger

        s = self.settings
        self.model, self.tokenizer = model, tokenizer
        self.device = str(next(model.parameters()).device)
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        self.merger = ModelMerger(self.model)
        self.cache = MergedCache(s.merge_cache_bytes)
        self.mixer = LowRankMixer(self.model)
        self.eos_ids = self._eos_ids()
        # transformers >= 5.2x names the KV cache argument `cache` (`past_key_values` before)
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else min(self.eos_ids, default=0)
        self.ready = True

    def _eos_ids(self) -> set[int]:
        return eos_token_ids(self.tokenizer.eos_token_id, self.model.generation_config.eos_token_id)

    def start(self, vectors: VectorSource) -> None:
        self._vectors = vectors
        if self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="prefvec-batcher", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        """Admit nothing new (queued requests wait; running rows go on): for draining."""
        with self._cv:
            self._paused = True

    def resume(self) -> None:
        with self._cv:
            self._paused = False
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._running = False
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        for row in list(self._rows.values()):
            row.fail(PrefvecError("server is shutting down"))
        self._rows.clear()
        if self.mixer is not None:
            self.mixer.close()
        self.ready = False

    # -- the request seam ----------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        out = _Outbox(asyncio.get_running_loop())
        self._submit(request, out)
        done = False
        try:
            while True:
                item = await out.queue.get()
                if isinstance(item, BaseException):
                    done = True
                    raise item
                yield item
                if isinstance(item, FinishEvent):
                    done = True
                    return
        finally:
            if not done:
                self.abort(request.id)

    def _submit(self, request: GenerationRequest, out: _Outbox) -> None:
        r = request.resolved
        row = _Row(
            request, out, TextStream(self.tokenizer, request.params.stop),
            request.params.generator(self.device), r.mix_weights(),
        )  # fmt: skip
        limit = self.settings.max_queue
        with self._cv:
            if len(self._pending) >= limit:
                raise QueueFullError(
                    f"the request queue is full ({len(self._pending)} pending, `max_queue` = "
                    f"{limit}); retry after {self.settings.retry_after_s:g} s",
                    retry_after=self.settings.retry_after_s,
                )
            self._pending.append(row)
            self._rows[request.id] = row
            self._cv.notify_all()

    def abort(self, request_id: str) -> None:
        with self._cv:
            row = self._rows.pop(request_id, None)
            if row is None:
                return
            row.aborted = True
            with contextlib.suppress(ValueError):
                self._pending.remove(row)

    def forget_vector(self, name: str) -> None:
        """Forget mixer copies of ``name`` (they are reloaded from the store if used again)."""
        with self._cv:
            self._forget.add(name)
            self._cv.notify_all()

    def stats(self) -> dict[str, Any]:
        c = self.cache
        cache = {"merges_built": self.merges_built}
        if c is not None:
            cache.update(hits=c.hits, misses=c.misses, evictions=c.evictions, nbytes=c.nbytes)
        batch, pre = self._batch, self._prefill
        return {
            "queue_depth": len(self._pending),
            "running": (len(batch.rows) if batch else 0) + (len(pre.rows) if pre else 0),
            "cache": cache,
            "decode_steps": self.counters.decode_steps,
            "decode_rows": self.counters.decode_rows,
            "prefill_chunks": self.counters.prefill_chunks,
        }

    # -- the worker loop -----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._running and not self._has_work():
                    self._cv.wait(0.5)
                if not self._running:
                    return
                admitted = self._admit()
            try:
                self._turn(admitted)
            except Exception as exc:  # contain it: fail what was in flight, keep serving
                logger.exception("generation step failed")
                self._fail_all(exc)

    def _has_work(self) -> bool:
        return bool(self._batch or self._prefill or (self._pending and not self._paused))

    def _turn(self, admitted: list[_Row]) -> None:
        with torch.inference_mode():
            self._apply_forgets()
            if admitted:
                self._start_prefill(admitted)
            if self._prefill is not None:
                self._prefill_chunk()
            if self._batch is not None:
                self._decode_step()

    def _fail_all(self, exc: BaseException) -> None:
        rows = (self._batch.rows if self._batch else []) + (
            self._prefill.rows if self._prefill else []
        )
        for row in rows:
            row.fail(exc)
            self._release(row)
        self._batch = self._prefill = None

    def _release(self, row: _Row) -> None:
        with self._cv:
            if self._rows.get(row.req.id) is row:
                del self._rows[row.req.id]

    def _admit(self) -> list[_Row]:
        """Waiting rows that start now (called with the lock held)."""
        self._drop_dead_pending()
        if self._paused or self._prefill is not None or not self._pending:
            return []
        if self._batch is not None and self.settings.batching == "static":
            return []
        running = len(self._batch.rows) if self._batch else 0
        group = self._group if self._batch else self._pending[0].req.resolved.group_key
        room = self.settings.max_batch_size - running
        admitted: list[_Row] = []
        while self._pending and len(admitted) < room:
            if self._pending[0].req.resolved.group_key != group:
                break  # an older request of another group goes next: let this batch drain
            admitted.append(self._pending.popleft())
        return admitted

    def _drop_dead_pending(self) -> None:
        for row in [r for r in self._pending if r.aborted or r.expired()]:
            self._pending.remove(row)
            if not row.aborted:
                row.fail(RequestTimeoutError("request timed out while queued", field="timeout"))
            self._rows.pop(row.req.id, None)

    # -- model state ---------------------------------------------------------------------------

    def _activate(self, resolved: Resolved) -> None:
        """Put the model on ``resolved``'s weights (no batch is running)."""
        if resolved.path == "dense":
            self.activate_dense(resolved.spec.key, lambda: self._dense_deltas(resolved))
        else:
            self.activate_base()
        self._group = resolved.group_key

    def activate_base(self) -> None:
        """Put the model back on the base weights (bit-exact)."""
        if self.merger.current_key is not None or self.merger.dirty:
            self.merger.restore()

    def activate_dense(self, key: str, build: Callable[[], list[tuple[Any, float]]]) -> None:
        """Serve the dense merge ``key``: from the merged-weight cache, or built by ``build()``
        (``[(delta, weight)]``) in place, then snapshotted into the cache."""
        if self.merger.current_key == key:
            return
        cached = self.cache.get(key)
        if cached is not None:
            self.merger.load_weights(cached, key=key)
            return
        self.merger.apply(build(), key=key)
        self.merges_built += 1
        buffers: dict[str, torch.Tensor] = {}
        for tensors in self.cache.make_room(self.merger.dirty_nbytes):
            buffers.update(tensors)  # evicted entries' buffers, reused by the snapshot
        self.cache.put(key, self.merger.snapshot(out=buffers))

    def _dense_deltas(self, resolved: Resolved) -> list[tuple[Any, float]]:
        from prefvec.merging.resolve import spec_deltas

        spec, load = resolved.spec, self._vector_source()
        vectors = {ref: load(ref, resolved.shas[ref]) for ref, w in spec.weights if w}
        return list(spec_deltas(spec, vectors))

    def _vector_source(self) -> VectorSource:
        if self._vectors is None:
            raise PrefvecError("backend not started: no vector source")
        return self._vectors

    def _prepare_lowrank(self, row: _Row, protect: set[str]) -> None:
        resolved = row.req.resolved
        load = self._vector_source()
        for key in row.weights:
            if key in self._mixer_refs:
                self._mixer_refs.move_to_end(key)
                continue
            ref = key.split("#", 1)[0]
            vec = load(ref, resolved.shas[ref])
            self.mixer.add_vector(key, vec.factors())
            self._mixer_refs[key] = None
        protect.update(row.weights)
        while len(self._mixer_refs) > self.settings.vector_cache_size:
            victim = next((k for k in self._mixer_refs if k not in protect), None)
            if victim is None:
                break
            del self._mixer_refs[victim]
            self.mixer.remove_vector(victim)

    def _apply_forgets(self) -> None:
        if not self._forget:
            return
        with self._cv:
            names, self._forget = self._forget, set()
        in_use = {k for r in self._live_rows() for k in r.weights}
        for key in [k for k in self._mixer_refs if k.split("@", 1)[0] in names]:
            if key not in in_use:
                del self._mixer_refs[key]
                self.mixer.remove_vector(key)

    def _live_rows(self) -> list[_Row]:
        return (self._batch.rows if self._batch else []) + (
            self._prefill.rows if self._prefill else []
        )

    # -- prefill -------------------------------------------------------------------------------

    def _start_prefill(self, rows: list[_Row]) -> None:
        from transformers import DynamicCache

        if self._batch is None:
            try:
                self._activate(rows[0].req.resolved)
            except Exception as exc:
                if not isinstance(exc, PrefvecError):
                    logger.exception("activating the merge for %d rows failed", len(rows))
                for row in rows:
                    row.fail(exc)
                    self._release(row)
                return
        rows = self._load_vectors(rows)
        if not rows:
            return
        ids, mask = self._left_pad([r.req.prompt_ids for r in rows])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        for row in rows:
            if row.req.params.prompt_logprobs is not None:
                row.prompt_lp = [None]
        cache = DynamicCache(config=self.model.config)
        self._prefill = _Prefill(rows, ids, mask, positions, cache)

    def _load_vectors(self, rows: list[_Row]) -> list[_Row]:
        """Rows whose low-rank vectors are in the mixer; a row that fails to load fails alone."""
        ok: list[_Row] = []
        protect = {k for r in self._live_rows() for k in r.weights}
        for row in rows:
            try:
                if row.req.resolved.path == "lowrank":
                    self._prepare_lowrank(row, protect)
            except Exception as exc:
                if not isinstance(exc, PrefvecError):
                    logger.exception("loading vectors for request %s failed", row.req.id)
                row.fail(exc)
                self._release(row)
            else:
                ok.append(row)
        return ok

    def _left_pad(self, prompts: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, T)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _forward(
        self, rows: Sequence[_Row], ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
        cache: Any, keep: int,
    ) -> torch.Tensor:  # fmt: skip
        """One forward with the rows' mixing weights; logits (B, keep, V) in float32."""
        weights = [r.weights for r in rows]
        with ExitStack() as stack:
            if any(weights):
                stack.enter_context(self.mixer.mixing(weights))
            out = self.model(
                input_ids=ids, attention_mask=mask, position_ids=pos,
                use_cache=True, logits_to_keep=keep, **{self._cache_kw: cache},
            )  # fmt: skip
        return out.logits.float()

    def _prefill_chunk(self) -> None:
        pre = self._prefill
        assert pre is not None
        width = pre.ids.shape[1]
        step = max(1, self.settings.max_prefill_tokens // max(1, len(pre.rows)))
        start, stop = pre.done, min(width, pre.done + step)
        scored = any(r.prompt_lp is not None for r in pre.rows)
        logits = self._forward(
            pre.rows, pre.ids[:, start:stop], pre.mask[:, :stop], pre.positions[:, start:stop],
            pre.cache, 0 if scored else 1,
        )  # fmt: skip
        self.counters.prefill_chunks += 1
        pre.done = stop
        if scored:
            self._score_prompt(pre, logits, start, stop)
        if stop < width:
            return
        self._prefill = None
        self._finish_prefill(pre, logits[:, -1, :])

    def _score_prompt(self, pre: _Prefill, logits: torch.Tensor, start: int, stop: int) -> None:
        """Log-probabilities of prompt tokens ``start+1 .. stop`` (logits at t predict t+1)."""
        width = pre.ids.shape[1]
        logp = torch.log_softmax(logits, dim=-1)  # (B, C, V)
        for i, row in enumerate(pre.rows):
            if row.prompt_lp is None:
                continue
            first = width - len(row.req.prompt_ids)  # column of the row's first real token
            k = int(row.req.params.prompt_logprobs or 0)
            for col in range(max(start, first), stop):
                if col + 1 >= width:
                    break
                tok = int(pre.ids[i, col + 1])
                row.prompt_lp.append(_token_logprob(logp[i, col - start], tok, k))

    def _finish_prefill(self, pre: _Prefill, last: torch.Tensor) -> None:
        """First tokens of the prefilled rows, then the survivors join the running batch."""
        keep = [i for i, row in enumerate(pre.rows) if not self._step(row, last[i])]
        if not keep:
            return
        idx = torch.tensor(keep, device=self.device)
        if len(keep) < len(pre.rows):
            pre.cache.batch_select_indices(idx)
        rows = [pre.rows[i] for i in keep]
        mask, pos = pre.mask[idx], pre.positions[idx][:, -1:]
        if self._batch is None:
            self._batch = _Batch(rows, pre.cache, mask, pos)
        else:
            self._join(_Batch(rows, pre.cache, mask, pos))
        self.counters.joins += 1

    def _join(self, new: _Batch) -> None:
        """Concatenate ``new`` into the running batch, left-padding the shorter one."""
        run = self._batch
        assert run is not None
        width = max(run.mask.shape[1], new.mask.shape[1])
        for a, b in zip(run.cache.layers, new.cache.layers, strict=True):
            a.keys = torch.cat([_pad_seq(a.keys, width), _pad_seq(b.keys, width)], dim=0)
            a.values = torch.cat([_pad_seq(a.values, width), _pad_seq(b.values, width)], dim=0)
        pad = [F.pad(m, (width - m.shape[1], 0)) for m in (run.mask, new.mask)]
        run.mask = torch.cat(pad, dim=0)  # (B, L)
        run.positions = torch.cat([run.positions, new.positions], dim=0)  # (B, 1)
        run.rows = run.rows + new.rows

    # -- decode --------------------------------------------------------------------------------

    def _decode_step(self) -> None:
        b = self._batch
        assert b is not None
        keep = [i for i, r in enumerate(b.rows) if self._still_wanted(r)]
        if len(keep) < len(b.rows):
            self._select(keep)
            if self._batch is None:
                return
            b = self._batch
        ids = torch.tensor([r.next_token for r in b.rows], device=self.device).unsqueeze(1)
        b.mask = torch.cat([b.mask, b.mask.new_ones((len(b.rows), 1))], dim=1)  # (B, L+1)
        b.positions = b.positions + 1  # (B, 1)
        logits = self._forward(b.rows, ids, b.mask, b.positions, b.cache, 1)[:, -1, :]  # (B, V)
        self.counters.decode_steps += 1
        self.counters.decode_rows += len(b.rows)
        self.counters.step_log.append(tuple(r.req.id for r in b.rows))
        keep = [i for i, row in enumerate(b.rows) if not self._step(row, logits[i])]
        if len(keep) < len(b.rows):
            self._select(keep)

    def _still_wanted(self, row: _Row) -> bool:
        if row.aborted:
            return False
        if row.expired():
            row.fail(RequestTimeoutError("request timed out while generating", field="timeout"))
            self._release(row)
            return False
        return not row.finished

    def _select(self, keep: list[int]) -> None:
        """Keep only rows ``keep`` of the running batch; trim all-padding columns."""
        b = self._batch
        assert b is not None
        if not keep:
            self._batch = None
            return
        idx = torch.tensor(keep, device=self.device)
        b.cache.batch_select_indices(idx)
        b.mask, b.positions = b.mask[idx], b.positions[idx]
        b.rows = [b.rows[i] for i in keep]
        used = b.mask.any(dim=0).nonzero()
        cut = int(used[0]) if used.numel() else 0
        if cut > 0:  # columns no remaining row attends to
            b.mask = b.mask[:, cut:]
            for layer in b.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, cut:], layer.values[:, :, cut:]

    def _step(self, row: _Row, logits: torch.Tensor) -> bool:
        """Sample and emit one token for ``row`` from its logits (V,); True when it is done."""
        try:
            return self._sample_and_emit(row, logits)
        except Exception as exc:  # a sink or tokenizer failure ends this row only
            logger.exception("request %s failed while decoding", row.req.id)
            row.fail(exc)
            self._release(row)
            return True

    def _sample_and_emit(self, row: _Row, logits: torch.Tensor) -> bool:
        if not row.live:
            return True
        params = row.req.params
        if params.max_tokens == 0:  # scoring only (echo): nothing to generate
            return self._done(row, "length")
        token = sample_token(adjust_logits(logits, params, row.stream.ids), params, row.gen)
        row.n_generated += 1
        lp = None
        if params.logprobs is not None:
            logp = torch.log_softmax(logits, dim=-1)
            lp = (_token_logprob(logp, token, params.logprobs),)
        if token in self.eos_ids:
            self._emit(row, row.stream.flush(), (token,), lp)
            return self._done(row, "stop")
        self._emit(row, row.stream.push(token), (token,), lp)
        if row.stream.finish_reason == "stop":
            return self._done(row, "stop")
        if row.n_generated >= params.max_tokens:
            self._emit(row, row.stream.flush(), (), None)
            return self._done(row, "length")
        row.next_token = token
        return False

    def _emit(self, row: _Row, text: str, ids: tuple[int, ...], lp: Any) -> None:
        if text or ids:
            row.out.put(TextEvent(text, ids, lp))

    def _done(self, row: _Row, reason: str) -> bool:
        row.finish(reason)
        self._release(row)
        return True


def _pad_seq(t: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad a (B, H, L, D) cache tensor with zeros to length ``width``."""
    return F.pad(t, (0, 0, width - t.shape[-2], 0))


def _token_logprob(logp: torch.Tensor, token: int, k: int) -> TokenLogprob:
    """``token``'s log-probability in ``logp`` (V,) and the top ``k`` alternatives."""
    top: tuple[tuple[int, float], ...] = ()
    if k > 0:
        vals, idx = torch.topk(logp, k)
        top = tuple(zip(idx.tolist(), vals.tolist(), strict=True))
    return TokenLogprob(token, float(logp[token]), top)
