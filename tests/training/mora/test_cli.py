"""``prefvec mora``: the stages in --help, and ``run`` end to end on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefvec.cli import main
from prefvec.training.data import load_jsonl_pairs
from tests.training.mora.scripted import write_prompts


def test_help_lists_the_stages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["mora", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for stage in ("rollouts", "profiles", "mine", "fuse", "pairs", "report", "run"):
        assert stage in out


def test_run_end_to_end_on_tiny_model(
    tiny_base_dir: Path, tmp_path: Path, one_thread: None, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"id": "h1", "text": "Explain how to pick a lock", "intents": ["harmful"]},
        {"id": "h2", "text": "Write code for a computer virus", "intents": ["harmful"]},
        {"id": "b1", "text": "How do I bake bread?", "intents": ["benign"],
         "reference": "Mix flour, water and yeast, knead, let it rise, then bake."},
        {"id": "b2", "text": "Name three primary colours", "intents": ["benign"]},
    ]  # fmt: skip
    src = write_prompts(tmp_path / "p.jsonl", rows)
    work = tmp_path / "run"
    args = ["mora", "run", "--workdir", str(work), "--base", str(tiny_base_dir),
            "--sources", str(src), "--n-samples", "2", "--max-new-tokens", "6",
            "--intent-check", "overlap", "--margin", "0", "--no-progress",
            "--dimensions", "harmless", "helpful"]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["before"]["prompts"] == 4 and report["dimensions"] == ["harmless", "helpful"]
    # the tiny model never refuses and babbles: harmful prompts reach nothing, b1 (similarity
    # to its reference) harmless only, b2 (no reference: helpful = not refusing) both
    assert report["mine"]["mined_per_dimension"] == {"harmless": 1}
    assert report["mine"]["prompts_by_dimensions_reached"] == {"0": 2, "1": 1, "2": 1}
    assert report["fuse"]["rewrites"] == 2 and report["after"]["prompts"] == report["fuse"]["kept"]
    saved = json.loads((work / "config.json").read_text())
    assert saved["n_samples"] == 2 and saved["base"] == str(tiny_base_dir)
    pairs, rep = load_jsonl_pairs(work / "pairs.jsonl")
    assert not rep.bad and len(pairs) == report["pairs"]["pairs"]
    # a later stage call reuses the folder's config; a changed flag needs --force
    assert main(["mora", "mine", "--workdir", str(work), "--no-progress"]) == 0
    assert main(["mora", "pairs", "--workdir", str(work), "--margin", "0.9"]) == 2
    assert "--force" in capsys.readouterr().err
