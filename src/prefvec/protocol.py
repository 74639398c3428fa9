"""Wire types shared by the prefvec server and its clients (pure pydantic, no torch).

Generation routes are OpenAI-compatible (the official ``openai`` client works against them); the
prefvec extension fields ride along in the same JSON bodies (``preferences``, ``recipe``, ``merge``,
``experiment``) and every generation response carries a ``prefvec`` block (:class:`PrefvecInfo`)
naming the recipe key, the pinned vector versions and the serving path used.

Routes (request model -> response model):

* ``POST /v1/chat/completions``: :class:`ChatCompletionRequest` -> :class:`ChatCompletionResponse`,
  or with ``stream: true`` an SSE stream of :class:`ChatCompletionChunk` ended by ``data: [DONE]``.
* ``POST /v1/completions``: :class:`CompletionRequest` -> :class:`CompletionResponse`,
  or with ``stream: true`` an SSE stream of :class:`CompletionChunk` ended by ``data: [DONE]``.
* ``GET /v1/models``: -> :class:`ModelList` (the base, then every recipe as ``recipe:<name>``).
* ``GET /v1/vectors``: -> :class:`VectorList` (latest version of every vector).
* ``GET /v1/vectors/{ref}``: -> :class:`VectorInfo` (``ref`` is ``name`` or ``name@version``).
* ``GET /v1/vectors/{name}/versions``: -> :class:`VectorList` (every version of one vector).
* ``GET /v1/vectors/{ref}/file``: -> the safetensors bytes (``application/octet-stream``).
* ``POST /v1/vectors`` (operator): multipart form, field ``file`` (safetensors) and optional field
  ``metadata`` (JSON object, see :class:`VectorUploadMetadata`) -> :class:`VectorInfo` (201).
* ``DELETE /v1/vectors/{ref}`` (operator): -> :class:`DeleteResponse`; 409 when a recipe uses it.
* ``GET /v1/recipes``: -> :class:`RecipeList` (latest version of every recipe).
* ``GET /v1/recipes/{ref}``: -> :class:`RecipeInfo`.
* ``POST /v1/recipes`` (operator): :class:`RecipeCreate` -> :class:`RecipeInfo` (201).
* ``DELETE /v1/recipes/{ref}`` (operator): -> :class:`DeleteResponse`; 409 while a live
  experiment pins it.
* ``POST /v1/compare``: :class:`CompareRequest` -> :class:`CompareResponse`.
* ``POST /v1/experiments`` (operator): :class:`ExperimentCreate` -> :class:`ExperimentInfo` (201).
* ``GET /v1/experiments``: -> :class:`ExperimentList` (``?include_archived=true``: archived too).
* ``GET /v1/experiments/{name}``: -> :class:`ExperimentReport`.
* ``GET /v1/experiments/{name}/leaderboard``: -> :class:`Leaderboard` (Bradley–Terry).
* ``POST /v1/experiments/{name}/end`` / ``.../archive`` (operator): -> :class:`ExperimentInfo`;
  an ended or archived experiment routes no traffic and takes no feedback (409).
* ``DELETE /v1/experiments/{name}`` (operator): -> :class:`DeleteResponse`.
* ``POST /v1/feedback``: :class:`FeedbackRequest` -> :class:`FeedbackResponse` (201).
* ``GET /health``: -> :class:`HealthResponse`.
* ``GET /ready``: -> :class:`ReadyResponse` (200 once the model is loaded, else 503).
* ``GET /metrics``: Prometheus text exposition.

Every error is ``{"error": ErrorDetail}`` (:class:`ErrorResponse`) with the HTTP status of the
matching :mod:`prefvec.errors` class; ``error.code`` names that class for the client.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ServingPath = Literal["base", "lowrank", "dense"]
FinishReason = Literal["stop", "length"]

# Bounds where a number enters (issue 15): strict JSON types where OpenAI is strict (no bool for
# an int, no string for a number), finite floats, and ranges the sampling maths can take.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
"""Vector, recipe, experiment and arm names (``prefvec.vector_store.check_name`` also bars '..')."""
REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}(@(latest|[1-9][0-9]{0,17}))?$"
"""``name``, ``name@latest`` or ``name@<version>``."""
SEED_MAX = 2**64 - 1
TEMPERATURE_GREEDY_BELOW = 1e-5
"""Temperatures in [0, this) decode greedily (logits / T would overflow float32 below it)."""
Name = Annotated[str, Field(pattern=NAME_PATTERN, description="1-64 of [A-Za-z0-9_.-].")]
Seed = Annotated[int, Field(strict=True, ge=0, le=SEED_MAX, description="0 <= seed < 2**64.")]
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0)]
Temperature = Annotated[
    float,
    Field(
        strict=True,
        ge=0.0,
        le=2.0,
        allow_inf_nan=False,
        description=f"In [0, 2]; below {TEMPERATURE_GREEDY_BELOW:g} (0 included) greedy decoding.",
    ),
]
TopP = Annotated[
    float, Field(strict=True, gt=0.0, le=1.0, allow_inf_nan=False, description="In (0, 1].")
]
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
# OpenAI's own bounds (issue 14)
N_MAX = 128
"""Wire bound of ``n``; the server's ``max_n`` setting is the one in force."""
CHAT_TOP_LOGPROBS_MAX = 20
LEGACY_LOGPROBS_MAX = 5
Penalty = Annotated[
    float, Field(strict=True, ge=-2.0, le=2.0, allow_inf_nan=False, description="In [-2, 2].")
]
LogitBias = Annotated[
    float, Field(strict=True, ge=-100.0, le=100.0, allow_inf_nan=False, description="[-100, 100]")
]
TokenId = Annotated[int, Field(strict=True, ge=0)]


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def lone_surrogate(text: str) -> int:
    """Index of the first lone UTF-16 surrogate (U+D800..U+DFFF) in ``text``, or -1.

    JSON's ``\\ud800`` escapes decode to such code points; they cannot be encoded as UTF-8, so
    the tokenizer (and any response echoing them) would fail on them.
    """
    found = _SURROGATE_RE.search(text)
    return found.start() if found else -1


