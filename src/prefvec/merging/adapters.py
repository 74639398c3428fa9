"""Linear recipes over low-rank vectors as ONE exact PEFT LoRA adapter, and a cache of them.

An engine that routes each request to exactly one LoRA adapter (vLLM) can still serve a weighted
combination of several low-rank vectors exactly, because the weighted sum is itself one LoRA:

    Σ_i w_i B_i A_i = [w_1 B_1 | ... | w_K B_K] @ [A_1; ...; A_K]          (rank Σ_i r_i)

(:func:`prefvec.merging.lowrank.merge_lowrank`). :func:`recipe_adapter` turns that concatenation
into an adapter of one uniform rank: modules that only some vectors target get zero columns for
the others (a zero column of B adds nothing), and the rank can be padded further with zero rows of
A and zero columns of B, which change nothing either. The LoRA scaling ``lora_alpha / r`` is 1
(``lora_alpha == r``): any scale is already folded into B, as in the vector format.

:class:`AdapterCache` writes each distinct recipe once, under its canonical key, into a folder
bounded in bytes; it evicts least recently used adapters *before* writing a new one and tells its
owner through ``on_evict(key, lora_int_id)`` so the engine can drop the adapter too. Each key keeps
the same ``lora_int_id`` for the cache's lifetime, evicted and re-written or not.

Nothing here imports vLLM.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prefvec.errors import QueueFullError, ValidationError
from prefvec.merging.lowrank import Factors, merge_lowrank
from prefvec.vector_store.format import lora_keys

logger = logging.getLogger(__name__)

ALLOWED_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for ``max_lora_rank``."""

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"

ModuleShapes = Mapping[str, tuple[int, int]]
"""``{module: (in_features, out_features)}``."""


def allowed_lora_rank(rank: int) -> int:
    """The smallest value of :data:`ALLOWED_MAX_LORA_RANKS` that is ``>= rank``.

    Raises:
        ValidationError: ``rank`` is below 1 or above the largest allowed value.
    """
    for allowed in ALLOWED_MAX_LORA_RANKS:
        if rank <= allowed and rank >= 1:
            return allowed
    raise ValidationError(
        f"`rank` must be in 1..{ALLOWED_MAX_LORA_RANKS[-1]}, got {rank}", field="rank"
    )


