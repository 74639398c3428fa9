"""The generation service, free of HTTP: resolve a request's preferences into a pinned merge,
validate its bounds, and run batches of jobs on the backend.

Serving paths (chosen in :meth:`Engine.resolve`):

* ``base``: no vectors, or every weight zero. Joins any mixing batch as a row with no weights.
* ``lowrank``: every vector is low-rank and the method is ``linear``. No merge at all: each
  linear layer adds ``Σ_i w_{r,i} B_i (A_i x)`` for row r (:class:`prefvec.merging.LowRankMixer`),
  so one batch mixes requests with different weights.
* ``dense``: anything else (dense vectors, or a non-linear method that needs dense deltas, low-rank
  vectors densified as ``B @ A``). Batches are grouped by the spec's canonical key and the merged
  weights come from the merged-weight cache or are built in place.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from prefvec.errors import (
    BadRequestError,
    NotFoundError,
    PrefvecError,
    RequestTimeoutError,
    ValidationError,
)
from prefvec.merging.spec import MergeSpec
from prefvec.protocol import MergeOptions, PrefvecInfo, Usage
from prefvec.server.generation import FinishReason, SamplingParams

if TYPE_CHECKING:
    from prefvec.server.backends.base import Backend, Delta
    from prefvec.server.settings import ServerSettings

logger = logging.getLogger(__name__)

ServingPath = Literal["base", "lowrank", "dense"]
MIX_GROUP = "<mix>"  # group key of base + low-rank jobs (they share any batch)


# ------------------------------------------------------------------------------------ jobs


class JobSink(Protocol):
    """Receives one job's events (called from the scheduler's worker thread)."""

    def on_start(self) -> None: ...
    def on_text(self, delta: str) -> None: ...
    def on_finish(self, reason: FinishReason, usage: Usage) -> None: ...
    def on_error(self, exc: BaseException) -> None: ...


class CollectingSink:
    """A sink that gathers the whole output (for HTTP-free use and tests)."""

    def __init__(self) -> None:
        self.text = ""
        self.reason: FinishReason | None = None
        self.usage: Usage | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def on_start(self) -> None:
        pass

    def on_text(self, delta: str) -> None:
        self.text += delta

    def on_finish(self, reason: FinishReason, usage: Usage) -> None:
        self.reason, self.usage = reason, usage
        self.done.set()

    def on_error(self, exc: BaseException) -> None:
        self.error = exc
        self.done.set()


@dataclass(frozen=True)
class Resolved:
    """A request's merge, pinned: what to serve and how."""

    spec: MergeSpec
    path: ServingPath
    vectors: dict[str, int] = field(default_factory=dict)  # name -> version
    kinds: dict[str, str] = field(default_factory=dict)  # name@ver -> dense | lowrank
    shas: dict[str, str] = field(default_factory=dict)  # name@ver -> sha256
    recipe: str | None = None
    experiment: str | None = None
    arm: str | None = None

    @property
    def group_key(self) -> str:
        """Jobs with the same group key may share a batch."""
        return self.spec.key if self.path == "dense" else MIX_GROUP

    def mix_weights(self) -> dict[str, float]:
        """``{cache ref: weight}`` of the low-rank path (empty for the base)."""
        if self.path != "lowrank":
            return {}
        return {cache_ref(ref, self.shas[ref]): w for ref, w in self.spec.weights if w != 0.0}

    def info(self) -> PrefvecInfo:
        return PrefvecInfo(
            recipe_key=self.spec.key,
            recipe=self.recipe,
            vectors=dict(self.vectors),
            path=self.path,
            experiment=self.experiment,
            arm=self.arm,
        )

    def with_experiment(self, experiment: str, arm: str) -> Resolved:
        return Resolved(
            self.spec, self.path, self.vectors, self.kinds, self.shas, self.recipe, experiment, arm
        )


def cache_ref(ref: str, sha256: str) -> str:
    """In-memory key of a stored vector version: content-addressed, so a re-used version number
    after a delete never serves stale tensors."""
    return f"{ref}#{sha256[:16]}"


