"""Typed HTTP clients of the prefvec server: :class:`PrefvecClient` (sync) and
:class:`AsyncPrefvecClient` (async), both over ``httpx``.

Every endpoint is written once, as a builder in :mod:`prefvec.clients._endpoints` (a pure
function from the method's arguments to a call plan). The two clients differ only in how they
send a plan (``_send`` / ``_stream``); the :class:`_Op` descriptor binds each builder to the
client's own sender, so ``client.chat(...)`` returns a
:class:`~prefvec.protocol.ChatCompletionResponse` and ``await aclient.chat(...)`` the same, with
the builder's signature and docstring. Error bodies (``{"error": {...}}``) become the
:mod:`prefvec.errors` class named by their ``code``; transport failures become
:class:`ServerUnreachableError` or :class:`~prefvec.errors.RequestTimeoutError`, naming the URL.

This module never imports torch, transformers or numpy.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import httpx
from typing_extensions import ParamSpec

from prefvec import __version__
from prefvec.clients import _endpoints as ep
from prefvec.clients._endpoints import Call, GenerationOptions, multipart
from prefvec.clients._wire import (
    URL_ENV,
    ChunkReader,
    ServerSentEvent,
    ServerUnreachableError,
    SSEDecoder,
    chunk_text,
    error_from_response,
    transport_errors,
)

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_URL",
    "URL_ENV",
    "AsyncPrefvecClient",
    "GenerationOptions",
    "PrefvecClient",
    "SSEDecoder",
    "ServerSentEvent",
    "ServerUnreachableError",
    "chunk_text",
    "error_from_response",
]

DEFAULT_URL = "http://127.0.0.1:8000"
API_KEY_ENV = "PREFVEC_API_KEY"
DEFAULT_TIMEOUT = 300.0  # s between bytes: CPU generation of a long answer is slow
DEFAULT_CONNECT_TIMEOUT = 10.0

T = TypeVar("T")
P = ParamSpec("P")


# ------------------------------------------------------------------------- binding to clients


class _Op(Generic[P, T]):
    """Binds a builder to a client: sync clients return ``T``, async clients a coroutine of it."""

    def __init__(self, build: Callable[P, Call[T]]) -> None:
        self._build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, obj: PrefvecClient, owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(
        self, obj: AsyncPrefvecClient, owner: type
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self
        build = self._build

        @functools.wraps(build)
        def method(*args: P.args, **kwargs: P.kwargs) -> Any:
            return obj._send(build(*args, **kwargs))

        return method


class _StreamOp(Generic[P, T]):
    """Binds a streaming builder: sync clients yield ``T`` chunks, async clients async-yield."""

    def __init__(self, build: Callable[P, Call[T]]) -> None:
        self._build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, obj: PrefvecClient, owner: type) -> Callable[P, Iterator[T]]: ...
    @overload
    def __get__(self, obj: AsyncPrefvecClient, owner: type) -> Callable[P, AsyncIterator[T]]: ...
    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self
        build = self._build

        @functools.wraps(build)
        def method(*args: P.args, **kwargs: P.kwargs) -> Any:
            return obj._stream(build(*args, **kwargs))

        return method


class _Endpoints:
    """The endpoint table both clients share (each entry documented on its builder)."""

    chat = _Op(ep.chat)
    chat_stream = _StreamOp(ep.chat_stream)
    complete = _Op(ep.complete)
    complete_stream = _StreamOp(ep.complete_stream)
    tokenize = _Op(ep.tokenize)
    models = _Op(ep.models)
    list_vectors = _Op(ep.list_vectors)
    vector_versions = _Op(ep.vector_versions)
    get_vector = _Op(ep.get_vector)
    push_vector = _Op(ep.push_vector)
    download_vector = _Op(ep.download_vector)
    delete_vector = _Op(ep.delete_vector)
    list_recipes = _Op(ep.list_recipes)
    get_recipe = _Op(ep.get_recipe)
    create_recipe = _Op(ep.create_recipe)
    delete_recipe = _Op(ep.delete_recipe)
    compare = _Op(ep.compare)
    create_experiment = _Op(ep.create_experiment)
    list_experiments = _Op(ep.list_experiments)
    experiment_report = _Op(ep.experiment_report)
    get_experiment = _Op(ep.experiment_report)  # the route returns the report
    feedback = _Op(ep.feedback)
    health = _Op(ep.health)
    ready = _Op(ep.ready)
    metrics = _Op(ep.metrics)

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        if not isinstance(timeout, httpx.Timeout):
            connect = (
                DEFAULT_CONNECT_TIMEOUT
                if timeout is None
                else min(timeout, DEFAULT_CONNECT_TIMEOUT)
            )
            timeout = httpx.Timeout(timeout, connect=connect)
        self.timeout = timeout
        self._headers = {"user-agent": f"prefvec-client/{__version__}", **(headers or {})}
        if self.api_key:
            self._headers["authorization"] = f"Bearer {self.api_key}"

    def _http_options(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "timeout": self.timeout, "headers": self._headers}

    @staticmethod
    def _check(call: Call[Any], response: httpx.Response) -> None:
        if response.is_error and response.status_code not in call.ok_statuses:
            raise error_from_response(response)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"


def _build(http: httpx.Client | httpx.AsyncClient, call: Call[Any], files: Any) -> httpx.Request:
    return http.build_request(
        call.method, call.path, json=call.json, params=call.params, data=call.data, files=files
    )


def _tmp_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.part")


class PrefvecClient(_Endpoints):
    """Synchronous client of a prefvec server.

    Args:
        base_url: server root (default ``$PREFVEC_URL`` or ``http://127.0.0.1:8000``).
        api_key: sent as ``Authorization: Bearer`` (default ``$PREFVEC_API_KEY``).
        timeout: seconds allowed between bytes (or an ``httpx.Timeout``); connecting gets 10 s.
        headers: extra headers on every request.
        transport: an httpx transport (tests pass ``httpx.MockTransport``).

    Example:
        ```python
        with PrefvecClient() as client:
            r = client.chat("Hi", preferences={"helpful": 1.0}, max_tokens=32)
            print(r.choices[0].message.content, r.prefvec.recipe_key)
        ```
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key=api_key, timeout=timeout, headers=headers)
        self._http = httpx.Client(transport=transport, **self._http_options())

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> PrefvecClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call[T]) -> T:
        with multipart(call) as files:
            request = _build(self._http, call, files)
            if call.dest is not None:
                return self._download(call, request)  # type: ignore[return-value]
            with transport_errors(request):
                response = self._http.send(request)
        self._check(call, response)
        return call.parse(response)

    def _download(self, call: Call[Any], request: httpx.Request) -> Path:
        assert call.dest is not None
        tmp = _tmp_path(call.dest)
        with transport_errors(request):
            response = self._http.send(request, stream=True)
            try:
                if response.is_error:
                    response.read()
                    self._check(call, response)
                with open(tmp, "wb") as fh:
                    for piece in response.iter_bytes():
                        fh.write(piece)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            finally:
                response.close()
        os.replace(tmp, call.dest)
        return call.dest

    def _stream(self, call: Call[Any]) -> Iterator[Any]:
        assert call.chunk is not None
        request = _build(self._http, call, None)
        with transport_errors(request):
            response = self._http.send(request, stream=True)
        try:
            if response.is_error:
                response.read()
                self._check(call, response)
            reader = ChunkReader(call.chunk, str(request.url))
            with transport_errors(request):
                for piece in response.iter_text():
                    yield from reader.feed(piece)
                    if reader.done:
                        return
            yield from reader.flush()
        finally:
            response.close()