@dataclass
class LoraAdapter:
    """One LoRA adapter in memory: ``{module: (A (r, in), B (out, r))}`` of a uniform rank r.

    ``ΔW[module + ".weight"] = B @ A`` with scaling 1 (``lora_alpha == r``).
    """

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    rank: int

    @property
    def modules(self) -> list[str]:
        """Targeted module names, sorted."""
        return sorted(self.factors)

    @property
    def nbytes(self) -> int:
        """Bytes of the factor tensors."""
        return sum(t.numel() * t.element_size() for a, b in self.factors.values() for t in (a, b))

    def config(self, base_model: str = "") -> dict[str, object]:
        """The PEFT ``adapter_config.json`` content (uniform rank, ``lora_alpha == r``)."""
        return {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": self.rank,
            "lora_alpha": self.rank,
            "lora_dropout": 0.0,
            "bias": "none",
            "target_modules": self.modules,  # full names: PEFT wraps exactly these
            "fan_in_fan_out": False,
            "use_rslora": False,
            "use_dora": False,
            "inference_mode": True,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        """The safetensors payload, keyed in the PEFT layout (``base_model.model.{m}.lora_A``)."""
        out: dict[str, torch.Tensor] = {}
        for module, (a, b) in self.factors.items():
            ka, kb = lora_keys(module)
            out[ka], out[kb] = a.detach().contiguous().cpu(), b.detach().contiguous().cpu()
        return out

    def files(self, base_model: str = "") -> dict[str, bytes]:
        """``{file name: content}`` of the adapter folder (so its size is known before writing)."""
        from safetensors.torch import save

        return {
            WEIGHTS_FILE: save(self.tensors()),
            CONFIG_FILE: json.dumps(self.config(base_model), indent=2).encode(),
        }

    def save(self, out_dir: str | Path, base_model: str = "") -> Path:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into ``out_dir``."""
        return _write_files(Path(out_dir), self.files(base_model))

    def to_dense(self) -> dict[str, torch.Tensor]:
        """``{module + ".weight": B @ A}``."""
        return {m + ".weight": b @ a for m, (a, b) in self.factors.items()}


def _pad_rank(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero rows of A (r, in) and zero columns of B (out, r) up to ``rank``; B @ A unchanged."""
    extra = rank - a.shape[0]
    if extra == 0:
        return a, b
    a = torch.cat([a, a.new_zeros(extra, a.shape[1])], dim=0)  # (rank, in)
    b = torch.cat([b, b.new_zeros(b.shape[0], extra)], dim=1)  # (out, rank)
    return a, b


def recipe_adapter(
    factors_list: Sequence[Factors],
    weights: Sequence[float],
    *,
    rank: int | None = None,
    dtype: torch.dtype | None = None,
) -> LoraAdapter:
    """The exact adapter of ``Σ_i w_i B_i A_i``, every module at one rank.

    Args:
        factors_list: K low-rank vectors ``{module: (A (r, in), B (out, r))}``.
        weights: K finite weights (any sign; zero-weight vectors are left out).
        rank: pad every module to this rank (default: the largest concatenated rank). Use
            :func:`allowed_lora_rank` to pad up to a value vLLM accepts for ``max_lora_rank``.
        dtype: dtype of the written factors (default: promoted from the inputs).

    Returns:
        A :class:`LoraAdapter` whose ``B @ A`` per module is ``Σ_i w_i B_i A_i``; a module that
        only some vectors target carries zeros in the others' rank columns.

    Raises:
        ValidationError: non-finite weights, inconsistent shapes, no module left (all weights
            zero: use :func:`zero_adapter`), or ``rank`` below the concatenated rank.
    """
    merged = merge_lowrank(factors_list, weights)
    if not merged:
        raise ValidationError(
            "`weights` leave no low-rank delta (all zero or no vectors); use the zero adapter",
            field="weights",
        )
    needed = max(a.shape[0] for a, _ in merged.values())
    target = needed if rank is None else int(rank)
    if target < needed:
        raise ValidationError(
            f"`rank` {target} is below the recipe's concatenated rank {needed}", field="rank"
        )
    factors = {}
    for module, (a, b) in merged.items():
        a, b = _pad_rank(a, b, target)
        factors[module] = (a, b) if dtype is None else (a.to(dtype), b.to(dtype))
    return LoraAdapter(factors, target)


def zero_adapter(
    modules: ModuleShapes, rank: int = 1, dtype: torch.dtype = torch.float32
) -> LoraAdapter:
    """An all-zero adapter over ``modules``: serving it equals the base model exactly.

    Base rows go through it on vLLM while a request without an adapter, batched beside LoRA
    requests with every slot full, gets the last slot's adapter on CPU (vLLM 0.32 ``torch_ops``).
    """
    if not modules:
        raise ValidationError("`modules` of the zero adapter must not be empty", field="modules")
    factors = {
        m: (torch.zeros(rank, fan_in, dtype=dtype), torch.zeros(fan_out, rank, dtype=dtype))
        for m, (fan_in, fan_out) in modules.items()
    }
    return LoraAdapter(factors, rank)


def default_adapter_root(fallback: str | Path | None = None) -> Path:
    """A fresh private folder for adapter files: under ``/dev/shm`` when present (RAM), else
    under ``fallback`` (or the system temp folder). Absolute, so vLLM never takes it for a hub id.
    """
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() else Path(fallback or tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="prefvec-adapters-", dir=parent)).resolve()


@dataclass
class CachedAdapter:
    """An adapter written by :class:`AdapterCache`."""

    key: str
    lora_int_id: int
    path: Path  # absolute folder with adapter_config.json + adapter_model.safetensors
    nbytes: int  # bytes on disk
    rank: int
    users: int = field(default=0, repr=False)  # open leases; an entry in use is never evicted

    @property
    def name(self) -> str:
        """The adapter name given to the engine (unique per key)."""
        return f"prefvec-{self.lora_int_id}"


EvictHook = Callable[[str, int], None]