def _check_text(value: Any) -> None:
    if isinstance(value, str):
        i = lone_surrogate(value)
        if i >= 0:
            raise ValueError(
                f"text must be valid Unicode: lone UTF-16 surrogate U+{ord(value[i]):04X} at "
                f"index {i}"
            )
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_text(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, BaseModel) and not isinstance(value, _WireModel):
        for item in value.__dict__.values():  # e.g. content parts: checked by their container
            _check_text(item)


class _WireModel(BaseModel):
    """Base of request models: every text field (nested lists/dicts too) is valid Unicode."""

    @field_validator("*", mode="after")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        _check_text(value)
        return value


# ---------------------------------------------------------------------------------------- errors


class ErrorDetail(BaseModel):
    """The inner error object (OpenAI-like) built from ``PrefvecError.to_dict()``."""

    message: str
    type: str
    code: str
    param: str | None = None
    problems: list[str] = Field(default_factory=list)
    retry_after: float | None = None


class ErrorResponse(BaseModel):
    """Body of every 4xx/5xx response."""

    error: ErrorDetail


# --------------------------------------------------------------------------- preference extension


class MergeOptions(_WireModel):
    """How the request's vectors are merged (``merge`` extension field)."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(
        default="linear", description="Merge method: linear, ties, dare_linear, ..."
    )
    density: FiniteFloat = Field(
        default=1.0, description="Fraction kept by TIES / DARE, in (0, 1]."
    )
    seed: Seed = Field(default=0, description="Seed of DARE's random drop.")


class PreferenceFields(_WireModel):
    """prefvec extension fields shared by every generation request."""

    preferences: dict[str, float] | None = Field(
        None, description="{vector name or name@version: weight}; any real weight in the bounds."
    )
    recipe: str | None = Field(default=None, description="Recipe name[@version] to serve.")
    merge: MergeOptions | None = Field(default=None, description="Merge method for `preferences`.")
    experiment: str | None = Field(
        None, description="Experiment name: the request is routed to the arm of `user`."
    )


class PrefvecInfo(BaseModel):
    """What a generation actually used (``prefvec`` block of every response)."""

    recipe_key: str = Field(description="Canonical MergeSpec key, e.g. 'linear(helpful@1=0.5)'.")
    recipe: str | None = Field(default=None, description="Recipe name@version when one was named.")
    vectors: dict[str, int] = Field(default_factory=dict, description="{vector name: version}.")
    path: ServingPath = Field(description="'base', 'lowrank' (per-request mixing) or 'dense'.")
    experiment: str | None = None
    arm: str | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = Field(
        default=False, strict=True, description="A last chunk with `usage` and `choices: []`."
    )


Unsupported = list[tuple[str, str]]
"""``[(field, why)]``: OpenAI fields a request set that this server cannot honour."""


def _not_supported(name: str, value: Any, allowed: tuple[Any, ...] = (None,)) -> Unsupported:
    if value in allowed:
        return []
    return [(name, f"`{name}` is not supported by this server, got {value!r}")]


class _GenerationRequest(PreferenceFields):
    """Sampling fields shared by chat and text completions.

    Nothing is silently ignored: a field this model does not know is a 422 naming it, and an
    OpenAI field the server cannot honour is declared here and refused by :meth:`unsupported`.
    """

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None,
        description="The base's id (or 'base'), 'recipe:<name>', or an operator alias; an "
        "unknown name is a 404 listing the valid ids.",
    )
    max_tokens: PositiveInt | None = Field(default=None, description="Tokens to generate at most.")
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    n: int = Field(
        default=1,
        ge=1,
        le=N_MAX,
        strict=True,
        description="Choices per prompt, at most the server's `max_n`; choice i samples with "
        "seed `seed + i`.",
    )
    stream: bool = Field(default=False, strict=True)
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: Seed | None = Field(default=None, description="Sampling seed (deterministic when set).")
    frequency_penalty: Penalty = Field(
        default=0.0, description="Subtracted from a logit per earlier occurrence in the output."
    )
    presence_penalty: Penalty = Field(
        default=0.0, description="Subtracted from a logit if the token occurs in the output."
    )
    logit_bias: dict[str, LogitBias] | None = Field(
        default=None, description="{token id: bias added to its logit before sampling}."
    )
    user: str | None = Field(
        default=None, description="End-user id (sticky experiment assignment, fair queueing)."
    )
    # OpenAI fields that are accepted only at values that need nothing from the server
    response_format: dict[str, Any] | None = Field(
        default=None, description="Only {'type': 'text'}: JSON output is not enforced here."
    )
    service_tier: str | None = Field(default=None, description="Only 'auto' or 'default'.")
    store: bool | None = Field(default=None, description="Only false: nothing is stored.")
    metadata: dict[str, Any] | None = Field(default=None, description="Not supported.")

    def unsupported(self) -> Unsupported:
        """The OpenAI fields set to something this server cannot honour."""
        rf = self.response_format
        problems = [] if rf is None or rf == {"type": "text"} else [(
            "response_format", "`response_format` only takes {'type': 'text'}: JSON output "
            f"cannot be enforced by this server, got {rf!r}",
        )]  # fmt: skip
        problems += _not_supported("service_tier", self.service_tier, (None, "auto", "default"))
        problems += _not_supported("store", self.store, (None, False))
        problems += _not_supported("metadata", self.metadata, (None, {}))
        if self.stream_options is not None and not self.stream:
            problems.append(("stream_options", "`stream_options` needs `stream: true`"))
        return problems


# --------------------------------------------------------------------------------------- chat


class ContentPart(BaseModel):
    """One part of a message's content; only ``text`` parts can be served (others are a 4xx)."""

    model_config = ConfigDict(extra="allow")

    type: str = "text"
    text: str | None = None


