"""Per-preference DPO on a tiny model: training moves the model, the vector is exact, swap swaps."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from prefvec.training import dpo as dpo_mod
from prefvec.training.config import DPOJobConfig
from prefvec.training.dpo import DPOJobResult, run_dpo_job, train_dpo_run
from prefvec.vector_store import LocalStore


def _cfg(base: Path, data: Path, out: Path, **kw: Any) -> DPOJobConfig:
    values: dict[str, Any] = dict(
        base=str(base), data=[str(data)], preference="toy", steps=8, batch_size=4,
        logging_steps=2, save_steps=4, lora_r=4, lora_targets=["q_proj", "v_proj"],
        learning_rate=1e-2, max_length=64, max_prompt_length=32, val_fraction=0.25,
        output_dir=str(out / "run"), store_dir=str(out / "store"), progress=False, device="cpu",
    )  # fmt: skip
    values.update(kw)
    return DPOJobConfig(**values)


@pytest.fixture(scope="module")
def lora_job(
    tiny_base_dir: Path, toy_pairs_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[DPOJobResult, dict[str, list], DPOJobConfig]:
    seen: dict[str, list] = {}
    original = dpo_mod.train_dpo_run

    def spy(model_dir: Path, train: list, val: list, cfg: Any, out_dir: Path, **kw: Any) -> Any:
        seen[Path(out_dir).name] = list(train)
        return original(model_dir, train, val, cfg, out_dir, **kw)

    dpo_mod.train_dpo_run = spy  # type: ignore[assignment]
    try:
        cfg = _cfg(tiny_base_dir, toy_pairs_file, tmp_path_factory.mktemp("lora"))
        result = run_dpo_job(cfg)
    finally:
        dpo_mod.train_dpo_run = original  # type: ignore[assignment]
    return result, seen, cfg


def _merged(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def test_dpo_changes_parameters_and_lowers_loss(lora_job: Any) -> None:
    result, _, _ = lora_job
    curves = result.pos.curves
    assert len(curves) == 4 and curves[-1]["loss"] < curves[0]["loss"] - 0.05
    assert result.pos.eval["loss"] < 0.69 and result.pos.eval["reward_accuracy"] == 1.0
    from safetensors.torch import load_file

    lora = load_file(str(result.pos.weights_dir / "adapter_model.safetensors"))
    assert any("lora_B" in k and float(t.abs().max()) > 0 for k, t in lora.items())  # B starts at 0


def test_label_swapped_run_really_swaps(lora_job: Any) -> None:
    result, seen, _ = lora_job
    pos, neg = seen["pos"], seen["neg"]
    assert len(pos) == len(neg) > 0
    assert all(
        n.chosen == p.rejected and n.rejected == p.chosen for p, n in zip(pos, neg, strict=True)
    )
    assert all(p.messages == n.messages for p, n in zip(pos, neg, strict=True))
    # and it learned the opposite preference on the held-out pairs (original labels)
    assert result.pos.eval["reward_margin"] > 0 > result.neg.eval["reward_margin"]


def test_stored_vector_reproduces_contrast(lora_job: Any, tiny_base_dir: Path) -> None:
    result, _, cfg = lora_job
    vec = LocalStore(cfg.store_dir).get(result.record.ref)
    assert vec.kind == "lowrank" and vec.metadata.method == "contrast" and vec.metadata.rank == 8
    meta = vec.metadata
    assert (
        meta.data_hash and meta.config["beta"] == 0.1 and "val_reward_accuracy" in meta.eval_scores
    )
    assert meta.extra["versions"]["trl"] and meta.extra["curves"]["pos"]
    w_pos = _merged(tiny_base_dir, result.pos.weights_dir)
    w_neg = _merged(tiny_base_dir, result.neg.weights_dir)
    from prefvec.vector_store.extract import load_state

    base = load_state(tiny_base_dir)
    dense = vec.to_dense()
    assert dense  # q_proj / v_proj of both layers
    for name, delta in dense.items():
        # base + 1·φ  ==  base + (θ+ − θ−)
        torch.testing.assert_close(
            base[name] + delta, base[name] + (w_pos[name] - w_neg[name]), rtol=0, atol=1e-6
        )
    for name in base:
        if name not in dense and name in w_pos:
            torch.testing.assert_close(w_pos[name], w_neg[name])


def test_full_finetune_contrast_and_positive_only(
    tiny_base_dir: Path, toy_pairs_file: Path, tmp_path: Path
) -> None:
    from prefvec.vector_store.extract import load_state

    cfg = _cfg(tiny_base_dir, toy_pairs_file, tmp_path, use_lora=False, learning_rate=1e-3, steps=4)
    result = run_dpo_job(cfg)
    pos, neg = load_state(result.pos.weights_dir), load_state(result.neg.weights_dir)
    assert result.vector.kind == "dense"
    for name, delta in result.vector.tensors.items():
        torch.testing.assert_close(delta, pos[name] - neg[name], rtol=0, atol=0)
    assert result.pos.curves[-1]["loss"] < result.pos.curves[0]["loss"]
    po_cfg = _cfg(
        tiny_base_dir, toy_pairs_file, tmp_path, use_lora=False, learning_rate=1e-3, steps=4,
        method="positive_only", output_dir=str(tmp_path / "po"),
    )  # fmt: skip
    po = run_dpo_job(po_cfg)
    assert po.neg is None and po.vector.metadata.method == "positive_only"
    base = load_state(tiny_base_dir)
    pos2 = load_state(po.pos.weights_dir)
    name = next(iter(po.vector.tensors))
    torch.testing.assert_close(po.vector.tensors[name], pos2[name] - base[name], rtol=0, atol=0)


def test_resume_after_interruption(
    tiny_base_dir: Path, toy_pairs_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from prefvec.training.dpo import prepare_pairs

    cfg = _cfg(tiny_base_dir, toy_pairs_file, tmp_path, steps=4, save_steps=2)
    train, val, _ = prepare_pairs(cfg, "toy")
    out = tmp_path / "resume"
    first = train_dpo_run(tiny_base_dir, train, val, cfg, out, steps=2)  # "interrupted" at step 2
    assert (out / "checkpoints/checkpoint-2").is_dir()
    (out / "result.json").unlink()
    with caplog.at_level(logging.INFO, logger="prefvec.training.dpo"):
        second = train_dpo_run(tiny_base_dir, train, val, cfg, out)
    assert "resuming" in caplog.text and "checkpoint-2" in caplog.text
    assert [c["step"] for c in second.curves] == [2.0, 4.0]  # history restored, then continued
    assert second.curves[0] == first.curves[0]
    assert train_dpo_run(tiny_base_dir, train, val, cfg, out).curves == second.curves  # cached


def test_a_finished_run_continues_to_more_steps_and_refuses_fewer(
    tiny_base_dir: Path, toy_pairs_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Raising `steps` on a finished run trains on from its last checkpoint (it is not reused
    silently); asking for fewer steps than it has is an error naming both numbers."""
    from prefvec.errors import ValidationError
    from prefvec.training.dpo import prepare_pairs

    cfg = _cfg(tiny_base_dir, toy_pairs_file, tmp_path, steps=2, save_steps=2)
    train, val, _ = prepare_pairs(cfg, "toy")
    out = tmp_path / "more"
    first = train_dpo_run(tiny_base_dir, train, val, cfg, out)
    assert first.steps == 2
    more = _cfg(tiny_base_dir, toy_pairs_file, tmp_path, steps=4, save_steps=2)
    with caplog.at_level(logging.INFO, logger="prefvec.training.dpo"):
        second = train_dpo_run(tiny_base_dir, train, val, more, out)
    assert "continuing from step 2 to 4" in caplog.text
    assert second.steps == 4 and [c["step"] for c in second.curves] == [2.0, 4.0]
    assert second.wall_s > first.wall_s  # the old part counted, the new part added
    fewer = _cfg(tiny_base_dir, toy_pairs_file, tmp_path, steps=3, save_steps=2)
    with pytest.raises(ValidationError, match="4 steps, and `steps` is 3"):
        train_dpo_run(tiny_base_dir, train, val, fewer, out)