class AdapterCache:
    """Adapters written once per canonical recipe key into a folder bounded in bytes (LRU).

    :meth:`lease` returns the cached adapter of a key, or builds and writes it, evicting least
    recently used adapters that nobody is using *before* writing, until the new one fits under
    ``max_bytes``; each eviction removes the files and calls ``on_evict(key, lora_int_id)``.
    Thread-safe (one lock; building happens under it, so a key is written once).

    Args:
        root: folder the adapters go into (made absolute); see :func:`default_adapter_root`.
        max_bytes: bound on the bytes of all adapter folders together.
        max_entries: bound on the number of adapters (e.g. vLLM's ``max_cpu_loras``, so the
            engine never has to drop one of ours by itself); None for no bound.
        on_evict: called with ``(key, lora_int_id)`` after an adapter's files are removed.
        base_model: written into each ``adapter_config.json``.

    Attributes:
        hits / misses / evictions: counters for ``/metrics``.
    """

    def __init__(
        self,
        root: str | Path,
        max_bytes: int,
        on_evict: EvictHook | None = None,
        base_model: str = "",
        max_entries: int | None = None,
    ) -> None:
        if max_bytes < 1:
            raise ValidationError(f"`max_bytes` must be >= 1, got {max_bytes}", field="max_bytes")
        if max_entries is not None and max_entries < 1:
            raise ValidationError(
                f"`max_entries` must be >= 1, got {max_entries}", field="max_entries"
            )
        self.max_entries = max_entries
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.on_evict = on_evict
        self.base_model = base_model
        self._entries: OrderedDict[str, CachedAdapter] = OrderedDict()
        self._ids: dict[str, int] = {}
        self._lock = threading.RLock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the adapters on disk now."""
        return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def keys(self) -> list[str]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def lora_int_id(self, key: str) -> int:
        """The stable id of ``key`` (assigned on first sight, from 1; never reused)."""
        with self._lock:
            if key not in self._ids:
                self._ids[key] = len(self._ids) + 1
            return self._ids[key]

    def get(self, key: str, build: Callable[[], LoraAdapter]) -> CachedAdapter:
        """The adapter of ``key`` (marked most recently used), written from ``build()`` if absent.

        Raises:
            ValidationError: the adapter alone is larger than ``max_bytes``.
            QueueFullError: it does not fit because the adapters in use fill the cache.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry
            self.misses += 1
            adapter = build()
            files = adapter.files(self.base_model)
            self._make_room(key, sum(map(len, files.values())))
            return self._write(key, adapter.rank, files)

    @contextmanager
    def lease(self, key: str, build: Callable[[], LoraAdapter]) -> Iterator[CachedAdapter]:
        """:meth:`get`, with the entry protected from eviction until the context exits."""
        with self._lock:
            entry = self.get(key, build)
            entry.users += 1
        try:
            yield entry
        finally:
            with self._lock:
                entry.users -= 1

    def acquire(self, key: str, build: Callable[[], LoraAdapter]) -> CachedAdapter:
        """:meth:`get` and protect the entry from eviction until :meth:`release`."""
        with self._lock:
            entry = self.get(key, build)
            entry.users += 1
            return entry

    def release(self, entry: CachedAdapter) -> None:
        """End one :meth:`acquire` of ``entry``."""
        with self._lock:
            entry.users = max(0, entry.users - 1)

    def evict(self, key: str) -> bool:
        """Drop ``key`` now (files and engine via ``on_evict``) unless it is in use."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.users:
                return False
            self._drop(entry)
            return True

    def evict_matching(self, predicate: Callable[[str], bool]) -> list[str]:
        """Evict every unused entry whose key satisfies ``predicate`` (a deleted vector's)."""
        with self._lock:
            keys = [k for k in self._entries if predicate(k)]
            return [k for k in keys if self.evict(k)]

    def clear(self, remove_root: bool = False) -> None:
        """Evict everything (in use or not); optionally remove the root folder too."""
        with self._lock:
            for entry in list(self._entries.values()):
                self._drop(entry)
            if remove_root:
                shutil.rmtree(self.root, ignore_errors=True)

    def _fits(self, nbytes: int) -> bool:
        full = self.max_entries is not None and len(self._entries) >= self.max_entries
        return not full and self.nbytes + nbytes <= self.max_bytes

    def _make_room(self, key: str, nbytes: int) -> None:
        """Evict unused LRU entries until one more adapter of ``nbytes`` fits under the bounds."""
        if nbytes > self.max_bytes:
            raise ValidationError(
                f"the adapter of {key!r} needs {nbytes} bytes, more than the adapter cache's "
                f"bound of {self.max_bytes} bytes",
                field="adapter_cache_bytes",
            )
        for entry in list(self._entries.values()):  # least recently used first
            if self._fits(nbytes):
                return
            if not entry.users:
                self._drop(entry)
        if not self._fits(nbytes):
            raise QueueFullError(
                f"the adapter cache ({self.max_bytes} bytes, {self.max_entries} adapters at "
                f"most) is full of adapters in use; {key!r} needs {nbytes} bytes"
            )

    def _write(self, key: str, rank: int, files: dict[str, bytes]) -> CachedAdapter:
        lora_id = self.lora_int_id(key)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        path = _write_files(self.root / f"{lora_id:06d}-{digest}", files)
        entry = CachedAdapter(key, lora_id, path, sum(map(len, files.values())), rank)
        self._entries[key] = entry
        logger.debug("adapter cache: wrote %s as %s (%d bytes)", key, entry.name, entry.nbytes)
        return entry

    def _drop(self, entry: CachedAdapter) -> None:
        self._entries.pop(entry.key, None)
        shutil.rmtree(entry.path, ignore_errors=True)
        self.evictions += 1
        logger.debug("adapter cache: evicted %s (%s)", entry.key, entry.name)
        if self.on_evict is not None:
            self.on_evict(entry.key, entry.lora_int_id)


def _write_files(out: Path, files: Mapping[str, bytes]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (out / name).write_bytes(content)
    return out