@dataclass
class Job:
    """One generation request in the scheduler."""

    prompt_ids: list[int]
    params: SamplingParams
    resolved: Resolved
    sink: JobSink
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    deadline: float | None = None  # time.monotonic() deadline
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: bool = False

    @property
    def group_key(self) -> str:
        return self.resolved.group_key

    @property
    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    @property
    def live(self) -> bool:
        """Neither finished, cancelled nor past its deadline."""
        return not (self.finished or self.cancelled.is_set() or self.expired)

    def cancel(self) -> None:
        self.cancelled.set()

    def finish(self, reason: FinishReason, completion_tokens: int) -> None:
        if self.finished:
            return
        self.finished = True
        n = len(self.prompt_ids)
        usage = Usage(
            prompt_tokens=n, completion_tokens=completion_tokens, total_tokens=n + completion_tokens
        )
        self.sink.on_finish(reason, usage)

    def fail(self, exc: BaseException) -> None:
        if self.finished:
            return
        self.finished = True
        self.sink.on_error(exc)

    def emit(self, delta: str) -> None:
        if delta:
            self.sink.on_text(delta)


# ---------------------------------------------------------------------------------- engine


class Engine:
    """Resolves requests against the store and runs batches on the backend.

    Args:
        settings: server settings (bounds).
        store: a :class:`prefvec.vector_store.LocalStore`.
        backend: a loaded :class:`prefvec.server.backends.base.Backend`.
    """

    def __init__(self, settings: ServerSettings, store: Any, backend: Backend) -> None:
        self.settings = settings
        self.store = store
        self.backend = backend
        self._vectors: OrderedDict[str, Any] = OrderedDict()  # cache ref -> PreferenceVector
        self._mixer_refs: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    # -- resolution --------------------------------------------------------------------------

    def resolve(
        self,
        *,
        preferences: Mapping[str, float] | None = None,
        recipe: str | None = None,
        merge: MergeOptions | None = None,
        model: str | None = None,
        field_prefix: str = "",
    ) -> Resolved:
        """Turn ``preferences`` / ``recipe`` / ``model`` / ``merge`` into a pinned merge.

        Raises:
            ValidationError: out-of-bounds or non-finite weights, too many vectors, bad method or
                density, malformed names (every problem listed).
            BadRequestError: ``recipe`` and ``preferences`` both given, or conflicting names.
            NotFoundError: an unknown vector, version or recipe (all listed).
        """
        if model and model.startswith("recipe:"):
            named = model[len("recipe:") :]
            if recipe and recipe != named:
                raise BadRequestError(
                    f"`model` names recipe {named!r} but `recipe` is {recipe!r}", field="recipe"
                )
            recipe = named
        if recipe is not None:
            if preferences:
                raise BadRequestError(
                    f"`{field_prefix}recipe` and `{field_prefix}preferences` are exclusive; got "
                    f"recipe {recipe!r} and preferences {dict(preferences)!r}",
                    field=f"{field_prefix}recipe",
                )
            if merge is not None:
                raise BadRequestError(
                    f"`{field_prefix}merge` cannot be combined with recipe {recipe!r} "
                    "(the recipe fixes its method)",
                    field=f"{field_prefix}merge",
                )
            return self._resolve_recipe(recipe, field_prefix)
        merge = merge or MergeOptions()
        return self._resolve_weights(
            dict(preferences or {}), merge.method, merge.density, merge.seed, None, field_prefix
        )

    def _resolve_recipe(self, ref: str, field_prefix: str) -> Resolved:
        from prefvec.vector_store import parse_ref

        parse_ref(ref, f"{field_prefix}recipe")
        rec = self.store.get_recipe(ref)
        return self._resolve_weights(
            dict(rec.weights),
            rec.method,
            rec.density,
            rec.seed,
            f"{rec.name}@{rec.version}",
            field_prefix,
        )

    def check_weights(self, weights: Mapping[str, float], field_name: str) -> list[str]:
        """Bounds problems of ``{ref: weight}`` (count, finiteness, range, names)."""
        from prefvec.vector_store import parse_ref

        s = self.settings
        problems: list[str] = []
        if len(weights) > s.max_vectors_per_request:
            problems.append(
                f"`{field_name}` names {len(weights)} vectors, the limit is "
                f"`max_vectors_per_request` = {s.max_vectors_per_request}"
            )
        for ref, w in weights.items():
            where = f"{field_name}.{ref}"
            try:
                parse_ref(ref, where)
            except ValidationError as exc:
                problems.append(exc.message)
            if not isinstance(w, (int, float)) or not math.isfinite(float(w)):
                problems.append(f"`{where}` must be finite, got {w!r}")
            elif not s.weight_min <= float(w) <= s.weight_max:
                problems.append(
                    f"`{where}` must be in [{s.weight_min:g}, {s.weight_max:g}], got {w!r}"
                )
        return problems

    def _check_method(self, method: str, density: float, field_prefix: str) -> list[str]:
        from prefvec.merging import available_methods

        problems = []
        if method not in available_methods():
            problems.append(
                f"`{field_prefix}merge.method` must be one of {available_methods()}, got {method!r}"
            )
        if not (isinstance(density, (int, float)) and 0.0 < density <= 1.0):
            problems.append(f"`{field_prefix}merge.density` must be in (0, 1], got {density!r}")
        return problems

    def _resolve_weights(
        self,
        weights: dict[str, float],
        method: str,
        density: float,
        seed: int,
        recipe: str | None,
        field_prefix: str,
    ) -> Resolved:
        field_name = f"{field_prefix}preferences" if recipe is None else f"recipe {recipe} weights"
        problems = self.check_weights(weights, field_name)
        problems += self._check_method(method, density, field_prefix)
        if problems:
            raise ValidationError("; ".join(problems), problems=problems, field=field_name)
        pinned: dict[str, float] = {}
        vectors: dict[str, int] = {}
        kinds: dict[str, str] = {}
        shas: dict[str, str] = {}
        missing: list[str] = []
        for ref, w in weights.items():
            try:
                rec = self.store.record(ref)
            except NotFoundError as exc:
                missing.append(f"`{field_name}.{ref}`: {exc.message}")
                continue
            key = f"{rec.name}@{rec.version}"
            if rec.name in vectors and vectors[rec.name] != rec.version:
                raise BadRequestError(
                    f"`{field_name}` names two versions of vector {rec.name!r}", field=field_name
                )
            pinned[key] = pinned.get(key, 0.0) + float(w)
            vectors[rec.name], kinds[key], shas[key] = rec.version, rec.kind, rec.sha256
        if missing:
            raise NotFoundError("; ".join(missing), problems=missing, field=field_name)
        spec = MergeSpec(method=method, weights=pinned, density=density, seed=seed)  # type: ignore[arg-type]
        return Resolved(spec, self._path(spec, kinds), vectors, kinds, shas, recipe)

    @staticmethod
    def _path(spec: MergeSpec, kinds: Mapping[str, str]) -> ServingPath:
        if spec.is_base:
            return "base"
        used = [kinds[ref] for ref, w in spec.weights if w != 0.0]
        if spec.method == "linear" and all(k == "lowrank" for k in used):
            return "lowrank"
        return "dense"

    # -- prompts and bounds ------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        return self.backend.tokenizer

    def encode_chat(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of a chat (the model's chat template, with the generation prompt)."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=False
            )
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return self.encode_text(str(text), "messages")

    def encode_text(self, text: str, field_name: str = "prompt") -> list[int]:
        """Token ids of a raw prompt, checked against ``max_prompt_tokens``."""
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if not ids:
            raise ValidationError(
                f"`{field_name}` must not be empty, got {text!r}", field=field_name
            )
        limit = self.settings.max_prompt_tokens
        if len(ids) > limit:
            raise ValidationError(
                f"`{field_name}` is {len(ids)} tokens long, the limit is `max_prompt_tokens` = "
                f"{limit}",
                field=field_name,
            )
        return ids

    def sampling_params(
        self,
        *,
        max_tokens: int | None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        prompt_len: int = 0,
    ) -> SamplingParams:
        """Checked sampling parameters (``max_tokens`` bounded by settings and the context)."""
        limit = self.settings.max_tokens_limit
        n = self.settings.default_max_tokens if max_tokens is None else max_tokens
        if n > limit:
            raise ValidationError(f"`max_tokens` must be <= {limit}, got {n}", field="max_tokens")
        ctx = self.backend.max_positions
        if ctx is not None and prompt_len + n > ctx:
            if max_tokens is not None:
                raise ValidationError(
                    f"`max_tokens` = {n} plus the prompt's {prompt_len} tokens exceeds the "
                    f"model context of {ctx}",
                    field="max_tokens",
                )
            n = max(1, ctx - prompt_len)
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        if len(stops) > 4:
            raise ValidationError(f"`stop` takes at most 4 strings, got {len(stops)}", field="stop")
        return SamplingParams(n, float(temperature), float(top_p), seed, stops)

    # -- execution (scheduler worker thread) -----------------------------------------------

    def _vector(self, ref: str, sha: str) -> Any:
        """The stored vector ``ref`` (LRU of loaded vectors, content-addressed)."""
        key = cache_ref(ref, sha)
        with self._lock:
            if key in self._vectors:
                self._vectors.move_to_end(key)
                return self._vectors[key]
        vec = self.store.get(ref)
        with self._lock:
            self._vectors[key] = vec
            while len(self._vectors) > self.settings.vector_cache_size:
                self._vectors.popitem(last=False)
        return vec

    def _prepare_lowrank(self, job: Job, protect: set[str]) -> None:
        for ref, w in job.resolved.spec.weights:
            if w == 0.0:
                continue
            sha = job.resolved.shas[ref]
            key = cache_ref(ref, sha)
            if key in self._mixer_refs:
                self._mixer_refs.move_to_end(key)
                continue
            vec = self._vector(ref, sha)
            self.backend.ensure_lowrank(key, vec.factors)
            self._mixer_refs[key] = None
        protect.update(job.resolved.mix_weights())
        while len(self._mixer_refs) > self.settings.vector_cache_size:
            victim = next((k for k in self._mixer_refs if k not in protect), None)
            if victim is None:
                break
            del self._mixer_refs[victim]
            self.backend.drop_lowrank(victim)

    def _dense_builder(self, resolved: Resolved) -> list[tuple[Delta, float]]:
        from prefvec.merging.resolve import spec_deltas

        spec = resolved.spec
        vectors = {ref: self._vector(ref, resolved.shas[ref]) for ref, w in spec.weights if w}
        return [(delta, w) for delta, w in spec_deltas(spec, vectors)]

    def run_batch(self, jobs: Sequence[Job]) -> None:
        """Generate for one batch (all dense jobs share one spec key, or all are base/low-rank).

        A job whose vectors fail to load fails alone; the others go on.
        """
        live = [j for j in jobs if j.live]
        for job in jobs:
            if job.expired and not job.finished:
                job.fail(RequestTimeoutError("request timed out while queued", field="timeout"))
        if not live:
            return
        dense = live[0].resolved.path == "dense"
        if dense:
            resolved = live[0].resolved
            try:
                self.backend.activate_dense(
                    resolved.spec.key, lambda: self._dense_builder(resolved)
                )
            except Exception as exc:
                logger.exception("dense merge %s failed", resolved.spec.key)
                for job in live:
                    job.fail(exc)
                return
        else:
            live = self._prepare_mix(live)
            self.backend.activate_base()
        if not live:
            return
        for job in live:
            job.sink.on_start()
        weights = None if dense else [j.resolved.mix_weights() for j in live]
        self.backend.decode(live, weights)

    def _prepare_mix(self, jobs: Sequence[Job]) -> list[Job]:
        ok: list[Job] = []
        protect: set[str] = set()
        for job in jobs:
            try:
                if job.resolved.path == "lowrank":
                    self._prepare_lowrank(job, protect)
            except Exception as exc:
                if not isinstance(exc, PrefvecError):
                    logger.exception("loading vectors for job %s failed", job.id)
                job.fail(exc)
            else:
                ok.append(job)
        return ok

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, resolved: Resolved
    ) -> CollectingSink:
        """Run one job synchronously in the calling thread (no scheduler)."""
        sink = CollectingSink()
        self.run_batch([Job(prompt_ids, params, resolved, sink)])
        return sink

    def forget(self, name: str) -> None:
        """Drop cached copies of a deleted vector (next use reloads from the store)."""
        with self._lock:
            for key in [k for k in self._vectors if k.split("@", 1)[0] == name]:
                del self._vectors[key]
