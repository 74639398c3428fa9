"""Request resolution, free of HTTP: a request's preferences, recipe or model name become a pinned
merge with a serving path, checked against the settings' bounds and the backend's capabilities.

Serving paths (chosen in :meth:`Resolver.resolve`):

* ``base``: no vectors, or every weight zero. Shares any mixing batch as a row with no weights.
* ``lowrank``: every vector is low-rank and the method is ``linear``. No merge at all: each
  linear layer adds ``Σ_i w_{r,i} B_i (A_i x)`` for row r (:class:`prefvec.merging.LowRankMixer`),
  or (vLLM) the recipe is one exact concatenated adapter, so one batch mixes requests with
  different weights.
* ``dense``: anything else (dense vectors, or a non-linear method that needs dense deltas, low-rank
  vectors densified as ``B @ A``). Requests are grouped by the spec's canonical key and the merged
  weights come from the merged-weight cache or are built in place.

A path the backend does not declare in its :class:`~prefvec.server.backends.base.Capabilities`
is refused here with a 4xx, before anything is queued.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefvec.errors import (
    BadRequestError,
    NotFoundError,
    ValidationError,
)
from prefvec.merging.spec import MergeSpec
from prefvec.protocol import MergeOptions, PrefvecInfo, ServingPath
from prefvec.server.generation import SamplingParams

if TYPE_CHECKING:
    from prefvec.server.backends.base import Backend
    from prefvec.server.settings import ServerSettings

logger = logging.getLogger(__name__)

MIX_GROUP = "<mix>"  # group key of base + low-rank jobs (they share any batch)


# -------------------------------------------------------------------------------- resolved


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


# -------------------------------------------------------------------------------- resolver


class Resolver:
    """Resolves requests against the store, within the settings' bounds and the backend's
    declared capabilities; also the LRU of loaded vectors that backends read through.

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
        model = self.check_model(model)
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

    def base_names(self) -> list[str]:
        """``model`` names that mean the base: its served id, the base spec, and ``base``."""
        s = self.settings
        return list(dict.fromkeys([s.model_name, s.base, "base"]))

    def check_model(self, model: str | None) -> str | None:
        """``model`` with operator aliases applied (None when it names the base).

        Raises:
            NotFoundError: an unknown model name (the message lists the valid ids).
        """
        if model is None:
            return None
        model = self.settings.model_aliases.get(model, model)
        if model in self.base_names():
            return None
        if model.startswith("recipe:") and len(model) > len("recipe:"):
            return model  # an unknown recipe is a 404 of the recipe lookup
        valid = self.base_names() + [f"recipe:{r.name}" for r in self.store.list_recipes()]
        valid += sorted(self.settings.model_aliases)
        raise NotFoundError(
            f"`model` {model!r} is not served here; valid ids: {valid} (operators may add "
            "names with the `model_aliases` setting)",
            field="model",
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
        ranks: dict[str, int] = {}
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
            ranks[key] = int(rec.metadata.rank or 0)
        if missing:
            raise NotFoundError("; ".join(missing), problems=missing, field=field_name)
        spec = MergeSpec(method=method, weights=pinned, density=density, seed=seed)  # type: ignore[arg-type]
        path = self._path(spec, kinds, field_name)
        if path == "lowrank":
            self._check_rank(spec, ranks, field_name)
        return Resolved(spec, path, vectors, kinds, shas, recipe)

    def _check_rank(self, spec: MergeSpec, ranks: Mapping[str, int], field_name: str) -> None:
        limit = self.backend.capabilities.max_lowrank_rank
        total = sum(ranks.get(ref, 0) for ref, w in spec.weights if w != 0.0)
        if limit is not None and total > limit:
            raise BadRequestError(
                f"`{field_name}` combines vectors of total rank {total}; backend "
                f"{self.backend.name!r} serves at most rank {limit} (`max_lora_rank`)",
                field=field_name,
            )

    def _path(self, spec: MergeSpec, kinds: Mapping[str, str], field_name: str) -> ServingPath:
        """The serving path of ``spec``, among those the backend declares."""
        if spec.is_base:
            return "base"
        caps = self.backend.capabilities
        used = {ref: kinds[ref] for ref, w in spec.weights if w != 0.0}
        mixable = spec.method == "linear" and all(k == "lowrank" for k in used.values())
        if mixable and caps.lowrank_mixing:
            return "lowrank"
        if caps.dense_recipes:
            return "dense"
        dense = sorted(ref for ref, k in used.items() if k != "lowrank")
        why = (
            f"dense vectors {dense}"
            if dense
            else f"method {spec.method!r} (only 'linear' keeps low-rank vectors low-rank)"
        )
        raise BadRequestError(
            f"backend {self.backend.name!r} serves linear recipes over low-rank vectors only; "
            f"`{field_name}` needs {why}",
            field=field_name,
        )

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
        self._check_length(len(ids), field_name)
        return ids

    def check_ids(self, ids: Sequence[int], field_name: str = "prompt") -> list[int]:
        """Token ids given directly: non-empty, in the vocabulary, within ``max_prompt_tokens``."""
        vocab = len(self.tokenizer)
        bad = [
            i for i in ids if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab
        ]
        if not ids or bad:
            got = "an empty list" if not ids else f"{bad[:5]!r}"
            raise ValidationError(
                f"`{field_name}` token ids must be a non-empty list of ids in [0, {vocab}), got "
                f"{got}",
                field=field_name,
            )
        self._check_length(len(ids), field_name)
        return list(ids)

    def _check_length(self, n: int, field_name: str) -> None:
        limit = self.settings.max_prompt_tokens
        if n > limit:
            raise ValidationError(
                f"`{field_name}` is {n} tokens long, the limit is `max_prompt_tokens` = {limit}",
                field=field_name,
            )

    def sampling_params(
        self,
        *,
        max_tokens: int | None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        prompt_len: int = 0,
        logprobs: int | None = None,
        prompt_logprobs: int | None = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        logit_bias: Mapping[str | int, float] | None = None,
    ) -> SamplingParams:
        """Checked sampling parameters (``max_tokens`` bounded by settings and the context).

        Raises:
            ValidationError: ``max_tokens`` over the limit or the context, too many stop strings,
                log-probabilities the backend cannot give, ``logit_bias`` keys that are not
                token ids of the vocabulary.
        """
        self._check_logprobs(logprobs, prompt_logprobs)
        bias = self._check_logit_bias(logit_bias or {})
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
        return SamplingParams(
            n, float(temperature), float(top_p), seed, stops, logprobs, prompt_logprobs,
            float(frequency_penalty), float(presence_penalty), bias,
        )  # fmt: skip

    def _check_logit_bias(self, bias: Mapping[str | int, float]) -> tuple[tuple[int, float], ...]:
        """``{token id (as text): bias}`` as sorted ``((id, bias), ...)``, ids in the vocabulary."""
        vocab, out, bad = len(self.tokenizer), [], []
        for key, value in bias.items():
            text = str(key)
            if not text.isascii() or not text.isdigit() or not 0 <= int(text) < vocab:
                bad.append(key)
            else:
                out.append((int(text), float(value)))
        if bad:
            raise ValidationError(
                f"`logit_bias` keys must be token ids in [0, {vocab}), got {bad[:5]!r}",
                field="logit_bias",
            )
        return tuple(sorted(out))

    def _check_logprobs(self, logprobs: int | None, prompt_logprobs: int | None) -> None:
        caps = self.backend.capabilities
        for name, k, ok in (
            ("logprobs", logprobs, caps.logprobs),
            ("prompt_logprobs", prompt_logprobs, caps.prompt_logprobs),
        ):
            if k is None:
                continue
            if not ok:
                raise ValidationError(
                    f"`{name}` is not supported by backend {self.backend.name!r}", field=name
                )
            if not 0 <= k <= caps.max_top_logprobs:
                raise ValidationError(
                    f"`{name}` must be in [0, {caps.max_top_logprobs}], got {k}", field=name
                )

    # -- vectors ------------------------------------------------------------------------------

    def vector(self, ref: str, sha: str) -> Any:
        """The stored vector ``ref`` pinned at ``sha`` (LRU of loaded vectors, content-addressed);
        the :data:`~prefvec.server.backends.base.VectorSource` backends load through."""
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

    def forget(self, name: str) -> None:
        """Drop cached copies of a deleted vector (next use reloads from the store)."""
        with self._lock:
            for key in [k for k in self._vectors if k.split("@", 1)[0] == name]:
                del self._vectors[key]
