"""Evaluation fixtures: the server tests' tiny base and vectors, a store, a model handle."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.conftest import (  # noqa: F401  (fixtures re-exported)
    LiveServer,
    make_store,
    server_settings,
    srv_base_dir,
    vector_files,
)


@pytest.fixture(scope="module")
def store_dir(srv_base_dir: Path, vector_files: dict[str, Path], tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]  # noqa: F811
    root = tmp_path_factory.mktemp("eval-store") / "store"
    make_store(root, srv_base_dir, vector_files)
    return root


@pytest.fixture(scope="module")
def handle(srv_base_dir: Path, store_dir: Path):  # type: ignore[no-untyped-def]  # noqa: F811
    from prefvec.evaluation.targets import ModelHandle

    return ModelHandle(str(srv_base_dir), store_dir=str(store_dir), batch_size=4)
