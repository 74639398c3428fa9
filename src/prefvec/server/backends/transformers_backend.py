"""The default backend: a transformers causal LM with our own batched decode loop.

Decoding: left padding with an attention mask and explicit position ids (``cumsum(mask) - 1``),
one prefill then one token per step through a KV cache. Finished or cancelled rows leave the
batch at once (the KV cache, mask and mixing weights are re-indexed), which frees their slot.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import torch

from prefvec.errors import RequestTimeoutError
from prefvec.server.backends.base import Backend, DeltaBuilder, FactorsLoader
from prefvec.server.generation import TextStream, sample_token

if TYPE_CHECKING:
    from prefvec.server.engine import Job
    from prefvec.server.settings import ServerSettings

logger = logging.getLogger(__name__)


class _Row:
    """Decoding state of one batch row."""

    def __init__(self, job: Job, tokenizer: Any, device: str) -> None:
        self.job = job
        self.stream = TextStream(tokenizer, job.params.stop)
        self.gen = job.params.generator("cpu")
        self.n_generated = 0
        self.next_token = -1


class TransformersBackend(Backend):
    """Serves a transformers causal LM (CPU or CUDA) with dense merges and low-rank mixing."""

    name = "transformers"

    def __init__(self, settings: ServerSettings) -> None:
        super().__init__(settings)
        self.model: Any = None
        self.merger: Any = None
        self.cache: Any = None
        self.mixer: Any = None
        self.eos_ids: set[int] = set()
        self.pad_id = 0

    # -- loading -------------------------------------------------------------------------------

    def load(self) -> None:
        from prefvec.merging import LowRankMixer, MergedCache, ModelMerger
        from prefvec.models import load_base

        s = self.settings
        loaded = load_base(s.base, dtype=s.dtype, device=s.device, home=s.home)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.model_dir, self.fingerprint, self.device = (
            loaded.model_dir,
            loaded.fingerprint,
            loaded.device,
        )
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        self.merger = ModelMerger(self.model)
        self.cache = MergedCache(s.merge_cache_bytes)
        self.mixer = LowRankMixer(self.model)
        self.eos_ids = self._eos_ids()
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else min(self.eos_ids, default=0)
        self.ready = True
        logger.info("loaded %s on %s (%s)", s.base, self.device, s.dtype)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for src in (self.tokenizer.eos_token_id, self.model.generation_config.eos_token_id):
            if isinstance(src, int):
                ids.add(src)
            elif isinstance(src, (list, tuple)):
                ids.update(int(i) for i in src)
        return ids

    # -- model state ---------------------------------------------------------------------------

    def activate_base(self) -> None:
        if self.merger.current_key is not None or self.merger.dirty:
            self.merger.restore()

    def activate_dense(self, key: str, build: DeltaBuilder) -> None:
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

    def ensure_lowrank(self, ref: str, load: FactorsLoader) -> None:
        if not self.mixer.has(ref):
            self.mixer.add_vector(ref, load())

    def drop_lowrank(self, ref: str) -> None:
        if self.mixer.has(ref):
            self.mixer.remove_vector(ref)

    def cache_stats(self) -> dict[str, int]:
        c = self.cache
        stats = {"merges_built": self.merges_built}
        if c is not None:
            stats.update(hits=c.hits, misses=c.misses, evictions=c.evictions, nbytes=c.nbytes)
        return stats

    # -- decoding ------------------------------------------------------------------------------

    def _left_pad(self, prompts: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, T)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _step_row(self, row: _Row, logits: torch.Tensor) -> bool:
        """Sample and emit one token for ``row``; True when the row is done."""
        job = row.job
        if not job.live:
            if job.expired and not job.finished:
                job.fail(RequestTimeoutError("request timed out while generating", field="timeout"))
            return True
        token = sample_token(logits, job.params, row.gen)
        row.n_generated += 1
        if token in self.eos_ids:
            job.emit(row.stream.flush())
            job.finish("stop", row.n_generated)
            return True
        job.emit(row.stream.push(token))
        if row.stream.finish_reason == "stop":
            job.finish("stop", row.n_generated)
            return True
        if row.n_generated >= job.params.max_tokens:
            job.emit(row.stream.flush())
            job.finish("length", row.n_generated)
            return True
        row.next_token = token
        return False

    def _step_rows(self, rows: list[_Row], logits: torch.Tensor) -> list[int]:
        """Advance every row; return the indices of the rows still generating."""
        keep: list[int] = []
        for i, row in enumerate(rows):
            try:
                done = self._step_row(row, logits[i])
            except Exception as exc:  # a sink or tokenizer failure ends this row only
                logger.exception("job %s failed while decoding", row.job.id)
                row.job.fail(exc)
                done = True
            if not done:
                keep.append(i)
        return keep

    @torch.inference_mode()
    def decode(self, jobs: Sequence[Job], weights: Sequence[Mapping[str, float]] | None) -> None:
        from transformers import DynamicCache

        rows = [_Row(j, self.tokenizer, self.device) for j in jobs]
        input_ids, mask = self._left_pad([j.prompt_ids for j in jobs])  # (B, T)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        cache = DynamicCache(config=self.model.config)
        row_weights = list(weights) if weights is not None else None
        with ExitStack() as stack:
            if row_weights is not None and any(row_weights):
                stack.enter_context(self.mixer.mixing(row_weights))
            while rows:
                out = self.model(
                    input_ids=input_ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                )
                logits = out.logits[:, -1, :].float()  # (B, V)
                keep = self._step_rows(rows, logits)
                if not keep:
                    break
                if len(keep) < len(rows):
                    idx = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(idx)
                    mask, positions = mask[idx], positions[idx]
                    rows = [rows[i] for i in keep]
                    if row_weights is not None:
                        row_weights = [row_weights[i] for i in keep]
                        stack.close()
                        if any(row_weights):
                            stack.enter_context(self.mixer.mixing(row_weights))
                next_ids = [r.next_token for r in rows]
                input_ids = torch.tensor(next_ids, device=self.device).unsqueeze(1)  # (B, 1)
                mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)  # (B, T+1)
                positions = positions[:, -1:] + 1  # (B, 1)

    def close(self) -> None:
        if self.mixer is not None:
            self.mixer.close()
        self.model = None
        self.ready = False