class AsyncPrefvecClient(_Endpoints):
    """Asynchronous client of a prefvec server; the same methods as :class:`PrefvecClient`,
    awaited (streams are ``async for``).

    Args:
        base_url: server root (default ``$PREFVEC_URL`` or ``http://127.0.0.1:8000``).
        api_key: sent as ``Authorization: Bearer`` (default ``$PREFVEC_API_KEY``).
        timeout: seconds allowed between bytes (or an ``httpx.Timeout``); connecting gets 10 s.
        headers: extra headers on every request.
        transport: an httpx async transport (tests pass ``httpx.MockTransport``).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key=api_key, timeout=timeout, headers=headers)
        self._http = httpx.AsyncClient(transport=transport, **self._http_options())

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPrefvecClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: Call[T]) -> T:
        with multipart(call) as files:
            request = _build(self._http, call, files)
            if call.dest is not None:
                return await self._download(call, request)  # type: ignore[return-value]
            with transport_errors(request):
                response = await self._http.send(request)
        self._check(call, response)
        return call.parse(response)

    async def _download(self, call: Call[Any], request: httpx.Request) -> Path:
        assert call.dest is not None
        tmp = _tmp_path(call.dest)
        with transport_errors(request):
            response = await self._http.send(request, stream=True)
            try:
                if response.is_error:
                    await response.aread()
                    self._check(call, response)
                with open(tmp, "wb") as fh:
                    async for piece in response.aiter_bytes():
                        fh.write(piece)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            finally:
                await response.aclose()
        os.replace(tmp, call.dest)
        return call.dest

    async def _stream(self, call: Call[Any]) -> AsyncIterator[Any]:
        assert call.chunk is not None
        request = _build(self._http, call, None)
        with transport_errors(request):
            response = await self._http.send(request, stream=True)
        try:
            if response.is_error:
                await response.aread()
                self._check(call, response)
            reader = ChunkReader(call.chunk, str(request.url))
            with transport_errors(request):
                async for piece in response.aiter_text():
                    for chunk in reader.feed(piece):
                        yield chunk
                    if reader.done:
                        return
            for chunk in reader.flush():
                yield chunk
        finally:
            await response.aclose()