def test_resume_refuses_a_run_trained_with_other_settings(
    tiny_base_dir: Path, toy_pairs_file: Path, tmp_path: Path
) -> None:
    """A finished or interrupted run is reused only for what it learnt from: the same settings
    and the same pairs (by content); where the result goes or the job's method may differ."""
    from prefvec.errors import ValidationError
    from prefvec.training.dpo import prepare_pairs

    def cfg(**kw: Any) -> DPOJobConfig:
        return _cfg(tiny_base_dir, toy_pairs_file, tmp_path, steps=2, save_steps=2, **kw)

    train, val, _ = prepare_pairs(cfg(), "toy")
    out = tmp_path / "settings"
    first = train_dpo_run(tiny_base_dir, train, val, cfg(), out)
    elsewhere = cfg(method="positive_only", store_dir=str(tmp_path / "other-store"))
    assert train_dpo_run(tiny_base_dir, train, val, elsewhere, out).curves == first.curves
    saved = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    refused = [
        (cfg(learning_rate=0.5), train, val, "learning_rate"),
        (cfg(beta=0.3), train, val, "beta"),
        (cfg(), train[:-1], val, "train_data_hash"),
        (cfg(), train, [p.swapped() for p in val], "val_data_hash"),
    ]
    for changed, tr, va, name in refused:
        with pytest.raises(ValidationError, match=rf"`resume`.*{name}") as err:
            train_dpo_run(tiny_base_dir, tr, va, changed, out)
        assert err.value.field == "resume"
    (out / "result.json").unlink()  # interrupted after its last checkpoint
    with pytest.raises(ValidationError, match=r"`resume`.*learning_rate"):
        train_dpo_run(tiny_base_dir, train, val, cfg(learning_rate=0.5), out)
    assert all(p.read_bytes() == b for p, b in saved.items() if p.name != "result.json")
    fresh = train_dpo_run(tiny_base_dir, train, val, cfg(learning_rate=0.5, resume=False), out)
    assert fresh.curves != first.curves  # without --resume it trains afresh, as asked
