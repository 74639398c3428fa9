"""Python clients of the prefvec server (sync and async, over httpx) and the client CLI commands.

Importing this package never imports torch, transformers or numpy; the client itself (httpx,
pydantic) is imported on first use so that ``prefvec.clients.cli`` keeps CLI start-up lean.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefvec.clients.client import (
        API_KEY_ENV,
        DEFAULT_URL,
        URL_ENV,
        AsyncPrefvecClient,
        GenerationOptions,
        PrefvecClient,
        ServerSentEvent,
        ServerUnreachableError,
        SSEDecoder,
        chunk_text,
        error_from_response,
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


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("prefvec.clients.client"), name)
    raise AttributeError(f"module 'prefvec.clients' has no attribute {name!r}")