class ChatMessage(_WireModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(default=None, description="Not supported (chat templates drop it).")
    tool_calls: list[Any] | None = Field(default=None, description="Not supported.")
    tool_call_id: str | None = Field(default=None, description="Not supported.")
    refusal: str | None = Field(default=None, description="Only null.")

    def text(self) -> str:
        """The message content as one string (text parts joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")

    def unsupported(self, where: str) -> Unsupported:
        """Parts and fields of this message that cannot be served."""
        problems: Unsupported = []
        for j, part in enumerate(self.content if isinstance(self.content, list) else []):
            at = f"{where}.content.{j}"
            if part.type != "text":
                problems.append((f"{at}.type", f"`{at}.type` {part.type!r} is not supported: "
                                 "this server takes text content parts only"))  # fmt: skip
            elif part.text is None:
                problems.append((f"{at}.text", f"`{at}.text` is required in a text part"))
        for name in ("name", "tool_calls", "tool_call_id", "refusal"):
            problems += _not_supported(f"{where}.{name}", getattr(self, name), (None, []))
        return problems


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: PositiveInt | None = Field(
        default=None, description="Alias of max_tokens."
    )
    logprobs: bool = Field(
        default=False, strict=True, description="Log-probabilities of the output tokens."
    )
    top_logprobs: int | None = Field(
        default=None,
        ge=0,
        le=CHAT_TOP_LOGPROBS_MAX,
        strict=True,
        description=f"Alternatives per token, 0-{CHAT_TOP_LOGPROBS_MAX}; needs `logprobs: true`.",
    )
    tools: list[Any] | None = Field(default=None, description="Not supported.")
    tool_choice: Any = Field(default=None, description="Only 'none'.")
    parallel_tool_calls: bool | None = Field(default=None, description="Not supported.")
    functions: list[Any] | None = Field(default=None, description="Not supported.")
    function_call: Any = Field(default=None, description="Only 'none'.")
    modalities: list[str] | None = Field(default=None, description="Only ['text'].")
    audio: Any = Field(default=None, description="Not supported.")
    prediction: Any = Field(default=None, description="Not supported.")
    reasoning_effort: str | None = Field(default=None, description="Not supported.")
    web_search_options: Any = Field(default=None, description="Not supported.")

    def unsupported(self) -> Unsupported:
        problems = super().unsupported()
        for name in ("tools", "functions"):
            problems += _not_supported(name, getattr(self, name), (None, []))
        for name in ("tool_choice", "function_call"):
            problems += _not_supported(name, getattr(self, name), (None, "none"))
        for name in ("parallel_tool_calls", "audio", "prediction", "reasoning_effort",
                     "web_search_options"):  # fmt: skip
            problems += _not_supported(name, getattr(self, name))
        problems += _not_supported("modalities", self.modalities, (None, ["text"]))
        if self.top_logprobs is not None and not self.logprobs:
            problems.append(("top_logprobs", "`top_logprobs` needs `logprobs: true`"))
        for i, message in enumerate(self.messages):
            problems += message.unsupported(f"messages.{i}")
        return problems


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    """One token's log-probability: its text, and the UTF-8 bytes of that text."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    """``choices[].logprobs`` of a chat completion (OpenAI's shape)."""

    content: list[ChatTokenLogprob] | None = None
    refusal: list[ChatTokenLogprob] | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: ChatLogprobs | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    prefvec: PrefvecInfo


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    prefvec: PrefvecInfo | None = None


# ------------------------------------------------------------------------------ text completions


Prompt = str | list[str] | list[TokenId] | list[list[TokenId]]


class CompletionRequest(_GenerationRequest):
    prompt: Prompt = Field(
        description="A prompt, a list of prompts, token ids, or a list of token-id lists; "
        "choice `i * n + j` is sample j of prompt i."
    )
    max_tokens: NonNegativeInt | None = Field(
        default=None, description="Tokens to generate at most; 0 (with `echo`) scores the prompt."
    )
    echo: bool = Field(default=False, strict=True, description="Return the prompt before the text.")
    logprobs: int | None = Field(
        default=None,
        ge=0,
        le=LEGACY_LOGPROBS_MAX,
        strict=True,
        description=f"Log-probabilities with 0-{LEGACY_LOGPROBS_MAX} alternatives per token; "
        "with `echo` the prompt's tokens too (the first is null).",
    )
    suffix: str | None = Field(default=None, description="Not supported.")
    best_of: int | None = Field(
        default=None, ge=1, strict=True, description="Only equal to `n` (no reranking here)."
    )

    def prompts(self) -> list[str] | list[list[int]]:
        """The prompts as a list: strings or token-id lists."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[list-item, return-value]
        return list(p)  # type: ignore[return-value]

    def unsupported(self) -> Unsupported:
        problems = super().unsupported()
        problems += _not_supported("suffix", self.suffix, (None, ""))
        if self.best_of is not None and self.best_of != self.n:
            problems.append(("best_of", f"`best_of` must equal `n` = {self.n} (no reranking of "
                             f"candidates here), got {self.best_of}"))  # fmt: skip
        if self.max_tokens == 0 and not self.echo:
            problems.append(("max_tokens", "`max_tokens` = 0 needs `echo: true` (score only)"))
        if self.stream and self.echo and self.logprobs is not None:
            problems.append(("echo", "`echo` with `logprobs` is not supported with `stream: "
                             "true` (send `stream: false` to score a prompt)"))  # fmt: skip
        return problems


