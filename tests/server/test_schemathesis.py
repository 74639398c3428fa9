"""Schemathesis over ``/openapi.json`` (issue 15): generated requests, valid and invalid, against a
live server on a tiny model; 0 server errors, 0 response-schema violations, 0 undeclared status
codes, declared content types. Bounded: a few examples per operation, generation capped at a few
tokens by the server's ``max_tokens_limit`` (larger asks are a declared 422) and a compare at
``max_queue`` = 16 generations (larger ones are a declared 422), so no call outlives its timeout
on a loaded machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server.conftest import OPERATOR_KEY, LiveServer, make_store, server_settings  # noqa: E402

MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]


@pytest.fixture(scope="module")
def fuzz_server(
    srv_base_dir: Path, vector_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    make_store(tmp / "store", srv_base_dir, vector_files)
    settings_ = server_settings(
        tmp, srv_base_dir, max_tokens_limit=4, default_max_tokens=2, max_prompt_tokens=128,
        request_timeout_s=30.0, body_read_timeout_s=5.0, max_queue=16,
    )  # fmt: skip
    server = LiveServer(settings_).start()
    yield server
    server.stop()


def _spec() -> dict[str, Any]:
    """The app's OpenAPI, built without starting it (no model load: routes and models only)."""
    from prefvec.server.app import create_app
    from prefvec.server.settings import ServerSettings

    return dict(create_app(ServerSettings(base="unused-for-the-schema")).openapi())


# (schemathesis.pytest.from_fixture breaks under pytest 9: it reads `node._nodeid`)
schema = schemathesis.openapi.from_dict(_spec())


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_openapi_contract(case: Any, fuzz_server: LiveServer) -> None:
    case.call_and_validate(
        base_url=fuzz_server.url,
        headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
        checks=CHECKS,
        timeout=120,
    )
