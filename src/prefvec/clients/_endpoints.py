"""The endpoint table of the clients, written once: each builder turns a method's arguments into
a :class:`Call` (HTTP method, path, body, how to read the answer) without doing any I/O; the sync
and async clients only differ in how they send it (see :mod:`prefvec.clients.client`)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypedDict, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel
from typing_extensions import Unpack

from prefvec import protocol
from prefvec.clients._wire import error_from_response

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
UploadSource = str | os.PathLike[str] | bytes | IO[bytes]


# ----------------------------------------------------------------------------- the call plan


@dataclass
class Call(Generic[T]):
    """Everything one endpoint call needs, independent of sync/async sending.

    ``parse`` reads a successful response; for streams ``chunk`` is the model of each SSE event;
    for downloads ``dest`` is where the body goes; ``upload`` is a multipart file opened at send.
    """

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    upload: tuple[str, UploadSource] | None = None
    chunk: type[BaseModel] | None = None
    dest: Path | None = None
    ok_statuses: frozenset[int] = frozenset()


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.model_validate_json(response.content)


def _seg(ref: str) -> str:
    """A name or ``name@version`` as one URL path segment."""
    return quote(str(ref), safe="@")


def _dump(obj: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json", exclude_none=True)
    return dict(obj)


@contextlib.contextmanager
def multipart(call: Call[Any]) -> Iterator[dict[str, Any] | None]:
    """The ``files=`` argument of an upload; a path is opened here and streamed by httpx."""
    if call.upload is None:
        yield None
        return
    filename, source = call.upload
    if isinstance(source, (bytes, bytearray)):
        yield {"file": (filename, bytes(source), "application/octet-stream")}
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            yield {"file": (filename, fh, "application/octet-stream")}
    else:
        yield {"file": (filename, source, "application/octet-stream")}


# --------------------------------------------------------------------------------- builders
# One per endpoint; the docstring is the client method's.


class GenerationOptions(TypedDict, total=False):
    """Sampling and preference options shared by chat and text completions (see protocol)."""

    model: str
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: str | list[str]
    n: int
    frequency_penalty: float
    presence_penalty: float
    logit_bias: Mapping[str, float]
    logprobs: bool | int
    top_logprobs: int
    echo: bool
    preferences: Mapping[str, float]
    recipe: str
    merge: protocol.MergeOptions | Mapping[str, Any]
    experiment: str
    user: str
    extra_body: Mapping[str, Any]


def _generation_body(opts: GenerationOptions, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {k: v for k, v in opts.items() if k != "extra_body" and v is not None}
    if "preferences" in body:
        body["preferences"] = dict(body["preferences"])
    if "merge" in body:
        body["merge"] = _dump(body["merge"])
    if stream:
        body["stream"] = True
    body.update(opts.get("extra_body") or {})
    return body


def _messages(messages: str | Sequence[protocol.ChatMessage | Mapping[str, Any]]) -> list[Any]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [_dump(m) for m in messages]


def chat(
    messages: str | Sequence[protocol.ChatMessage | Mapping[str, Any]],
    **opts: Unpack[GenerationOptions],
) -> Call[protocol.ChatCompletionResponse]:
    """Chat completion (``POST /v1/chat/completions``).

    Args:
        messages: a user prompt, or OpenAI-style messages (dicts or ``ChatMessage``).
        **opts: ``model``, ``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``,
            ``preferences`` ({vector[@version]: weight}), ``recipe``, ``merge``, ``experiment``,
            ``user``, ``extra_body`` (more JSON fields).

    Returns:
        The response; ``.prefvec`` names the recipe key and vector versions used.
    """
    body = {"messages": _messages(messages), **_generation_body(opts, stream=False)}
    return Call("POST", "/v1/chat/completions", _model(protocol.ChatCompletionResponse), body)


def chat_stream(
    messages: str | Sequence[protocol.ChatMessage | Mapping[str, Any]],
    **opts: Unpack[GenerationOptions],
) -> Call[protocol.ChatCompletionChunk]:
    """Streamed chat completion: yields :class:`~prefvec.protocol.ChatCompletionChunk` (SSE).

    Same arguments as :meth:`chat`; :func:`chunk_text` gives each chunk's text delta. The request
    is sent when iteration starts.
    """
    body = {"messages": _messages(messages), **_generation_body(opts, stream=True)}
    return Call("POST", "/v1/chat/completions", _raw, body, chunk=protocol.ChatCompletionChunk)


Prompt = str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]]


def _prompt(prompt: Prompt) -> Any:
    if isinstance(prompt, str):
        return prompt
    return [p if isinstance(p, (str, int)) else list(p) for p in prompt]


def complete(
    prompt: Prompt, **opts: Unpack[GenerationOptions]
) -> Call[protocol.CompletionResponse]:
    """Text completion (``POST /v1/completions``); options as for :meth:`chat`.

    ``prompt`` is a text, a list of texts, token ids, or a list of token-id lists (choice
    ``i * n + j`` answers prompt ``i``). With ``echo=True, logprobs=0, max_tokens=0`` it scores
    the prompt: ``choices[i].logprobs.token_logprobs`` (the first is None).
    """
    body = {"prompt": _prompt(prompt), **_generation_body(opts, stream=False)}
    return Call("POST", "/v1/completions", _model(protocol.CompletionResponse), body)


def tokenize(
    prompt: str | None = None,
    messages: str | Sequence[protocol.ChatMessage | Mapping[str, Any]] | None = None,
) -> Call[protocol.TokenizeResponse]:
    """The server's token ids (``POST /v1/tokenize``) of a text (no special tokens added) or of
    a chat (its template with the generation prompt), as the generation routes encode them."""
    body: dict[str, Any] = {}
    if prompt is not None:
        body["prompt"] = prompt
    if messages is not None:
        body["messages"] = _messages(messages)
    return Call("POST", "/v1/tokenize", _model(protocol.TokenizeResponse), body)


def complete_stream(
    prompt: Prompt, **opts: Unpack[GenerationOptions]
) -> Call[protocol.CompletionChunk]:
    """Streamed text completion: yields :class:`~prefvec.protocol.CompletionChunk` (SSE)."""
    body = {"prompt": _prompt(prompt), **_generation_body(opts, stream=True)}
    return Call("POST", "/v1/completions", _raw, body, chunk=protocol.CompletionChunk)


def _raw(response: httpx.Response) -> Any:
    return response


def models() -> Call[protocol.ModelList]:
    """Served models: the base, then every recipe as ``recipe:<name>`` (``GET /v1/models``)."""
    return Call("GET", "/v1/models", _model(protocol.ModelList))


def list_vectors() -> Call[protocol.VectorList]:
    """Latest version of every stored vector (``GET /v1/vectors``)."""
    return Call("GET", "/v1/vectors", _model(protocol.VectorList))


def vector_versions(name: str) -> Call[protocol.VectorList]:
    """Every version of one vector (``GET /v1/vectors/{name}/versions``)."""
    return Call("GET", f"/v1/vectors/{_seg(name)}/versions", _model(protocol.VectorList))


def get_vector(ref: str) -> Call[protocol.VectorInfo]:
    """Metadata of one vector, ``name`` (latest) or ``name@version``."""
    return Call("GET", f"/v1/vectors/{_seg(ref)}", _model(protocol.VectorInfo))


def push_vector(
    source: UploadSource,
    name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Call[protocol.VectorInfo]:
    """Upload a safetensors vector file as a new version (operator; ``POST /v1/vectors``).

    Args:
        source: a file path (streamed from disk), the file's bytes, or a binary file object.
        name: the vector name (default: the name in the file's own metadata).
        metadata: more metadata fields to set (e.g. ``{"description": ...}``).

    Returns:
        The stored version's :class:`~prefvec.protocol.VectorInfo`.
    """
    meta = dict(metadata or {})
    if name is not None:
        meta["name"] = name
    filename = f"{name or 'vector'}.safetensors"
    if isinstance(source, (str, os.PathLike)):
        filename = Path(source).name
    data = {"metadata": json.dumps(meta)} if meta else None
    return Call(
        "POST", "/v1/vectors", _model(protocol.VectorInfo), data=data, upload=(filename, source)
    )


def download_vector(ref: str, dest: str | os.PathLike[str]) -> Call[Path]:
    """Stream a vector's safetensors file to ``dest`` (written atomically); returns the path."""
    return Call("GET", f"/v1/vectors/{_seg(ref)}/file", _raw, dest=Path(dest))


def delete_vector(ref: str) -> Call[protocol.DeleteResponse]:
    """Delete ``name`` (every version) or ``name@version`` (operator; 409 if a recipe uses it)."""
    return Call("DELETE", f"/v1/vectors/{_seg(ref)}", _model(protocol.DeleteResponse))


def list_recipes() -> Call[protocol.RecipeList]:
    """Latest version of every recipe (``GET /v1/recipes``)."""
    return Call("GET", "/v1/recipes", _model(protocol.RecipeList))


def get_recipe(ref: str) -> Call[protocol.RecipeInfo]:
    """One recipe, ``name`` (latest) or ``name@version``."""
    return Call("GET", f"/v1/recipes/{_seg(ref)}", _model(protocol.RecipeInfo))


def create_recipe(
    name: str,
    weights: Mapping[str, float],
    *,
    method: str = "linear",
    density: float = 1.0,
    seed: int = 0,
    description: str = "",
) -> Call[protocol.RecipeInfo]:
    """Save a merge recipe as a new version (operator); unpinned vector refs get pinned."""
    body = {"name": name, "weights": dict(weights), "method": method, "density": density}
    body.update(seed=seed, description=description)
    return Call("POST", "/v1/recipes", _model(protocol.RecipeInfo), body)


def delete_recipe(ref: str) -> Call[protocol.DeleteResponse]:
    """Delete a recipe, every version or ``name@version`` (operator)."""
    return Call("DELETE", f"/v1/recipes/{_seg(ref)}", _model(protocol.DeleteResponse))


def _candidate(c: str | protocol.CompareCandidate | Mapping[str, Any]) -> dict[str, Any]:
    return {"recipe": c} if isinstance(c, str) else _dump(c)


def compare(
    prompts: Sequence[str],
    candidates: Sequence[str | protocol.CompareCandidate | Mapping[str, Any]],
    *,
    chat: bool = True,
    max_tokens: int = 32,
    temperature: float = 0.0,
    seed: int | None = 0,
    scorers: Sequence[str] | None = None,
) -> Call[protocol.CompareResponse]:
    """Outputs of prompts × candidates side by side, with scores and win rates (``/v1/compare``).

    Args:
        prompts: the prompts.
        candidates: at least two; a string is a recipe name, else a
            :class:`~prefvec.protocol.CompareCandidate` (or its dict) with preferences.
        chat: wrap each prompt as a user chat message.
        max_tokens: tokens per output.
        temperature: 0 is greedy.
        seed: sampling seed.
        scorers: scorer names (None: the server's configured scorers).
    """
    body: dict[str, Any] = {
        "prompts": list(prompts),
        "candidates": [_candidate(c) for c in candidates],
        "chat": chat,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "seed": seed,
    }
    if scorers is not None:
        body["scorers"] = list(scorers)
    return Call("POST", "/v1/compare", _model(protocol.CompareResponse), body)


def create_experiment(
    name: str,
    arms: Sequence[protocol.ExperimentArm | Mapping[str, Any]],
    *,
    description: str = "",
) -> Call[protocol.ExperimentInfo]:
    """Start an A/B(/n) experiment between recipes (operator).

    Args:
        name: the experiment name requests and feedback refer to.
        arms: at least two ``{"name", "recipe", "traffic"}`` (relative traffic shares).
        description: free text.
    """
    body = {"name": name, "arms": [_dump(a) for a in arms], "description": description}
    return Call("POST", "/v1/experiments", _model(protocol.ExperimentInfo), body)


def list_experiments() -> Call[protocol.ExperimentList]:
    """Every experiment (``GET /v1/experiments``)."""
    return Call("GET", "/v1/experiments", _model(protocol.ExperimentList))


def experiment_report(name: str) -> Call[protocol.ExperimentReport]:
    """An experiment with per-arm counts, means and intervals (``GET /v1/experiments/{name}``)."""
    return Call("GET", f"/v1/experiments/{_seg(name)}", _model(protocol.ExperimentReport))


def feedback(
    experiment: str,
    *,
    user: str | None = None,
    arm: str | None = None,
    rating: float | None = None,
    preferred: str | None = None,
    rejected: str | None = None,
    completion_id: str | None = None,
    comment: str = "",
) -> Call[protocol.FeedbackResponse]:
    """Record a rating of an arm (the user's by default) or a pairwise preference."""
    body = {
        "experiment": experiment,
        "user": user,
        "arm": arm,
        "rating": rating,
        "preferred": preferred,
        "rejected": rejected,
        "completion_id": completion_id,
    }
    body = {k: v for k, v in body.items() if v is not None}
    if comment:
        body["comment"] = comment
    return Call("POST", "/v1/feedback", _model(protocol.FeedbackResponse), body)


def health() -> Call[protocol.HealthResponse]:
    """Liveness (``GET /health``)."""
    return Call("GET", "/health", _model(protocol.HealthResponse))


def ready() -> Call[protocol.ReadyResponse]:
    """Readiness (``GET /ready``); ``.ready`` is False while the model loads (HTTP 503)."""
    return Call("GET", "/ready", _ready_or_raise, ok_statuses=frozenset({503}))


def _ready_or_raise(response: httpx.Response) -> protocol.ReadyResponse:
    if response.status_code == 503:
        try:
            return protocol.ReadyResponse.model_validate_json(response.content)
        except ValueError:
            raise error_from_response(response) from None
    return protocol.ReadyResponse.model_validate_json(response.content)


def metrics() -> Call[str]:
    """Prometheus text exposition (``GET /metrics``)."""
    return Call("GET", "/metrics", lambda r: r.text)
