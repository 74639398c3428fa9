"""Toy preference data for the tiny-model training tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def write_pairs(path: Path, n: int, chosen: str, rejected: str, tag: str = "") -> Path:
    rows = [
        {"prompt": f"{tag}Question number {i}?", "chosen": chosen, "rejected": rejected}
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="session")
def toy_pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 pairs preferring a short 'yes' answer over a 'no' answer."""
    return write_pairs(tmp_path_factory.mktemp("toy") / "pairs.jsonl", 24, "yes yes", "no no")
