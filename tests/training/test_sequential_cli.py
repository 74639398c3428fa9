"""Sequential alignment, the config dataclasses as CLI flags / YAML, and the train CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from prefvec.errors import ValidationError
from prefvec.training.cli import main, register
from prefvec.training.config import (
    DPOJobConfig,
    RacoJobConfig,
    SequentialJobConfig,
    config_from_args,
)
from tests.training.conftest import write_pairs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    return parser


def test_flags_override_yaml(tmp_path: Path) -> None:
    cfg_file = tmp_path / "job.yaml"
    cfg_file.write_text(
        "preference: harmless\nsteps: 7\nbeta: 0.2\nlora_targets: [q_proj]\nuse_lora: false\n"
    )
    args = _parser().parse_args(
        ["train", "dpo", "--config", str(cfg_file), "--steps", "9", "--lora-r", "4"]
    )
    cfg = config_from_args(DPOJobConfig, args)
    assert (cfg.preference, cfg.steps, cfg.beta, cfg.lora_r) == ("harmless", 9, 0.2, 4)
    assert cfg.lora_targets == ["q_proj"] and cfg.use_lora is False
    args = _parser().parse_args(
        ["train", "raco", "--preferences", "a", "b", "--weights", "0.3", "0.7"]
    )
    raco = config_from_args(RacoJobConfig, args)
    assert raco.simplex_weights == [0.3, 0.7] and raco.c == 0.4 and raco.mode == "raco"


def test_config_validation_collects_problems(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        DPOJobConfig(beta=0.0, steps=0, method="nope")
    assert len(err.value.problems) == 3 and "`beta`" in err.value.message
    with pytest.raises(ValidationError, match="preferences"):
        SequentialJobConfig(preferences=[])
    with pytest.raises(ValidationError, match="simplex"):
        RacoJobConfig(preferences=["a", "b"], weights=[0.9, 0.9])
    bad = tmp_path / "bad.yaml"
    bad.write_text("stepz: 3\n")
    args = _parser().parse_args(["train", "dpo", "--config", str(bad)])
    with pytest.raises(ValidationError, match="stepz"):
        config_from_args(DPOJobConfig, args)


def test_sequential_vector_is_the_sum_of_stages(tiny_base_dir: Path, tmp_path: Path) -> None:
    a = write_pairs(tmp_path / "a.jsonl", 12, "yes yes", "no no", tag="A ")
    b = write_pairs(tmp_path / "b.jsonl", 12, "sure", "never", tag="B ")
    out = tmp_path / "seq"
    store, saved = str(tmp_path / "store"), str(tmp_path / "seq.safetensors")
    rc = main([
        "sequential", "--base", str(tiny_base_dir), "--preferences", "a", "b",
        "--data-per-preference", f"a={a}", f"b={b}", "--steps", "3", "--batch-size", "4",
        "--lora-r", "2", "--lora-targets", "q_proj", "v_proj", "--learning-rate", "0.01",
        "--max-length", "48", "--max-prompt-length", "24", "--output-dir", str(out),
        "--store-dir", store, "--save-vector", saved, "--progress", "false", "--device", "cpu",
    ])  # fmt: skip
    assert rc == 0
    from prefvec.vector_store import PreferenceVector
    from prefvec.vector_store.extract import load_state

    vec = PreferenceVector.load(tmp_path / "seq.safetensors")
    assert vec.kind == "lowrank" and vec.metadata.rank == 4  # two stages of rank 2
    final = load_state(out / "stage1-b" / "merged")
    base = load_state(tiny_base_dir)
    for name, delta in vec.to_dense().items():
        torch.testing.assert_close(base[name] + delta, final[name], rtol=0, atol=1e-6)
    report = json.loads((out / "report.json").read_text())
    assert [s["preference"] for s in report["stages"]] == ["a", "b"]


def test_cli_reports_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dpo", "--beta", "-1", "--no-store", "true"]) == 2
    assert "`beta`" in capsys.readouterr().err


def test_main_cli_exposes_train_commands() -> None:
    from prefvec.cli import build_parser

    args = build_parser().parse_args(["train", "dpo", "--preference", "truthful", "--steps", "3"])
    cfg = config_from_args(DPOJobConfig, args)
    assert (cfg.preference, cfg.steps, cfg.beta) == ("truthful", 3, 0.1)
    args = build_parser().parse_args(
        ["train", "sequential", "--preferences", "harmless", "helpful"]
    )
    assert args.func.__name__ == "cmd_sequential"


def test_sequential_from_a_start_vector_adds_its_factors(
    tiny_base_dir: Path, tmp_path: Path
) -> None:
    """`start_vector`: stage 0 is a stored vector (not trained again); the next stage trains
    from base + it, and the stored vector is exactly that stage's model minus the base."""
    from prefvec.vector_store import PreferenceVector
    from prefvec.vector_store.extract import load_state

    a = write_pairs(tmp_path / "a.jsonl", 12, "yes yes", "no no", tag="A ")
    b = write_pairs(tmp_path / "b.jsonl", 12, "sure", "never", tag="B ")
    common = ["--base", str(tiny_base_dir), "--steps", "2", "--batch-size", "4", "--lora-r", "2",
              "--lora-targets", "q_proj", "v_proj", "--learning-rate", "0.01", "--max-length",
              "48", "--max-prompt-length", "24", "--progress", "false", "--device", "cpu",
              "--no-store", "true"]  # fmt: skip
    first = tmp_path / "a.safetensors"
    assert main(["sequential", *common, "--preferences", "a", "--data-per-preference",
                 f"a={a}", "--output-dir", str(tmp_path / "s1"), "--save-vector", str(first),
                 "--name", "first"]) == 0  # fmt: skip
    out, saved = tmp_path / "s2", tmp_path / "ab.safetensors"
    assert main(["sequential", *common, "--preferences", "b", "--data-per-preference",
                 f"b={b}", "--start-vector", str(first), "--output-dir", str(out),
                 "--save-vector", str(saved)]) == 0  # fmt: skip
    start, vec = PreferenceVector.load(first), PreferenceVector.load(saved)
    assert vec.metadata.rank == 4
    for module, (a_f, b_f) in start.factors().items():
        a_all, b_all = vec.factors()[module]
        torch.testing.assert_close(a_all[:2], a_f, rtol=0, atol=0)
        torch.testing.assert_close(b_all[:, :2], b_f, rtol=0, atol=0)
    base, final = load_state(tiny_base_dir), load_state(out / "stage1-b" / "merged")
    (stage0_dir,) = out.glob("stage0-first-*")
    stage0 = load_state(stage0_dir / "merged")
    for name, delta in vec.to_dense().items():
        torch.testing.assert_close(base[name] + delta, final[name], rtol=0, atol=1e-6)
    for name, delta in start.to_dense().items():  # stage 1 started from base + the start vector
        torch.testing.assert_close(base[name] + delta, stage0[name], rtol=0, atol=1e-6)
    report = json.loads((out / "report.json").read_text())
    assert [s["preference"] for s in report["stages"]] == ["first", "b"]
    assert report["stages"][0]["start_vector"] == str(first)
    from prefvec.training.card import render_card  # the card names both stages and the command

    card = render_card(saved, config_path="seq.yaml")
    assert "prefvec train sequential --config seq.yaml" in card and "train raco" not in card
    assert f"| 0 | first | stored vector `{first}`" in card and "| 1 | b | DPO, 2 steps |" in card
    assert "nan" not in card and "machine: cpu" in card
    # a vector of another base, or a missing file, is a ValidationError naming the field
    other = PreferenceVector(
        start.metadata.model_copy(update={"base_fingerprint": "pvfp1:" + "0" * 40}),
        start.tensors,
    )
    other.save(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a vector")
    for bad in (tmp_path / "other.safetensors", tmp_path / "missing.safetensors",
                tmp_path / "junk.safetensors"):  # fmt: skip
        assert main(["sequential", *common, "--preferences", "b", "--data-per-preference",
                     f"b={b}", "--start-vector", str(bad), "--output-dir",
                     str(tmp_path / "s3")]) == 2  # fmt: skip
    assert not (tmp_path / "s3" / "report.json").exists()
