"""Interrupt every stage after k units, resume, and get the files of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefvec.errors import ConflictError
from tests.training.mora.scripted import make_config, pipeline

JSONL_STAGES = ("rollouts", "profiles", "mined", "fused", "rollouts_after", "profiles_after",
                "pairs")  # fmt: skip


class Interrupt(Exception):
    pass


def interrupt_after(stage: str, k: int):  # type: ignore[no-untyped-def]
    seen: list[str] = []

    def on_unit(name: str, unit: str) -> None:
        if name == stage:
            seen.append(unit)
            if len(seen) == k:
                raise Interrupt(f"{stage} after {unit}")

    return on_unit


def snapshot(workdir: Path) -> dict[str, bytes]:
    """Every file but the config (it names the folder) and the PNG (matplotlib metadata)."""
    return {p.name: p.read_bytes() for p in sorted(workdir.iterdir())
            if p.name not in ("config.json", "report.png")}  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, bytes], list[str]]:
    """An uninterrupted run's files, and its prompt source (the config hashes name it)."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = make_config(tmp, include_original=True)
    pipeline(cfg).run()
    return snapshot(Path(cfg.workdir)), cfg.sources


@pytest.mark.parametrize("stage", JSONL_STAGES)
def test_resume_every_stage(stage: str, tmp_path: Path, reference: tuple) -> None:
    expected, sources = reference
    cfg = make_config(tmp_path, include_original=True, sources=sources)
    with pytest.raises(Interrupt):
        pipeline(cfg, on_unit=interrupt_after(stage, 1)).run()
    work = Path(cfg.workdir)
    assert not (work / "report.json").exists()
    # a crash mid-write: a line of an unfinished unit, then a truncated one
    with open(work / f"{stage}.jsonl", "a") as f:
        f.write('{"id": "zz", "unit": "zz", "provenance": {"prompt_id": "zz"}}\n{"id": "tr')
    with open(work / f"{stage}.progress", "a") as f:
        f.write('{"unit": "h')
    gen_calls = []
    resumed = pipeline(cfg)
    resumed._generator.calls = gen_calls  # type: ignore[union-attr]
    resumed.run()
    assert snapshot(work) == expected
    if stage == "rollouts":  # the finished units were not sampled again
        assert gen_calls[0] != "h1" and "h1" not in gen_calls[:2]


def test_finished_stages_are_skipped(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    pipeline(cfg).run()
    again = pipeline(cfg)
    again.run()
    assert again._generator.calls == []  # type: ignore[union-attr]


def test_config_change_needs_force(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    pipeline(cfg).run()
    changed = make_config(tmp_path, margin=0.6)
    with pytest.raises(ConflictError, match=r"stage 'pairs'.*--force"):
        pipeline(changed).run()
    with pytest.raises(ConflictError, match="stage 'rollouts'"):
        pipeline(make_config(tmp_path, n_samples=3)).run()
    redo = pipeline(changed, force=True)
    report = redo.run()
    assert report["pairs"]["pairs"] == 0
    assert redo._generator.calls == []  # type: ignore[union-attr]  # only pairs and report redone