class CompletionLogprobs(BaseModel):
    """``choices[].logprobs`` of a text completion (OpenAI's legacy shape); ``text_offset`` are
    character offsets into the choice's ``text``."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None = None
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    prefvec: PrefvecInfo


class CompletionChunk(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    prefvec: PrefvecInfo | None = None


# ----------------------------------------------------------------------------------- tokenize


class TokenizeRequest(_WireModel):
    """``POST /tokenize``: the server's token ids of a text or of a chat (its template, with the
    generation prompt), exactly as generation encodes them (vLLM's request shape)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="Checked like a generation's `model`.")
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    add_special_tokens: bool = Field(
        default=False, strict=True, description="Text only: add the tokenizer's BOS/EOS."
    )
    add_generation_prompt: bool = Field(
        default=True, strict=True, description="Chat only: only true (as generation encodes)."
    )

    def unsupported(self) -> Unsupported:
        problems = _not_supported("add_generation_prompt", self.add_generation_prompt, (True,))
        if self.messages is not None and self.add_special_tokens:
            problems.append(("add_special_tokens", "`add_special_tokens` is for `prompt` only"))
        for i, message in enumerate(self.messages or []):
            problems += message.unsupported(f"messages.{i}")
        return problems


class TokenizeResponse(BaseModel):
    tokens: list[int]
    count: int
    max_model_len: int | None = None


class DetokenizeRequest(_WireModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    tokens: list[TokenId]


class DetokenizeResponse(BaseModel):
    prompt: str


class TokenizerInfo(BaseModel):
    """``GET /tokenizer_info``."""

    tokenizer_class: str
    eos_token: str | None = None
    bos_token: str | None = None
    pad_token: str | None = None
    chat_template: str | None = None
    model_max_length: int | None = None


# ------------------------------------------------------------------------------------- models


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "prefvec"
    kind: Literal["base", "recipe"] = "base"
    recipe_key: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ------------------------------------------------------------------------------------ vectors


class VectorUploadMetadata(_WireModel):
    """The ``metadata`` form field of an upload: overrides/extends the file's own metadata."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    description: str | None = None


class VectorInfo(BaseModel):
    """One stored vector version (the store's VectorRecord on the wire)."""

    object: Literal["vector"] = "vector"
    name: str
    version: int
    kind: Literal["dense", "lowrank"]
    sha256: str
    size_bytes: int
    created_at: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class VectorList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VectorInfo]


class DeleteResponse(BaseModel):
    object: str
    name: str
    version: int | None = None
    deleted: bool = True


# ------------------------------------------------------------------------------------ recipes


class RecipeCreate(_WireModel):
    """A named merge recipe; unpinned vector refs are pinned to their latest version on save."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    method: str = "linear"
    weights: dict[str, float] = Field(description="{vector name or name@version: weight}")
    density: FiniteFloat = 1.0
    seed: Seed = 0
    description: str = ""


class RecipeInfo(BaseModel):
    object: Literal["recipe"] = "recipe"
    name: str
    version: int
    method: str
    weights: dict[str, float]
    density: float = 1.0
    seed: int = 0
    description: str = ""
    key: str = Field(description="Canonical MergeSpec key of the pinned recipe.")
    created_at: str | None = None


class RecipeList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RecipeInfo]


# ------------------------------------------------------------------------------------ compare


class CompareCandidate(_WireModel):
    """One column of a comparison: a recipe or a preference set (or neither: the base)."""

    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(default=None, description="Column label; defaults to the recipe key.")
    recipe: str | None = None
    preferences: dict[str, float] | None = None
    merge: MergeOptions | None = None


class CompareRequest(_WireModel):
    model_config = ConfigDict(extra="forbid")

    prompts: list[str] = Field(min_length=1)
    candidates: list[CompareCandidate] = Field(min_length=2)
    chat: bool = Field(
        default=True, strict=True, description="Wrap each prompt as a user chat message."
    )
    max_tokens: PositiveInt = 32
    temperature: Temperature = 0.0
    top_p: TopP = 1.0
    seed: Seed | None = 0
    scorers: list[str] | None = Field(
        None, description="Scorer names (None: the server's configured scorers)."
    )


class CompareOutput(BaseModel):
    label: str
    text: str
    scores: dict[str, float] = Field(default_factory=dict)
    prefvec: PrefvecInfo | None = None


class CompareRow(BaseModel):
    prompt: str
    outputs: list[CompareOutput]


class WinRate(BaseModel):
    """Pairwise win rate of ``a`` over ``b`` on one scorer, ties counted half."""

    scorer: str
    a: str
    b: str
    wins: int
    losses: int
    ties: int
    rate: float
    ci_low: float
    ci_high: float


class CompareSummary(BaseModel):
    scorers: list[str] = Field(default_factory=list)
    mean_scores: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="{label: {scorer: mean}}"
    )
    win_rates: list[WinRate] = Field(default_factory=list)


class CompareResponse(BaseModel):
    object: Literal["comparison"] = "comparison"
    labels: list[str]
    rows: list[CompareRow]
    summary: CompareSummary


# -------------------------------------------------------------------------------- experiments


TRAFFIC_MAX = 1e6
ExperimentStatus = Literal["live", "ended", "archived"]
"""``live`` routes traffic and takes feedback; ``ended`` and ``archived`` do neither (archived
experiments are left out of the list unless asked for)."""


class ExperimentArm(_WireModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    recipe: str = Field(
        max_length=200, description="Recipe name[@version]; pinned when the experiment is made."
    )
    traffic: float = Field(
        default=1.0,
        gt=0.0,
        le=TRAFFIC_MAX,
        strict=True,
        allow_inf_nan=False,
        description=f"Relative share of users (normalised), in (0, {TRAFFIC_MAX:g}].",
    )


class ExperimentCreate(_WireModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    arms: list[ExperimentArm] = Field(
        min_length=2, max_length=1024, description="At most the server's `max_experiment_arms`."
    )
    description: str = Field(default="", max_length=4096)


class ExperimentInfo(BaseModel):
    object: Literal["experiment"] = "experiment"
    name: str
    arms: list[ExperimentArm]
    description: str = ""
    created_at: str | None = None
    status: ExperimentStatus = "live"
    ended_at: str | None = None


class ExperimentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ExperimentInfo]


class ArmReport(BaseModel):
    name: str
    recipe: str
    assignments: int = Field(description="Distinct users assigned.")
    requests: int = Field(description="Generation requests served.")
    ratings: int
    mean_rating: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    pairwise_wins: int = 0
    pairwise_losses: int = 0
    pairwise_ties: int = Field(default=0, description="Pairwise ties and both-bad votes.")
    pairwise_win_rate: float | None = Field(
        default=None, description="(wins + ties / 2) / pairwise votes."
    )
    pairwise_ci_low: float | None = None
    pairwise_ci_high: float | None = None


class ExperimentReport(BaseModel):
    object: Literal["experiment.report"] = "experiment.report"
    name: str
    description: str = ""
    arms: list[ArmReport]
    confidence: float = 0.95
    status: ExperimentStatus = "live"


PairwiseOutcome = Literal["win", "tie", "both_bad"]


class FeedbackRequest(_WireModel):
    """A rating of one arm's output, or a pairwise vote between two arms."""

    model_config = ConfigDict(extra="forbid")

    experiment: str = Field(max_length=64)
    user: str | None = Field(
        default=None, max_length=256, description="User id; the rated arm is the user's arm."
    )
    arm: str | None = Field(
        default=None, max_length=64, description="Arm rated (default: the user's assigned arm)."
    )
    rating: float | None = Field(
        default=None,
        strict=True,
        allow_inf_nan=False,
        description="A finite score, e.g. 1-5 or 0/1, within the server's `max_abs_rating`.",
    )
    preferred: str | None = Field(
        default=None, max_length=64, description="Pairwise: the winning arm (arm A of a tie)."
    )
    rejected: str | None = Field(
        default=None, max_length=64, description="Pairwise: the losing arm (arm B of a tie)."
    )
    outcome: PairwiseOutcome | None = Field(
        default=None,
        description="Pairwise only: 'win' (the default: `preferred` beat `rejected`), 'tie' or "
        "'both_bad' (both count as a tie: half a win each).",
    )
    completion_id: str | None = Field(default=None, max_length=256)
    comment: str = Field(default="", description="At most the server's `max_feedback_chars`.")


class FeedbackResponse(BaseModel):
    object: Literal["feedback"] = "feedback"
    id: int
    experiment: str
    arm: str | None = None
    outcome: PairwiseOutcome | None = None


class LeaderboardArm(BaseModel):
    """One arm on an experiment's pairwise leaderboard (``prefvec.server.leaderboard``)."""

    arm: str
    recipe: str
    battles: int = Field(description="Pairwise votes this arm was in.")
    wins: int
    losses: int
    ties: int = Field(description="Ties and both-bad votes.")
    win_rate: float | None = Field(description="(wins + ties / 2) / battles; null before a vote.")
    win_rate_ci_low: float | None = Field(description="95% Wilson interval of the win rate.")
    win_rate_ci_high: float | None = None
    bt_score: float | None = Field(
        description="Bradley-Terry log-strength (mean 0 over arms; P(i beats j) = "
        "sigmoid(score_i - score_j)); null before a vote."
    )
    bt_ci_low: float | None = Field(
        description="95% seeded bootstrap interval of bt_score; null with two arms or fewer."
    )
    bt_ci_high: float | None = None


class Leaderboard(BaseModel):
    """``GET /v1/experiments/{name}/leaderboard``: arms ranked by Bradley-Terry score."""

    experiment: str
    n_votes: int = Field(description="Pairwise votes counted.")
    arms: list[LeaderboardArm]


# ------------------------------------------------------------------------------------- health


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    model: str | None = None
    backend: str | None = None
    device: str | None = None


__all__ = [
    "ArmReport",
    "AssistantMessage",
    "ChatChoice",
    "ChatChunkChoice",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatDelta",
    "ChatLogprobs",
    "ChatMessage",
    "ChatTokenLogprob",
    "CompareCandidate",
    "CompareOutput",
    "CompareRequest",
    "CompareResponse",
    "CompareRow",
    "CompareSummary",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionLogprobs",
    "CompletionRequest",
    "CompletionResponse",
    "ContentPart",
    "DeleteResponse",
    "DetokenizeRequest",
    "DetokenizeResponse",
    "ErrorDetail",
    "ErrorResponse",
    "ExperimentArm",
    "ExperimentCreate",
    "ExperimentInfo",
    "ExperimentList",
    "ExperimentReport",
    "ExperimentStatus",
    "FeedbackRequest",
    "FeedbackResponse",
    "HealthResponse",
    "Leaderboard",
    "LeaderboardArm",
    "MergeOptions",
    "ModelCard",
    "ModelList",
    "PairwiseOutcome",
    "PreferenceFields",
    "PrefvecInfo",
    "ReadyResponse",
    "RecipeCreate",
    "RecipeInfo",
    "RecipeList",
    "ServingPath",
    "StreamOptions",
    "TokenizeRequest",
    "TokenizeResponse",
    "TokenizerInfo",
    "TopLogprob",
    "Usage",
    "VectorInfo",
    "VectorList",
    "VectorUploadMetadata",
    "WinRate",
]
